"""Overlay figure of one case: each view's image, ground-truth labels, predicted labels and a text→patch attention map.

Colours: the labels use the categorical :data:`LABEL_COLOURS`; the attention map is drawn white-hot (a grey ramp,
white = most attended) over a dimmed image, with its own colourbar, so it cannot be confused with a label colour.
A path ending in ``.jpg``/``.jpeg`` is written as JPEG (quality :data:`JPEG_QUALITY`, via Pillow); anything else
by its extension (PNG).
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lss_vlm.constants import IGNORE_LABEL, LABELS, VIEWS
from lss_vlm.io import atomic_path

#: One colour per label (background transparent).
LABEL_COLOURS: tuple[str, ...] = ("#00000000", "#e6c229", "#1b998b", "#2e86de", "#c0392b", "#8e44ad")
#: Colour map of the attention row (grey ramp: no hue, so no clash with :data:`LABEL_COLOURS`).
ATTENTION_CMAP = "gray"
#: How bright the image under the attention map may get (0–1), so that white means attention, not bone.
IMAGE_DIM = 0.45
JPEG_QUALITY = 85
DPI = 100


@dataclass
class CaseView:
    """Arrays of one case for an overlay.

    ``image`` ``[V, H, W]`` (first channel of each view), ``pred`` ``[V, H, W]`` predicted labels, ``view_valid``
    ``[V]`` bool (view acquired), ``attention`` ``[V, h, w]`` text→patch attention of ``prompt`` (None for a model
    without attention), ``truth`` ``[V, H, W]`` ground-truth labels and ``mask_valid`` ``[V]`` (view has a mask);
    ``truth`` None when the data has no masks.
    """

    case_id: str
    image: np.ndarray
    pred: np.ndarray
    view_valid: np.ndarray
    attention: np.ndarray | None
    prompt: str | None
    truth: np.ndarray | None = None
    mask_valid: np.ndarray | None = None


def figure_text(text: str, width: int = 90, max_lines: int = 2) -> str:
    """User text (an instruction, a case id) for a figure title: whitespace collapsed, wrapped at ``width``
    characters, at most ``max_lines`` lines (the rest cut with " …"), so a long text cannot swallow the figure."""
    return "\n".join(textwrap.wrap(" ".join(str(text).split()), width, max_lines=max_lines, placeholder=" …"))


@contextmanager
def quiet_missing_glyphs() -> Iterator[None]:
    """Matplotlib draws a character its font lacks (CJK, emoji in user text) as a box and warns once per character
    on stderr; inside this block those warnings are dropped (the figure is still written)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        yield


def save_figure(fig, path: str | Path, dpi: int = DPI, **kwargs) -> Path:
    """``fig.savefig`` atomically, by the path's suffix: JPEG (quality :data:`JPEG_QUALITY`) for ``.jpg``/``.jpeg``;
    PNG reduced to a 256-colour palette (plots have few colours; about a third of the bytes) for ``.png``.
    Characters the font lacks are drawn as boxes without a warning (:func:`quiet_missing_glyphs`)."""
    with quiet_missing_glyphs():
        return _save_figure(fig, Path(path), dpi, **kwargs)


def _save_figure(fig, path: Path, dpi: int, **kwargs) -> Path:
    import io

    from PIL import Image

    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        kwargs.setdefault("pil_kwargs", {"quality": JPEG_QUALITY, "optimize": True})
        kwargs.setdefault("facecolor", "white")
    with atomic_path(path) as tmp:
        if suffix != ".png":
            fig.savefig(tmp, dpi=dpi, format=suffix.lstrip(".") or "png", **kwargs)
            return path
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=dpi, format="png", facecolor="white", **kwargs)
        buffer.seek(0)
        with Image.open(buffer) as image:
            palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            palette.save(tmp, format="PNG", optimize=True)
    return path


def label_layer(labels: np.ndarray) -> np.ma.MaskedArray:
    """``labels`` with background (0) and ignored pixels (:data:`IGNORE_LABEL`) masked out, to draw over an image."""
    return np.ma.masked_where((labels == 0) | (labels == IGNORE_LABEL), labels)


def _normalised_attention(case: CaseView, columns: list[int]) -> np.ndarray | None:
    """Attention rescaled to [0, 1] by its minimum and maximum over the drawn views (one colourbar for the row).

    Softmax attention over a few text tokens is often nearly flat; min-max scaling shows where it peaks."""
    if case.attention is None:
        return None
    att = np.asarray(case.attention, dtype=float)
    drawn = att[columns]
    low, high = float(np.nanmin(drawn)), float(np.nanmax(drawn))
    return (att - low) / (high - low) if high > low else np.zeros_like(att)


def _row_label(ax, text: str, fontsize: int = 9) -> None:
    ax.text(-0.08, 0.5, text, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=fontsize)


def save_case_overlay(path: str | Path, case: CaseView) -> Path:
    """Save a 4-row figure (image / ground truth / prediction / attention) with one column per acquired view.

    The ground-truth row is left out when ``case.truth`` is None; a view without a mask says "no mask".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    columns = [j for j in range(len(VIEWS)) if bool(case.view_valid[j])]
    rows = ["image"] + (["truth"] if case.truth is not None else []) + ["prediction", "attention"]
    n_legend = len(LABELS) - 1
    width = max(1.7 * len(columns) + 0.9, 4.4)  # one view (a 2D dataset) still fits the legend and the colourbar
    legend_cols = max(1, min(n_legend, int(width // 1.8)))  # ~1.6 in an entry at fontsize 8
    legend_rows = math.ceil(n_legend / legend_cols)
    height = 1.75 * len(rows) + 0.8 + 0.18 * (legend_rows - 1)
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(width, height), squeeze=False)
    label_cmap = ListedColormap(LABEL_COLOURS)
    labels = {"vmin": 0, "vmax": len(LABELS) - 1, "cmap": label_cmap, "alpha": 0.65, "interpolation": "nearest"}
    attention = _normalised_attention(case, columns)
    shown = None
    for col, j in enumerate(columns):
        image = case.image[j]
        h, w = image.shape
        column = dict(zip(rows, axes[:, col]))
        column["image"].imshow(image, cmap="gray")
        column["image"].set_title(VIEWS[j], fontsize=8)
        for row, labelmap in (("truth", case.truth), ("prediction", case.pred)):
            if row not in column:
                continue
            column[row].imshow(image, cmap="gray")
            has_mask = row == "prediction" or case.mask_valid is None or bool(case.mask_valid[j])
            if has_mask:
                column[row].imshow(label_layer(labelmap[j]), **labels)
            else:
                column[row].text(w / 2, h / 2, "no mask", color="white", ha="center", va="center", fontsize=8)
        low, high = float(np.min(image)), float(np.max(image))
        column["attention"].imshow(image, cmap="gray", vmin=low, vmax=low + (high - low) / IMAGE_DIM)
        if attention is not None:
            shown = column["attention"].imshow(
                attention[j],
                cmap=_alpha_ramp(ATTENTION_CMAP),
                vmin=0,
                vmax=1,
                extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                interpolation="bilinear",
            )
        for ax in column.values():
            ax.set_axis_off()
    for name, ax in zip(rows, axes[:, 0]):
        text = {"truth": "ground truth", "attention": f"attention\n{case.prompt or '(none)'}"}.get(name, name)
        _row_label(ax, text, 8 if name == "attention" else 9)
    fig.suptitle(f"case {figure_text(case.case_id)}", fontsize=10)
    handles = [Patch(color=LABEL_COLOURS[c], label=LABELS[c]) for c in range(1, len(LABELS))]
    fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=8, frameon=False)
    with quiet_missing_glyphs():
        fig.tight_layout(rect=(0.03, (0.12 + 0.18 * legend_rows) / height, 1 - 0.8 / width, 0.96))  # 0.8 in: colourbar
    if shown is not None:
        bottom = axes[-1, -1].get_position()
        cax = fig.add_axes((1 - 0.66 / width, bottom.y0, 0.12 / width, bottom.height))
        bar = fig.colorbar(plt.cm.ScalarMappable(cmap=ATTENTION_CMAP, norm=shown.norm), cax=cax)
        bar.set_label("attention (case min–max)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def _alpha_ramp(name: str):
    """``name``'s colours with an opacity that rises with the value: low attention lets the image show through."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    colours = matplotlib.colormaps[name](np.linspace(0, 1, 256))
    colours[:, 3] = np.linspace(0.0, 0.9, 256)
    return ListedColormap(colours)
