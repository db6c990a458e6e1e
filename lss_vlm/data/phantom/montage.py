"""PNG montage of a few phantom cases: every view with its label overlay and the per-level grades."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ...constants import GRADES, LABELS, LEVELS, VIEWS, level_key
from ...io import atomic_path
from ..manifest import read_manifest, resolve

#: Overlay colours (RGBA) per label: body, disc, sac, posterior elements, ligamentum flavum.
LABEL_COLOURS = np.array(
    [[0, 0, 0, 0], [0.95, 0.8, 0.2, 0.35], [0.2, 0.8, 0.95, 0.4], [0.1, 0.9, 0.2, 0.45], [0.9, 0.3, 0.9, 0.4],
     [1.0, 0.15, 0.1, 0.7]]
)  # fmt: skip


def _load(path: Path | None) -> np.ndarray | None:
    return None if path is None else np.asanyarray(nib.load(path).dataobj)[:, :, 0]


def save_montage(manifest_path: str | os.PathLike[str], out_path: str | os.PathLike[str], n_cases: int = 4) -> Path:
    """Save a montage of up to ``n_cases`` cases (preferring ones with severe levels): one row of images and one
    row of overlays per case, views left to right, grades in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    manifest_path = Path(manifest_path)
    df = read_manifest(manifest_path)
    grade_cols = [f"grade_{level_key(lv)}" for lv in LEVELS]
    order = df[grade_cols].max(axis=1).sort_values(ascending=False, kind="stable").index
    picked = list(order[: n_cases // 2]) + [i for i in df.index if i not in set(order[: n_cases // 2])][: n_cases // 2]
    rows = df.loc[picked[:n_cases]]
    fig, axes = plt.subplots(2 * len(rows), len(VIEWS), figsize=(2.1 * len(VIEWS), 4.4 * len(rows)), squeeze=False)
    for r, (_, row) in enumerate(rows.iterrows()):
        for c, view in enumerate(VIEWS):
            image = _load(resolve(manifest_path.parent, row[f"img_{view}"]))
            mask = _load(resolve(manifest_path.parent, row.get(f"seg_{view}")))
            title = view
            if view.startswith("ax_"):
                lv = LEVELS[c - 2]
                g = int(row[f"grade_{level_key(lv)}"])
                title = f"{lv}: {GRADES[g]}\n{row[f'area_{level_key(lv)}']:.0f} mm²"
            for k, ax in enumerate((axes[2 * r, c], axes[2 * r + 1, c])):
                ax.set_axis_off()
                if image is None:
                    continue
                ax.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(image, 99.5))
                if k == 1 and mask is not None:
                    ax.imshow(LABEL_COLOURS[mask], interpolation="nearest")
            axes[2 * r, c].set_title(f"{row['case_id']} {title}" if c == 0 else title, fontsize=7)
    handles = [Patch(color=LABEL_COLOURS[i][:3], label=LABELS[i]) for i in range(1, len(LABELS))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out_path
