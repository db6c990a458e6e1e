"""Overlay figure of one case: each view's image, its predicted mask and a text→patch attention map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lss_vlm.constants import LABELS, VIEWS
from lss_vlm.io import atomic_path

if TYPE_CHECKING:
    from .evaluation import CaseView

#: One colour per label (background transparent).
LABEL_COLOURS: tuple[str, ...] = ("#00000000", "#e6c229", "#1b998b", "#2e86de", "#c0392b", "#8e44ad")


def save_case_overlay(path: str | Path, case: CaseView) -> Path:
    """Save a 3-row figure (image / predicted labels / attention) with one column per acquired view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    columns = [j for j in range(len(VIEWS)) if bool(case.view_valid[j])]
    fig, axes = plt.subplots(3, len(columns), figsize=(2.0 * len(columns), 6.4), squeeze=False)
    label_cmap = ListedColormap(LABEL_COLOURS)
    for col, j in enumerate(columns):
        image = case.image[j]
        axes[0, col].imshow(image, cmap="gray")
        axes[0, col].set_title(VIEWS[j], fontsize=8)
        axes[1, col].imshow(image, cmap="gray")
        axes[1, col].imshow(
            np.ma.masked_equal(case.pred[j], 0),
            cmap=label_cmap,
            vmin=0,
            vmax=len(LABELS) - 1,
            alpha=0.6,
            interpolation="nearest",
        )
        axes[2, col].imshow(image, cmap="gray")
        if case.attention is not None:
            h, w = image.shape
            axes[2, col].imshow(case.attention[j], cmap="inferno", alpha=0.55, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        for row in range(3):
            axes[row, col].set_axis_off()
    axes[0, 0].text(-0.1, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "prediction", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    axes[2, 0].text(
        -0.1,
        0.5,
        f"attention\n{case.prompt or ''}",
        transform=axes[2, 0].transAxes,
        rotation=90,
        va="center",
        ha="right",
        fontsize=8,
    )
    handles = [Patch(color=LABEL_COLOURS[c], label=LABELS[c]) for c in range(1, len(LABELS))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"case {case.case_id}", fontsize=10)
    fig.tight_layout(rect=(0.02, 0.05, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
