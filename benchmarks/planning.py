"""Resolve and check a suite, an experiment config or a study without training: ``lss-bench validate``, ``--dry-run``.

Every check a real run would make before its first step, in seconds: the YAML keys (with did-you-mean suggestions),
each loss name and its parameters (``losses.check_loss``: built, or for a MONAI-backed loss its signature and value
checks, so that ``import monai`` is not paid), the model preset and its arguments, metric names
(``rank_by``, ``columns``, ``train.early_stopping.metric``, study objectives; :mod:`benchmarks.metric_names`), the
data (a ``data.manifest`` that exists and reads as a manifest) and, for a suite folder that already holds runs, that
no finished run was trained with another resolved config. A mistake raises :class:`~lss_vlm.errors.ConfigError` (or
``DataError``) naming it; nothing is written. The returned text is the plan: the runs that would be trained,
trials, output folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from benchmarks.config import read_yaml_mapping
from lss_vlm.errors import ConfigError

Kind = Literal["suite", "config", "study"]
#: Top-level keys that only a study YAML has (``benchmarks.tuning.StudySpec``).
STUDY_KEYS = frozenset({"objective", "objectives", "search_space", "sampler", "pruner", "runner", "trial_overrides"})


def detect_kind(target: str) -> tuple[Kind, Path]:
    """What ``target`` is: a shipped suite name, or a YAML file holding a suite (``losses:``), a study (``objective``,
    ``search_space``, ...) or an experiment config. :class:`ConfigError` when it is neither a file nor a suite name."""
    path = Path(target)
    if not path.is_file():
        from benchmarks.suite import resolve_suite_path

        return "suite", resolve_suite_path(target)  # raises, listing the shipped suites
    raw = read_yaml_mapping(path, "YAML", "a suite, an experiment config or a study")
    if "losses" in raw:
        return "suite", path
    if STUDY_KEYS & set(raw) or ("experiment" in raw and not {"data", "model", "loss", "train"} & set(raw)):
        return "study", path
    return "config", path


def validate_target(target: str, overrides: Sequence[str] = (), out: str | Path | None = None) -> str:
    """Check ``target`` (suite name or YAML, experiment config, study) with ``--set`` overrides; returns its plan."""
    from benchmarks.outputs import OUTPUT_ROOT, default_run_dir

    kind, path = detect_kind(target)
    if kind == "suite":
        from benchmarks.suite import load_suite

        if overrides:
            raise ConfigError("--set applies to a config or a study; a suite sets its runs with its 'set:' list")
        suite = load_suite(path)
        return suite_plan(suite, Path(out) if out else OUTPUT_ROOT / suite.name)
    if kind == "study":
        from benchmarks.tuning import load_study_spec

        spec = load_study_spec(path)
        return study_plan(spec, overrides, None, Path(out) if out else OUTPUT_ROOT / "tune" / spec.name)
    from benchmarks.config import load_config

    cfg = load_config(path, list(overrides))
    return config_plan(cfg, Path(out) if out else default_run_dir(cfg))


# ----------------------------------------------------------------------------------------------------------- checks
def check_config(cfg: Any) -> None:
    """What loading a config does not check by itself: the inputs it names and its early-stopping metric."""
    from benchmarks.metric_names import check_metric_name
    from benchmarks.run_status import check_inputs

    check_inputs(cfg)
    check_metric_name(cfg.train.early_stopping.metric, "train.early_stopping.metric")


def check_study(spec: Any, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``benchmarks.tuning.validate_study`` plus the objective metric names (experiment runner); the search space."""
    from benchmarks.metric_names import check_metric_name
    from benchmarks.tuning import validate_study

    space = validate_study(spec, overrides)
    if spec.runner.name == "experiment":
        for i, objective in enumerate(spec.objectives):
            bare = objective.metric.removeprefix("val/")
            check_metric_name(bare, f"{spec.path}: objectives[{i}].metric")
    return space


# ------------------------------------------------------------------------------------------------------------ plans
def suite_plan(suite: Any, out: Path, seeds: Sequence[int] | None = None) -> str:
    """Check every run of ``suite`` (``benchmarks.suite.check_suite_folder``) and describe them: loss x seed, the
    state of each in ``out`` (new, partial = resumes, done = skipped), the shared data, model and budget."""
    from benchmarks.run_status import read_status
    from benchmarks.suite import check_suite_folder, plan_runs

    check_suite_folder(suite, out, seeds)
    plans = plan_runs(suite, seeds)
    for plan in plans:
        check_config(plan.config)
    first = plans[0].config
    labels = list(dict.fromkeys(p.label for p in plans))
    seed_list = list(dict.fromkeys(p.seed for p in plans))
    lines = [
        f"suite {suite.name}: {len(plans)} runs = {len(labels)} losses x {len(seed_list)} seeds "
        f"({', '.join(map(str, seed_list))}) -> {out}",
        *_shared_lines(first),
        f"  rank by {suite.rank_by}; baseline {suite.baseline or '(none)'}",
        "  runs:",
    ]
    entries = {e.label: e for e in suite.losses}
    for plan in plans:
        final, partial = plan.final_dir(out), plan.partial_dir(out)
        status = read_status(final) if final.is_dir() else None
        state = "partial, resumes" if partial.is_dir() else "new"
        state = f"done ({status.get('status')}), skipped" if status else state
        entry = entries[plan.label]
        lines.append(f"    {plan.label:<18} seed {plan.seed}  {_loss_text(entry.name, entry.params)}  [{state}]")
    return "\n".join(lines)


def config_plan(cfg: Any, out: Path) -> str:
    """Check one experiment config and describe its run."""
    check_config(cfg)
    return "\n".join(
        [
            f"experiment {cfg.name}: 1 run, {_loss_text(cfg.loss.name, cfg.loss.params)}, seed {cfg.train.seed} "
            f"-> {out}",
            *_shared_lines(cfg),
        ]
    )


def study_plan(spec: Any, overrides: Sequence[str], n_trials: int | None, out: Path, storage: str | None = None) -> str:
    """Check a study (base config, search space, objectives, inputs) and describe its trials."""
    from benchmarks.tuning import base_config, default_storage_url

    space = check_study(spec, overrides)
    budget = f"{n_trials} trials" if n_trials is not None else "trials: --n-trials of 'lss-bench tune'"
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in spec.objectives)
    lines = [
        f"study {spec.name}: {budget}, runner {spec.runner.name} -> {out}/trials/<number>/",
        f"  objective(s): {objectives}",
        f"  sampler {spec.sampler.name or ('nsga2' if spec.multi_objective else 'tpe')} (seed {spec.sampler.seed}), "
        f"pruner {spec.pruner.name}",
        f"  storage: {storage or default_storage_url(out)}",
        "  search space:",
        *(f"    {key}: {_param_text(p)}" for key, p in space.items()),
    ]
    if spec.runner.name == "experiment":
        cfg = base_config(spec, [*overrides, *spec.trial_overrides])
        lines[1:1] = [f"  base experiment {spec.experiment}: {_loss_text(cfg.loss.name, cfg.loss.params)}"]
        lines[2:2] = _shared_lines(cfg)
    return "\n".join(lines)


def _shared_lines(cfg: Any) -> list[str]:
    """Data, model and budget of a config, one line each."""
    data, train = cfg.data, cfg.train
    if data.manifest is not None:
        source = f"manifest {data.manifest}"
    else:
        p = data.phantom
        source = f"phantom {p.n_cases} cases, {p.size} px, seed {p.seed}" + (f", shift {p.shift}" if p.shift else "")
    preset = f" (preset {cfg.model.preset})" if cfg.model.preset else ""
    return [
        f"  data: {source}; views resampled to {data.spatial_size} px, batch {data.batch_size}",
        f"  model: {cfg.model.name}{preset}",
        f"  budget: {train.epochs} epochs, lr {train.lr:g}, {train.schedule} schedule, device {train.device}",
    ]


def _loss_text(name: str, params: dict[str, Any]) -> str:
    """``loss NAME(k=v, ...)`` with the parameters that differ from the loss's registered defaults."""
    import losses

    defaults = losses.loss_spec(name)["defaults"]
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if k not in defaults or defaults[k] != v)
    return f"loss {name}({shown})" if shown else f"loss {name}"


def _param_text(p: Any) -> str:
    if p.type == "categorical":
        return f"categorical {p.choices}"
    return f"{p.type} [{p.low:g}, {p.high:g}]" + (" log" if p.log else "")
