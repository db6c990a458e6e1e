"""The lss-vlm benchmark application: configs, the ``lss-bench`` CLI, suites, leaderboards and tuning."""
