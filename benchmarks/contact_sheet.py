"""Contact sheet of an evaluation: the worst-scored views of a split, each as ground truth beside prediction.

``overlay.jpg`` shows one fixed case; on a new dataset the question is where the model fails, and the answer is a
look at its worst views (a Dice of 0.2 may be a shifted mask, a whole spine drawn on a parasagittal slice, or a
label convention the model never saw). :func:`write_contact_sheet` ranks the rows of ``per_case.csv`` by their mean
Dice over the classes scored in that view, runs the model once more over the split, and draws the ``n`` lowest:
image with the ground-truth labels, image with the predicted labels, the per-class Dice in the title.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lss_vlm.constants import FOREGROUND_LABELS, LABELS, VIEWS

from .overlay import LABEL_COLOURS, figure_text, label_layer, quiet_missing_glyphs, save_figure

#: File name of the contact sheet in an evaluation folder.
CONTACT_SHEET_FILE = "cases.jpg"
#: Tile pairs (truth, prediction) per figure row.
PAIRS_PER_ROW = 4


def worst_views(per_case: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` rows of ``per_case.csv`` (columns ``case_id``, ``view``, ``dice/<class>``) with the lowest mean Dice
    over the classes scored in that view (NaN = not scored), lowest first; rows with no scored class are left out.
    Ties keep the file's order (case id, view)."""
    columns = [f"dice/{c}" for c in FOREGROUND_LABELS if f"dice/{c}" in per_case]
    if per_case.empty or not columns:
        return per_case.iloc[0:0].assign(mean_dice=[])
    scored = per_case.assign(mean_dice=per_case[columns].mean(axis=1, skipna=True))
    scored = scored[scored["mean_dice"].notna()]
    return scored.sort_values("mean_dice", kind="stable").head(n)


def _tile_title(row: pd.Series) -> str:
    parts = [
        f"{c.replace('vertebral_body', 'body').replace('_', ' ')} {row[f'dice/{c}']:.2f}"
        for c in FOREGROUND_LABELS
        if f"dice/{c}" in row and not math.isnan(float(row[f"dice/{c}"]))
    ]
    return figure_text(f"{row['case_id']} {row['view']}", 28, 1) + "\n" + figure_text(", ".join(parts), 34, 2)


def collect_views(predictions: Any, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[np.ndarray, ...]]:
    """``{(case_id, view): (image, truth, pred)}`` of the wanted views from ``(batch, output)`` pairs
    (:func:`lss_vlm.engine.validation.predict`); arrays ``[H, W]``."""
    found: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}
    for batch, out in predictions:
        pred = out["seg_logits"].argmax(dim=2)
        for i, case_id in enumerate(batch["case_id"]):
            for j, view in enumerate(VIEWS):
                if (str(case_id), view) in wanted:
                    found[(str(case_id), view)] = (
                        batch["views"][i, j, 0].float().cpu().numpy(),
                        batch["masks"][i, j].cpu().numpy(),
                        pred[i, j].cpu().numpy(),
                    )
    return found


def save_contact_sheet(path: Path, rows: pd.DataFrame, arrays: dict[tuple[str, str], tuple[np.ndarray, ...]]) -> Path:
    """Draw ``rows`` (from :func:`worst_views`) as truth/prediction tile pairs, :data:`PAIRS_PER_ROW` pairs a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    keys = [(str(r.case_id), str(r.view)) for r in rows.itertuples()]
    n_rows = max(1, math.ceil(len(keys) / PAIRS_PER_ROW))
    fig, axes = plt.subplots(n_rows, 2 * PAIRS_PER_ROW, figsize=(2 * PAIRS_PER_ROW * 1.6, n_rows * 2.0 + 0.5))
    axes = np.atleast_2d(axes)
    style = {"vmin": 0, "vmax": len(LABELS) - 1, "cmap": ListedColormap(LABEL_COLOURS), "alpha": 0.6}
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, ((_, row), key) in enumerate(zip(rows.iterrows(), keys)):
        image, truth, pred = arrays[key]
        r, c = divmod(k, PAIRS_PER_ROW)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        for ax, labels, name in ((left, truth, "truth"), (right, pred, "prediction")):
            ax.imshow(image, cmap="gray")
            ax.imshow(label_layer(labels), interpolation="nearest", **style)
            ax.text(2, 2, name, color="white", fontsize=6, va="top")
        left.set_title(_tile_title(row), fontsize=7, loc="left")
    handles = [Patch(color=LABEL_COLOURS[c], label=LABELS[c]) for c in range(1, len(LABELS))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"lowest mean Dice first ({len(keys)} views)", fontsize=10)
    with quiet_missing_glyphs():
        fig.tight_layout(rect=(0, 0.35 / (n_rows * 2.0 + 0.5), 1, 0.97))
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_contact_sheet(model: Any, loader: Any, device: Any, out_dir: Path, n: int, amp: bool = False) -> Path | None:
    """Write ``out_dir/cases.jpg`` with the ``n`` worst views of ``out_dir/per_case.csv`` (written by the
    evaluation just before); None when no view has a scored class. Costs one more inference pass over ``loader``."""
    from lss_vlm.engine.validation import predict

    per_case = pd.read_csv(out_dir / "per_case.csv", dtype={"case_id": str, "view": str})
    rows = worst_views(per_case, n)
    if rows.empty:
        warnings.warn(
            f"{out_dir}: no view of this split has a scored class; no {CONTACT_SHEET_FILE} written", stacklevel=2
        )
        return None
    wanted = {(str(r.case_id), str(r.view)) for r in rows.itertuples()}
    arrays = collect_views(predict(model, loader, device, amp=amp), wanted)
    return save_contact_sheet(out_dir / CONTACT_SHEET_FILE, rows, arrays)
