"""Out-of-distribution robustness: score the trained runs of a suite on shifted copies of their test set.

A suite with ``shifts: [t1_contrast, ...]`` (``configs/suites/ood.yaml``) trains every run on its clean phantom as
usual; then each completed run is scored on the test split of the same phantom (same settings and seed) synthesised
under each shift preset of :data:`lss_vlm.data.phantom.SHIFT_PRESETS`. Causal-SAM-LLM reports its cross-scanner and
cross-modality results this way: the score per shift and the drop from in-distribution.

* The shifted phantoms are resolved by :func:`benchmarks.data.cached_phantom`: synthesised once (deterministic from
  the seed, cached by their settings), shared by every run and every suite with the same data.
* Results of a run: ``RUN_DIR/ood/<shift>/`` (``metrics.json`` with the segmentation and grade keys of a run's,
  ``per_case.csv``, ``source.json``), written into ``<shift>.partial`` and renamed; a finished shift is not scored
  again, so a killed suite resumes. ``lss-bench evaluate RUN --shifts a,b`` does the same for one run.
* Tables (:func:`ood_table`): one row per (loss, shift), ``clean`` first: Dice (macro) and HD95 (macro, mm), mean ±
  std over seeds, and the drop from the run's own clean score (``dice_drop`` = clean − shifted, per seed, then mean
  ± std; ``hd95_rise`` = shifted − clean). :func:`write_ood_tables` writes ``ood_shift.{csv,md,json}`` beside the
  leaderboard; :func:`benchmarks.plots.ood_shift` draws ``figures/ood_shift.png``; the HTML page shows both.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lss_vlm.errors import ConfigError
from lss_vlm.io import atomic_path, atomic_write_json, atomic_write_text

#: Folder of a run directory that holds its scores under each shift (``ood/<shift>/metrics.json``).
OOD_FOLDER = "ood"
#: Name of the in-distribution row (the run's own ``metrics.json``).
CLEAN = "clean"
#: Metrics of the OOD tables: (metrics.json key, column prefix, digits).
OOD_METRICS: tuple[tuple[str, str, int], ...] = (("dice_macro", "dice", 3), ("hd95_macro", "hd95", 1))
TABLE_STEM = "ood_shift"


def check_shift_names(shifts: Sequence[str]) -> None:
    """Every name must be a phantom shift preset, listed once; raises ``ValueError`` (pydantic reports it)."""
    from lss_vlm.data.phantom.config import SHIFT_PRESETS

    unknown = [s for s in shifts if s not in SHIFT_PRESETS]
    if unknown:
        raise ValueError(
            f"shifts: unknown preset(s) {', '.join(map(repr, unknown))}; valid: {', '.join(SHIFT_PRESETS)}"
        )
    if len(set(shifts)) != len(shifts):
        raise ValueError(f"shifts: each preset once, got {list(shifts)}")


def check_shiftable(data: Any, culprit: str = "shifts") -> None:
    """A :class:`benchmarks.config.DataConfig` whose test set can be re-synthesised under a shift: the phantom's.
    A prepared manifest cannot be shifted: :class:`ConfigError` starting with ``culprit`` (the suite key or the
    option that asked for shifts)."""
    if data.manifest is not None:
        raise ConfigError(
            f"{culprit}: the OOD scores re-synthesise the phantom under each shift, but data.manifest is set "
            f"({data.manifest}); only a run trained on the phantom can be scored under a shift"
        )


def shifted_data(data: Any, shift: str) -> Any:
    """``data`` (a :class:`benchmarks.config.DataConfig`) with its phantom under ``shift``; a prepared manifest
    cannot be shifted (:func:`check_shiftable`)."""
    check_shiftable(data)
    return data.model_copy(update={"phantom": data.phantom.model_copy(update={"shift": shift})})


def shifted_manifests(data: Any, shifts: Sequence[str]) -> dict[str, Path]:
    """The manifest of the phantom of ``data`` under each shift, synthesised once into the phantom cache."""
    from benchmarks.data import resolve_manifest

    return {shift: resolve_manifest(shifted_data(data, shift)) for shift in shifts}


def score_run_on_shift(run_dir: Path, shift: str, manifest: Path) -> Path:
    """Score a finished run's segmentation and grades on the test split (``eval.split``) of ``manifest`` into
    ``run_dir/ood/<shift>/`` (``metrics.json``, ``per_case.csv``; written into ``<shift>.partial`` and renamed);
    returns the folder. Reports are not generated (the drop is a segmentation question, and generation is most of an
    evaluation's time). Skipped when the folder is already complete."""
    import torch

    from benchmarks.run_loading import build_split_loader, load_run_config, load_trained_model
    from lss_vlm.engine.validation import predict, update_metrics
    from lss_vlm.metrics.classification import GradeMetrics
    from lss_vlm.metrics.segmentation import SegmentationMetrics

    final = run_dir / OOD_FOLDER / shift
    if (final / "metrics.json").is_file():
        return final
    cfg = load_run_config(run_dir)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": Path(manifest)})})
    model, device = load_trained_model(run_dir, cfg)
    seg, grades = SegmentationMetrics(), GradeMetrics()
    with torch.no_grad():
        for batch, out in predict(model, build_split_loader(cfg, cfg.eval.split), device, amp=cfg.train.amp):
            update_metrics(seg, grades, batch, out)
    metrics = {k: float(v) for k, v in {**seg.aggregate(), **grades.aggregate()}.items()}
    partial = final.with_name(f"{shift}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    seg.per_case().to_csv(partial / "per_case.csv", index=False)
    atomic_write_json(partial / "metrics.json", metrics)
    atomic_write_json(partial / "source.json", {"shift": shift, "manifest": str(manifest), "split": cfg.eval.split})
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def score_run_shifts(run_dir: str | Path, shifts: Sequence[str]) -> dict[str, dict[str, float]]:
    """``lss-bench evaluate RUN --shifts``: score one finished phantom run on each shift (synthesised once, cached);
    returns ``{shift: metrics}``. Bad shift names or a run on a prepared manifest: :class:`ConfigError`."""
    from benchmarks.run_loading import load_run_config

    try:
        check_shift_names(shifts)
    except ValueError as exc:
        raise ConfigError(f"--{exc}") from None
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    check_shiftable(cfg.data, f"--shifts: run {run_dir}")
    manifests = shifted_manifests(cfg.data, shifts)
    return {
        shift: json.loads((score_run_on_shift(run_dir, shift, m) / "metrics.json").read_text())
        for shift, m in manifests.items()
    }


def score_suite_shifts(
    shifts: Sequence[str], plans: Sequence[Any], out_dir: str | Path, message: Callable[[str], None] = print
) -> int:
    """Score every completed run of ``plans`` (:class:`benchmarks.suite.PlannedRun`) in the suite folder ``out_dir``
    on each of ``shifts``; returns how many (run, shift) pairs were scored now. Shifted phantoms are synthesised once
    per data config. A run that cannot be scored (e.g. damaged weights) gets one message and the others go on."""
    from lss_vlm.errors import LssError

    out_dir = Path(out_dir)
    done = 0
    manifests: dict[str, dict[str, Path]] = {}
    for plan in plans if shifts else ():
        run_dir = plan.final_dir(out_dir)
        status = _status(run_dir)
        if status != "completed":
            continue
        key = json.dumps(plan.config.data.model_dump(mode="json"), sort_keys=True)
        if key not in manifests:
            message(f"ood: preparing the shifted test sets ({', '.join(shifts)}; cached after the first time)")
            manifests[key] = shifted_manifests(plan.config.data, shifts)
        for shift, manifest in manifests[key].items():
            if (run_dir / OOD_FOLDER / shift / "metrics.json").is_file():
                continue
            try:
                folder = score_run_on_shift(run_dir, shift, manifest)
            except LssError as exc:
                message(f"ood: {plan.label} seed{plan.seed} on {shift}: not scored ({exc})")
                continue
            dice = json.loads((folder / "metrics.json").read_text()).get("dice_macro", float("nan"))
            message(f"ood: {plan.label} seed{plan.seed} on {shift}: dice_macro={dice:.4f}")
            done += 1
    return done


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------- tables
def ood_records(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per (completed run, shift with scores), ``clean`` included: ``loss, seed, shift, dice, hd95,
    dice_drop, hd95_rise``. ``runs``: :class:`benchmarks.run_records.RunRecord`. Empty when no run has OOD scores."""
    rows = []
    for run in runs:
        folder = Path(run.path) / OOD_FOLDER
        if not run.completed or not folder.is_dir():
            continue
        clean = {prefix: float(run.metrics.get(key, np.nan)) for key, prefix, _ in OOD_METRICS}
        rows.append({"loss": run.loss, "seed": run.seed, "shift": CLEAN, **clean})
        for shift_dir in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "metrics.json").is_file()):
            metrics = json.loads((shift_dir / "metrics.json").read_text(encoding="utf-8"))
            rows.append(
                {
                    "loss": run.loss,
                    "seed": run.seed,
                    "shift": shift_dir.name,
                    **{prefix: float(metrics.get(key, np.nan)) for key, prefix, _ in OOD_METRICS},
                }
            )
    table = pd.DataFrame(rows, columns=["loss", "seed", "shift", "dice", "hd95"])
    clean = table[table["shift"] == CLEAN].set_index(["loss", "seed"])
    index = pd.MultiIndex.from_frame(table[["loss", "seed"]])
    table["dice_drop"] = clean["dice"].reindex(index).to_numpy() - table["dice"].to_numpy()
    table["hd95_rise"] = table["hd95"].to_numpy() - clean["hd95"].reindex(index).to_numpy()
    return table


def ood_table(runs: Sequence[Any], losses: Sequence[str] | None = None) -> pd.DataFrame | None:
    """Mean ± std over seeds per (loss, shift): columns ``loss, shift, n_seeds`` and ``<m>_mean``, ``<m>_std`` for
    ``dice, hd95, dice_drop, hd95_rise``. Rows: losses in ``losses`` order (else as found), ``clean`` first, then
    the shifts in the order of SHIFT_PRESETS. None when no run has OOD scores."""
    records = ood_records(runs)
    if records.empty or (records["shift"] != CLEAN).sum() == 0:
        return None
    values = ["dice", "hd95", "dice_drop", "hd95_rise"]
    grouped = records.groupby(["loss", "shift"], sort=False)[values]
    table = grouped.agg(["mean", "std"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    table.insert(0, "n_seeds", records.groupby(["loss", "shift"], sort=False)["seed"].nunique())
    table = table.reset_index()
    order = list(losses) if losses else list(dict.fromkeys(records["loss"]))
    from lss_vlm.data.phantom.config import SHIFT_PRESETS

    found = set(records["shift"]) - {CLEAN}
    shifts = [CLEAN] + [s for s in SHIFT_PRESETS if s in found] + sorted(found - set(SHIFT_PRESETS))
    table["_l"] = table["loss"].map({name: i for i, name in enumerate(order)}).fillna(len(order))
    table["_s"] = table["shift"].map({name: i for i, name in enumerate(shifts)})
    return table.sort_values(["_l", "_s"]).drop(columns=["_l", "_s"]).reset_index(drop=True)


def _cell(row: pd.Series, metric: str, digits: int, signed: bool = False) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if not np.isfinite(mean):
        return "–"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if np.isfinite(std) else "")


def display_table(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the OOD table (Markdown, HTML, terminal)."""
    headers = ["loss", "shift", "seeds", "Dice ↑", "Dice drop vs clean", "HD95 mm ↓", "HD95 rise vs clean"]
    rows = []
    for _, row in table.iterrows():
        clean = row["shift"] == CLEAN
        rows.append(
            [
                str(row["loss"]),
                str(row["shift"]),
                str(int(row["n_seeds"])),
                _cell(row, "dice", 3),
                "–" if clean else _cell(row, "dice_drop", 3, signed=True),
                _cell(row, "hd95", 1),
                "–" if clean else _cell(row, "hd95_rise", 1, signed=True),
            ]
        )
    return headers, rows


OOD_NOTE = (
    "Dice and HD95: macro over the five foreground classes on the test split; clean = the phantom the runs were "
    "trained on, other rows = the same phantom (settings, seed) re-synthesised under that acquisition-shift preset "
    "(lss_vlm/data/phantom/config.py). Drop = clean − shifted Dice per seed (positive = worse), rise = shifted − "
    "clean HD95; mean ± std over seeds."
)


def to_markdown(table: pd.DataFrame, title: str = "Out-of-distribution shifts") -> str:
    """The OOD table as GitHub Markdown with its note."""
    headers, rows = display_table(table)
    lines = [f"# {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + ["", f"- {OOD_NOTE}"]) + "\n"


def to_html(table: pd.DataFrame | None) -> str:
    """An HTML section (heading, table, note) for the leaderboard page; empty without OOD scores."""
    import html

    if table is None:
        return ""
    headers, rows = display_table(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<h2>Out-of-distribution shifts</h2><div class="scroll"><table class="ood"><thead><tr>{head}</tr></thead>'
        f'<tbody>{body}</tbody></table></div><p class="notes">{html.escape(OOD_NOTE)}</p>'
    )


def write_ood_tables(board: Any, out_dir: str | Path, formats: Sequence[str]) -> dict[str, Path]:
    """``ood_shift.{csv,md,json}`` (those of ``formats`` among csv, md, json) of a leaderboard's runs into
    ``out_dir``, each atomically; nothing when no run has OOD scores. Returns the paths by ``ood-<format>``."""
    table = ood_table(board.runs, [name for name in board.table["loss"]])
    if table is None:
        return {}
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "csv" in formats:
        with atomic_path(out_dir / f"{TABLE_STEM}.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        written["ood-csv"] = out_dir / f"{TABLE_STEM}.csv"
    if "md" in formats:
        atomic_write_text(out_dir / f"{TABLE_STEM}.md", to_markdown(table))
        written["ood-md"] = out_dir / f"{TABLE_STEM}.md"
    if "json" in formats:
        records = json.loads(table.to_json(orient="records"))  # NaN -> null
        atomic_write_json(out_dir / f"{TABLE_STEM}.json", {"note": OOD_NOTE, "rows": records})
        written["ood-json"] = out_dir / f"{TABLE_STEM}.json"
    return written


def print_ood(board: Any) -> None:
    """Print the OOD table of a leaderboard's runs (nothing without OOD scores)."""
    table = ood_table(board.runs, [name for name in board.table["loss"]])
    if table is not None:
        print(to_markdown(table).rstrip())
