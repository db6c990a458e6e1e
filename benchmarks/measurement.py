"""The label maps a run's reports are measured on, and the reports composed from them.

:class:`Measurer` turns a batch's class probabilities (model grid) into one label map per axial view on the grid
``eval.measure_on`` names (``native``: the view's acquired pixels, where the references were measured;
:func:`lss_vlm.data.native_grid.to_native_grid`) and composes the structured report from them
(:func:`lss_vlm.reports.composer.compose_report`). With ``eval.refine_sac`` (default) it also re-decides the
thecal-sac boundary of the *predicted* masks from the acquired intensities
(:class:`lss_vlm.reports.boundary.SacBoundaryRefiner`, fitted on the run's training split); the true masks are
measured as they are.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from lss_vlm.constants import AXIAL_VIEWS, NUM_LABELS, VIEWS

from .config import ExperimentConfig
from .data import resolve_manifest


class NativeGridMissingWarning(UserWarning):
    """``eval.measure_on: native``, but a view of the batch does not record its acquired grid."""


class SacRefinerUnavailableWarning(UserWarning):
    """``eval.refine_sac`` is on, but the refiner cannot be fitted (too few labelled axial views in the training
    split) or a view's acquired image does not lie on the grid the batch records (that view is measured unrefined)."""


def true_probabilities(batch: dict[str, Any]) -> torch.Tensor:
    """One-hot ``[B, V, C, H, W]`` of the true masks (not-annotated pixels and views without a mask: all 0)."""
    masks = batch["masks"].long()
    annotated = (masks >= 0) & (masks < NUM_LABELS)
    onehot = torch.nn.functional.one_hot(torch.where(annotated, masks, 0), NUM_LABELS).movedim(-1, 2).float()
    keep = annotated & batch["mask_valid"].bool()[..., None, None]
    return onehot * keep[:, :, None]


class Measurer:
    """Label maps and composed reports of a batch's cases (see the module docstring).

    Args:
        measure_on: ``"native"`` or ``"model"`` (``eval.measure_on``).
        refiner: a fitted :class:`~lss_vlm.reports.boundary.SacBoundaryRefiner`, or None.
        acquired: the evaluated cases' acquired axial views (:class:`~lss_vlm.data.acquired.AcquiredAxialViews`);
            the refiner needs them.
    """

    def __init__(self, measure_on: str = "native", refiner: Any = None, acquired: Any = None) -> None:
        self.measure_on = measure_on
        self.refiner = refiner if (refiner is not None and acquired is not None and measure_on == "native") else None
        self.acquired = acquired
        self._warned = False

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Measurer:
        """The measurer of a run's own data (``cfg``): with ``eval.refine_sac`` and ``measure_on: native``, the
        refiner fitted on the training split and the dataset's acquired views. A cross-dataset evaluation uses
        ``Measurer(cfg.eval.measure_on)`` instead: a refiner reads the contrast it was fitted on."""
        if not (cfg.eval.refine_sac and cfg.eval.measure_on == "native"):
            return cls(cfg.eval.measure_on)
        from lss_vlm.data.acquired import AcquiredAxialViews

        acquired = AcquiredAxialViews(resolve_manifest(cfg.data), "all", cfg.data.views)
        return cls(cfg.eval.measure_on, fit_sac_refiner(cfg), acquired)

    def compose(self, batch: dict[str, Any], probabilities: torch.Tensor, i: int, refine: bool = True) -> Any:
        """The structured report composed from the label maps of case ``i`` (None without a composer).

        ``probabilities``: ``[B, V, C, H, W]`` class probabilities on the model's grid (the softmax of the
        predictions, or :func:`true_probabilities`: pass ``refine=False``, true masks are measured as they are). A
        view without a recorded acquired grid (e.g. augmented) is measured on the model's grid, as with
        ``measure_on="model"``."""
        try:
            from lss_vlm.reports.composer import compose_report
        except ImportError:
            return None
        masks, spacing = self.masks(batch, probabilities, i, refine)
        return compose_report(masks, spacing, grades=None)

    def masks(
        self, batch: dict[str, Any], probabilities: torch.Tensor, i: int, refine: bool = True
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]]]:
        """``({axial view: label map}, {axial view: (row_mm, col_mm)})`` of case ``i`` on the measurement grid."""
        from lss_vlm.data.native_grid import has_native_grid, native_spacing, to_native_grid
        from lss_vlm.reports.composer import measurement_labels

        valid = batch.get("view_valid")
        masks: dict[str, np.ndarray] = {}
        spacing: dict[str, tuple[float, float]] = {}
        for j, view in enumerate(VIEWS):
            if view not in AXIAL_VIEWS or (valid is not None and not bool(valid[i, j])):
                continue
            grids = [batch[k][i, j].cpu() for k in ("affine", "native_affine", "native_shape") if k in batch]
            if self.measure_on == "native" and len(grids) == 3 and has_native_grid(*grids):
                native = to_native_grid(probabilities[i, j].cpu(), *grids).numpy()
                refined = refine and self.refiner is not None
                image = self._acquired_image(batch["case_id"][i], view, native.shape[1:], grids[1]) if refined else None
                masks[view] = measurement_labels(native) if image is None else self.refiner.refine(image, native)
                spacing[view] = native_spacing(grids[1])
            else:
                if self.measure_on == "native":
                    warnings.warn(
                        f"{view}: the batch does not record the acquired grid (native_affine/native_shape); measured "
                        "on the model's grid",
                        NativeGridMissingWarning,
                        stacklevel=2,
                    )
                masks[view] = measurement_labels(probabilities[i, j].cpu().numpy())
                spacing[view] = tuple(float(x) for x in batch["spacing"][i, j].tolist())
        return masks, spacing

    def _acquired_image(
        self, case_id: str, view: str, shape: tuple[int, ...], native_affine: torch.Tensor
    ) -> np.ndarray | None:
        """The acquired image of ``view`` when it lies on the recorded grid (``shape``, ``native_affine``); else None
        and, once per measurer, a :class:`SacRefinerUnavailableWarning`: the view is measured unrefined."""
        found = self.acquired.get(str(case_id), view)
        if found is not None and found.image.shape == tuple(shape):
            if np.allclose(found.affine, np.asarray(native_affine, dtype=np.float64), atol=1e-4):
                return found.image
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"eval.refine_sac: case {case_id} {view}: its acquired image is not on the grid the batch records; "
                "such views are measured unrefined",
                SacRefinerUnavailableWarning,
                stacklevel=3,
            )
        return None


def fit_sac_refiner(cfg: ExperimentConfig) -> Any:
    """:class:`~lss_vlm.reports.boundary.SacBoundaryRefiner` fitted on the acquired axial views of ``cfg``'s training
    split (seeded with ``train.seed``), or None with a :class:`SacRefinerUnavailableWarning` when the split has too
    few labelled sacs (e.g. a dataset without axial masks)."""
    from lss_vlm.data.acquired import AcquiredAxialViews
    from lss_vlm.errors import DataError
    from lss_vlm.reports.boundary import SacBoundaryRefiner

    try:
        training = AcquiredAxialViews(resolve_manifest(cfg.data), "train", cfg.data.views)
        return SacBoundaryRefiner.fit(training.labelled(), seed=cfg.train.seed)
    except DataError as exc:
        warnings.warn(f"eval.refine_sac: {exc}; the sac is measured as predicted", SacRefinerUnavailableWarning, 2)
        return None
