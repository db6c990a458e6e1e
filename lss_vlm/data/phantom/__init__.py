"""The embedded multi-view lumbar-spinal-stenosis phantom (DESIGN.md §4).

``synthesize(out_dir, n_cases, size, seed, shift)`` writes NIfTI views and masks plus ``manifest.csv``;
``phantom_stats(manifest)`` measures how hard it is (class shares, grade prevalence, sac areas per grade);
``save_montage(manifest, png)`` renders a few cases. Options: :class:`PhantomConfig`; shifts: :data:`SHIFT_PRESETS`.

The options are imported eagerly (plain Python); the generator, statistics and montage (nibabel, pandas, matplotlib)
on first use (PEP 562 ``__getattr__``), so that checking a config (``lss-bench validate``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import SHIFT_PRESETS, PhantomConfig, resolve_config

#: Public name -> submodule that defines it, imported on first access.
_LAZY = {
    "synthesize": "generate",
    "save_montage": "montage",
    "format_stats": "stats",
    "phantom_stats": "stats",
}

__all__ = [
    "SHIFT_PRESETS",
    "PhantomConfig",
    "format_stats",
    "phantom_stats",
    "resolve_config",
    "save_montage",
    "synthesize",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
