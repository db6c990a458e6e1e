"""The results of a study: ``trials.csv``, ``best.yaml``, Optuna's figures, ``summary.json``, the terminal summary."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lss_vlm.io import atomic_path, atomic_write_json

from .spec import ParamSpec, StudySpec, apply_params, base_config, param_name
from .storage import RETRY_CALLBACK, redact_url
from .study import BUDGET_ATTR, FINISHED_STATES, best_trial, budget_trials, stale_trial_numbers


def trials_frame(study: optuna.Study) -> Any:
    """One row per trial: number, value(s), state, params, user attrs (worker, run_dir, fail_reason), retry link."""
    attrs = ("number", "value", "state", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    frame = study.trials_dataframe(attrs=attrs)
    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    frame["retry_of"] = [RETRY_CALLBACK.retried_trial_number(t) for t in trials]
    frame["stale_worker_died"] = [t.number in stale for t in trials]
    return frame


def write_figures(study: optuna.Study, spec: StudySpec, space: dict[str, ParamSpec], out_dir: Path) -> dict[str, str]:
    """Optuna's matplotlib figures into ``out_dir``; returns figure name -> file, or the reason it was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    names = [param_name(k) for k, p in space.items() if p.type != "categorical"]
    pid = [n for n in ("kp", "ki", "kd") if n in names] or names[:3]
    target = (lambda t: t.values[0]) if spec.multi_objective else None
    label = spec.objectives[0].metric
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, target=target, target_name=label),
        "param_importances": lambda: ovm.plot_param_importances(study, target=target, target_name=label),
        "slice": lambda: ovm.plot_slice(study, params=pid, target=target, target_name=label),
        "contour": lambda: ovm.plot_contour(study, params=pid, target=target, target_name=label),
    }
    if spec.multi_objective:
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=[o.metric for o in spec.objectives])
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    result: dict[str, str] = {}
    for name, plot in plots.items():
        reason = _figure_unavailable(name, complete, len(pid))
        if reason:
            result[name] = f"skipped: {reason}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot()
            figure = _tidy_figure(axes)
            path = out_dir / f"{name}.png"
            with atomic_path(path) as tmp:
                figure.savefig(tmp, dpi=120, bbox_inches="tight")
            plt.close(figure)
            result[name] = str(path)
        except Exception as exc:  # a figure must never lose the study's results
            result[name] = f"skipped: {type(exc).__name__}: {exc}"
    return result


def _figure_unavailable(name: str, n_complete: int, n_pid: int) -> str | None:
    if n_complete == 0:
        return "no complete trial"
    if name == "param_importances" and n_complete < 2:
        return "parameter importances need at least 2 complete trials"
    if name == "contour" and n_pid < 2:
        return "a contour plot needs at least 2 numeric parameters"
    return None


def _tidy_figure(axes: Any) -> Any:
    """The figure of Optuna's axes, big enough for its panels, without the overlapping minor labels of log axes."""
    import numpy as np
    from matplotlib.ticker import NullFormatter

    panels = list(np.ravel(axes)) if isinstance(axes, np.ndarray) else [axes]
    for ax in panels:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_minor_formatter(NullFormatter())
    figure = panels[0].figure
    width, height = figure.get_size_inches()
    shape = np.shape(axes) if isinstance(axes, np.ndarray) else ()
    rows, columns = (shape[0] if len(shape) == 2 else 1), (shape[-1] if shape else 1)
    figure.set_size_inches(max(width, 4 * columns, 6), max(height, 3.3 * rows, 4.5))
    return figure


def study_summary(
    study: optuna.Study, spec: StudySpec, storage_url: str, wall_time_s: float, workers: int
) -> dict[str, Any]:
    """The study in numbers: budget, states, best trial, failures (with reasons), wall time."""
    trials = study.get_trials(deepcopy=False)
    counted = budget_trials(trials)
    states = {s.name.lower(): sum(t.state == s for t in counted) for s in FINISHED_STATES}
    best = best_trial(study, spec)
    return {
        "study": study.study_name,
        "storage": redact_url(storage_url),
        "budget": study.user_attrs.get(BUDGET_ATTR),
        "finished": len(counted),
        "states": states,
        "stale_retried": sorted(stale_trial_numbers(trials)),
        "unfinished": sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials),
        "objectives": [o.model_dump() for o in spec.objectives],
        "best_trial": None if best is None else best.number,
        "best_values": None if best is None else best.values,
        "best_params": None if best is None else best.params,
        "failures": {
            t.number: t.user_attrs.get("fail_reason", "unknown") for t in counted if t.state == TrialState.FAIL
        },
        "workers": workers,
        "wall_time_s": round(wall_time_s, 1),
    }


def format_summary(summary: dict[str, Any], out_dir: Path) -> str:
    """The terminal summary of a study."""
    s = summary["states"]
    lines = [
        f"study {summary['study']} ({summary['storage']}): {summary['finished']}/{summary['budget']} trials in "
        f"{summary['wall_time_s']:.0f} s with {summary['workers']} worker(s) - {s['complete']} complete, "
        f"{s['pruned']} pruned, {s['fail']} failed",
    ]
    if summary["stale_retried"]:
        lines.append(f"  retried after their worker died: trials {summary['stale_retried']}")
    if summary["unfinished"]:
        lines.append(f"  {summary['unfinished']} trial(s) still waiting or running (rerun the command to finish them)")
    for number, reason in list(summary["failures"].items())[:5]:
        lines.append(f"  trial {number} failed: {reason}")
    if summary["best_trial"] is None:
        lines.append("no trial completed: no best config")
    else:
        metrics = ", ".join(
            f"{o['metric']} = {v:.4f} ({o['direction']})" for o, v in zip(summary["objectives"], summary["best_values"])
        )
        lines.append(f"best trial #{summary['best_trial']}: {metrics}")
        lines.extend(
            f"  {k} = {v:.6g}" if isinstance(v, float) else f"  {k} = {v}" for k, v in summary["best_params"].items()
        )
    lines.append(f"results in {out_dir} (best.yaml, trials.csv, figures/, summary.json)")
    lines.append(f"dashboard: optuna-dashboard {summary['storage']}")
    return "\n".join(lines)


def write_results(
    study: optuna.Study,
    spec: StudySpec,
    space: dict[str, ParamSpec],
    out_dir: Path,
    summary: dict[str, Any],
    overrides: Sequence[str] = (),
    figures: bool = True,
) -> None:
    """``trials.csv``, ``best.yaml`` (full experiment config with the best params), ``figures/``, ``summary.json``."""
    with atomic_path(out_dir / "trials.csv") as tmp:
        trials_frame(study).to_csv(tmp, index=False)
    best = best_trial(study, spec)
    if best is not None and spec.experiment is not None:
        params = {key: best.params[param_name(key)] for key in space if param_name(key) in best.params}
        from benchmarks.config import dump_config

        cfg = apply_params(base_config(spec, overrides), params)
        dump_config(cfg, out_dir / "best.yaml")
    if figures:
        summary["figures"] = write_figures(study, spec, space, out_dir / "figures")
    atomic_write_json(out_dir / "summary.json", summary)
