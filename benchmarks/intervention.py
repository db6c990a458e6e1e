"""Test-time text intervention (Causal-SAM-LLM) on a trained run: before/after masks of one case, and how often an
instruction about a class moves that class's Dice and predicted area in the stated direction over a split.

The model side (FiLM from the instruction's text embedding) is :mod:`lss_vlm.models.instruct`; it is trained only
with ``model.params.instruct_film: true`` (:mod:`lss_vlm.engine.instruction`). A run without it has no FiLM layer and
every function here refuses it with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lss_vlm.constants import AXIAL_VIEW_OF_LEVEL, IGNORE_LABEL, LABELS, NUM_LABELS, VIEWS
from lss_vlm.errors import ConfigError
from lss_vlm.io import atomic_path, atomic_write_json

from .overlay import LABEL_COLOURS, CaseView, figure_text, quiet_missing_glyphs, save_figure

#: The word variant of :data:`lss_vlm.models.instruct.DIRECTION_WORDS` the measurement uses ("thicker"/"thinner").
MEASURE_VARIANT = 1
EFFECT_FILE = "instruction_effect.csv"
SUMMARY_FILE = "instruction_effect.json"
_LEVEL_OF_VIEW = {VIEWS.index(view): level for level, view in AXIAL_VIEW_OF_LEVEL.items()}


def require_film(model: torch.nn.Module, run_dir: str | Path) -> Any:
    """The model's FiLM layer; :class:`ConfigError` naming the run when it was trained without one."""
    film = getattr(model, "instruction", None)
    if film is None:
        raise ConfigError(
            f"{run_dir}: the model has no instruction FiLM layer (trained without model.params.instruct_film=true); "
            "train a run with --set model.params.instruct_film=true"
        )
    return film


# ---------------------------------------------------------------------------------------------------- one case
@dataclass
class InterventionRow:
    """Predicted area (pixels) of one class in the views the instruction acts on, before and after; Dice when the
    case has masks (NaN otherwise, or when the class is absent from both)."""

    label: str
    area_before: int
    area_after: int
    dice_before: float
    dice_after: float


def area_changes(before: CaseView, after: CaseView, views: np.ndarray) -> list[InterventionRow]:
    """Per foreground class, its area and Dice in the ``views`` (bool ``[V]``) before and after the instruction."""
    acted = [j for j in range(len(VIEWS)) if bool(views[j]) and bool(before.view_valid[j])]
    rows = []
    for c in range(1, NUM_LABELS):
        dice = [math.nan, math.nan]
        if before.truth is not None:
            scored = [j for j in acted if before.mask_valid is None or bool(before.mask_valid[j])]
            for k, pred in enumerate((before.pred, after.pred)):
                dice[k] = _dice(pred[scored] == c, before.truth[scored] == c, before.truth[scored] != IGNORE_LABEL)
        rows.append(
            InterventionRow(LABELS[c], int((before.pred[acted] == c).sum()), int((after.pred[acted] == c).sum()), *dice)
        )
    return rows


def _dice(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    pred, truth = pred & valid, truth & valid
    total = int(pred.sum() + truth.sum())
    return math.nan if total == 0 else 2.0 * float((pred & truth).sum()) / total


def save_intervention_overlay(path: str | Path, before: CaseView, after: CaseView, instruction: str) -> Path:
    """A figure with one column per acquired view and the rows image / ground truth (if any) / before / after /
    changed pixels (coloured by their label after the instruction); the views the instruction acts on are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from lss_vlm.models.instruct import instruction_views

    acted = instruction_views(instruction).numpy()
    columns = [j for j in range(len(VIEWS)) if bool(before.view_valid[j])]
    rows = ["image"] + (["truth"] if before.truth is not None else []) + ["before", "after", "changed"]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.7 * len(columns) + 0.9, 1.75 * len(rows) + 1.0), squeeze=False
    )
    style = {"vmin": 0, "vmax": len(LABELS) - 1, "cmap": ListedColormap(LABEL_COLOURS), "interpolation": "nearest"}
    for col, j in enumerate(columns):
        image = before.image[j]
        changed = np.where(before.pred[j] != after.pred[j], after.pred[j], 0)
        layers = {"truth": before.truth[j] if before.truth is not None else None, "before": before.pred[j]}
        layers.update({"after": after.pred[j], "changed": changed})
        for name, ax in zip(rows, axes[:, col]):
            ax.imshow(image, cmap="gray")
            if name != "image" and layers[name] is not None:
                ax.imshow(np.ma.masked_where(layers[name] == 0, layers[name]), alpha=0.75, **style)
            if name == "changed":
                ax.set_title(f"{int((changed > 0).sum())} px", fontsize=7, pad=2)
            ax.set_axis_off()
        axes[0, col].set_title(VIEWS[j] + (" ← instructed" if acted[j] else ""), fontsize=8,
                               color="#c0392b" if acted[j] else "black")  # fmt: skip
    for name, ax in zip(rows, axes[:, 0]):
        label = {"truth": "ground truth", "before": "prediction", "after": "with\ninstruction"}.get(name, name)
        ax.text(-0.08, 0.5, label, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=9)
    fig.suptitle(figure_text(f"case {before.case_id}: “{instruction}”"), fontsize=10)
    handles = [Patch(color=LABEL_COLOURS[c], label=LABELS[c]) for c in range(1, len(LABELS))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    with quiet_missing_glyphs():
        fig.tight_layout(rect=(0.03, 0.05, 1.0, 0.95))
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------------ measurement
def measure_split(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """Every (view with a mask, foreground class, direction) of ``split``: the template instruction
    (:func:`~lss_vlm.models.instruct.instruction_text`, word "thicker"/"thinner", the level named on an axial
    view) applied to that view alone, with the class's Dice and predicted area (pixels) before and after.

    ``truthful`` is True when the stated direction is that of the truth (:func:`~lss_vlm.engine.instruction.
    truthful_direction`; classes predicted within 5 % of their true area have no truthful direction and appear with
    both directions as ``truthful`` False). Returns one row per instruction.
    """
    from benchmarks.run_loading import build_split_loader, load_run_config, load_trained_model
    from lss_vlm.engine.validation import predict

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model, device = load_trained_model(run_dir, cfg)
    film = require_film(model, run_dir)
    model.set_instruction(None)
    rows = []
    with torch.no_grad():
        for batch, out in predict(model, build_split_loader(cfg, split), device):
            pred = out["seg_logits"].argmax(dim=2)
            for i, j in torch.nonzero(batch["mask_valid"], as_tuple=False).tolist():
                truth = batch["masks"][i, j].to(device)
                features = out["seg_features"][i, j]
                rows += _image_rows(model, film, features, pred[i, j], truth, j, batch["case_id"][i])
    return pd.DataFrame(rows)


def _image_rows(
    model: torch.nn.Module,
    film: Any,
    features: torch.Tensor,
    pred: torch.Tensor,
    truth: torch.Tensor,
    view: int,
    case_id: str,
) -> list[dict[str, Any]]:
    """The rows of :func:`measure_split` for one image: ``features [C, H, W]``, ``pred``/``truth`` ``[H, W]``."""
    from lss_vlm.engine.instruction import truthful_direction
    from lss_vlm.models.instruct import instruction_text

    valid = (truth != IGNORE_LABEL).cpu().numpy()
    jobs, level = [], _LEVEL_OF_VIEW.get(view)
    for c in range(1, NUM_LABELS):
        truthful = truthful_direction(float(((pred == c) & (truth != IGNORE_LABEL)).sum()), float((truth == c).sum()))
        for d in (1, -1):
            jobs.append((c, d, d == truthful, instruction_text(LABELS[c], d, level, MEASURE_VARIANT)))
    with torch.no_grad():
        embedding = film.embed(model.text, [job[3] for job in jobs]).to(features.device)
        after = film.head_logits(model.seg_decoder, features[None].expand(len(jobs), -1, -1, -1), embedding)
    before, true_np = pred.cpu().numpy(), truth.cpu().numpy()
    rows = []
    for (c, d, truthful, text), after_k in zip(jobs, after.argmax(dim=1).cpu().numpy()):
        rows.append(
            {
                "case_id": case_id, "view": VIEWS[view], "label": LABELS[c], "direction": d, "truthful": truthful,
                "instruction": text, "true_area": int((true_np == c).sum()),
                "area_before": int(((before == c) & valid).sum()), "area_after": int(((after_k == c) & valid).sum()),
                "dice_before": _dice(before == c, true_np == c, valid),
                "dice_after": _dice(after_k == c, true_np == c, valid),
            }
        )  # fmt: skip
    return rows


def summarise(effect: pd.DataFrame) -> dict[str, Any]:
    """Shares over the instructions of :func:`measure_split`:

    * ``truthful/area_moved``: area moved in the stated direction (a strict change), truthful instructions;
    * ``truthful/dice_up``, ``truthful/dice_down``: Dice rose / fell (strictly) when the direction was true;
    * ``opposite/area_moved``: area moved in the stated direction when it was the false one (controllability);
    * ``*/unchanged``: the prediction of that class did not change at all; ``*/mean_delta_dice``, ``n``.
    Plus the same per class under ``by_class``. Dice NaN (class absent in both) counts as no Dice change.
    """

    def shares(rows: pd.DataFrame) -> dict[str, float]:
        moved = np.sign(rows["area_after"] - rows["area_before"]) == rows["direction"]
        delta = (rows["dice_after"] - rows["dice_before"]).fillna(0.0)
        return {
            "n": int(len(rows)),
            "area_moved": float(moved.mean()) if len(rows) else math.nan,
            "unchanged": float((rows["area_after"] == rows["area_before"]).mean()) if len(rows) else math.nan,
            "dice_up": float((delta > 0).mean()) if len(rows) else math.nan,
            "dice_down": float((delta < 0).mean()) if len(rows) else math.nan,
            "mean_delta_dice": float(delta.mean()) if len(rows) else math.nan,
        }

    truthful = effect[effect["truthful"]]
    opposite = effect[~effect["truthful"] & effect.groupby(["case_id", "view", "label"])["truthful"].transform("any")]
    summary: dict[str, Any] = {"truthful": shares(truthful), "opposite": shares(opposite), "by_class": {}}
    for label in LABELS[1:]:
        summary["by_class"][label] = {
            "truthful": shares(truthful[truthful["label"] == label]),
            "opposite": shares(opposite[opposite["label"] == label]),
        }
    return summary


def write_effect(run_dir: str | Path, out: str | Path | None, split: str = "test") -> tuple[Path, dict[str, Any]]:
    """Measure ``split`` and write ``instruction_effect.csv`` and ``.json`` (the summary) into ``out`` (default
    ``RUN_DIR/eval_instructions_<split>/``); returns the folder and the summary."""
    folder = Path(out) if out is not None else Path(run_dir) / f"eval_instructions_{split}"
    effect = measure_split(run_dir, split)
    summary = summarise(effect)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / EFFECT_FILE) as tmp:
        effect.to_csv(tmp, index=False, float_format="%.6g")
    atomic_write_json(folder / SUMMARY_FILE, summary)
    return folder, summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Human lines of a summary: the pooled shares, then per class."""
    t, o = summary["truthful"], summary["opposite"]
    lines = [
        f"truthful instructions (n={t['n']}): area moved as stated {t['area_moved']:.1%}, Dice up {t['dice_up']:.1%}"
        f" / down {t['dice_down']:.1%}, mean ΔDice {t['mean_delta_dice']:+.4f}, unchanged {t['unchanged']:.1%}",
        f"opposite instructions (n={o['n']}): area moved as stated {o['area_moved']:.1%}, mean ΔDice "
        f"{o['mean_delta_dice']:+.4f}, unchanged {o['unchanged']:.1%}",
    ]
    for label, parts in summary["by_class"].items():
        t, o = parts["truthful"], parts["opposite"]
        lines.append(
            f"  {label:<20} truthful n={t['n']:<4} moved {t['area_moved']:.1%}  Dice up {t['dice_up']:.1%}  "
            f"ΔDice {t['mean_delta_dice']:+.4f} | opposite moved {o['area_moved']:.1%}"
        )
    return lines
