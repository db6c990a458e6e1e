"""A learned refinement of the thecal sac's boundary on the acquired pixel grid, where its area is measured.

A report quotes the dural-sac area as the acquired sac pixels x the pixel area, rounded to the mm²: one wrong pixel
(2.2-3.8 mm² on the `standard` phantom) changes the number. The segmentation network predicts on its own grid, and
its probabilities brought back to the acquired grid (:func:`lss_vlm.data.native_grid.to_native_grid`) leave about
4.6 wrong sac pixels per level on the `standard` phantom's test split. A pixel classifier that reads the acquired
intensities themselves does better at the boundary: the partial-volume blur gives a boundary pixel a signature in its
neighbours, which a network fed resampled images does not see (docs/results.md, "The sac boundary on the acquired
pixels").

:class:`SacBoundaryRefiner` is that classifier: scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
(the library; what this module adds is the sampling, the features and the rule that merges its answer into the
label map). It is fitted on the training split's acquired axial views: every pixel within ``band_px`` of the true
sac is a sample, its features the ``(2 radius + 1)²`` intensities around it, the acquired image scaled by its 0.5th
and 99.5th percentiles to 0-1 (clipped; the loader's scaling, applied to the acquired image). At evaluation,
:meth:`SacBoundaryRefiner.refine` re-decides the ring of pixels within ``band_px`` of the *predicted* sac's edge,
inside and out, and keeps the predicted sac deeper inside (the network says where the sac is, the classifier where
its edge runs); the other classes keep their argmax, as in :func:`lss_vlm.reports.composer.measurement_labels`. A
view whose refined sac is less than half or more than twice the predicted one keeps the prediction
(:data:`MAX_AREA_RATIO`: the classifier reads a contrast it was not fitted on, e.g. another scanner).

Fitting is deterministic (``random_state``) and takes seconds, so a run refits it when it is evaluated instead of
storing a pickled model (loading pickles from a results folder would run arbitrary code).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from ..constants import LABEL_INDEX, NUM_LABELS
from ..errors import DataError
from .composer import measurement_labels, with_sac

SAC = LABEL_INDEX["thecal_sac"]
#: Fewest training views with a sac pixel needed to fit the refiner, and fewest samples of each class.
MIN_TRAINING_VIEWS, MIN_CLASS_SAMPLES = 5, 50
#: A refined sac outside [predicted / ratio, predicted x ratio] pixels is discarded for the prediction.
MAX_AREA_RATIO = 2.0


def scale_intensity(image: np.ndarray) -> np.ndarray | None:
    """The loader's intensity scaling (MONAI ``ScaleIntensityRangePercentiles(0.5, 99.5, 0, 1, clip=True)``); None
    for an image without contrast (its 0.5th and 99.5th percentiles equal).

    Raises:
        ValueError: the image has a non-finite value."""
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise ValueError("sac boundary refiner: the image has non-finite values")
    low, high = np.percentile(image, [0.5, 99.5])
    if high - low <= 1e-6 * max(abs(float(high)), 1.0):
        return None
    return np.clip((image - low) / float(high - low), 0.0, 1.0)


def patch_features(image: np.ndarray, where: np.ndarray, radius: int) -> np.ndarray:
    """``[n, (2 radius + 1)²]``: the intensities of the window centred on each pixel of ``where`` (edge-padded)."""
    side = 2 * radius + 1
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(image, radius, mode="edge"), (side, side))
    return windows[where].reshape(int(where.sum()), side * side)


def band(mask: np.ndarray, band_px: int) -> np.ndarray:
    """``mask`` dilated by ``band_px`` ≥ 1 pixels (8-connected): the training samples around a true sac."""
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=band_px)


def ring(mask: np.ndarray, band_px: int) -> np.ndarray:
    """Pixels within ``band_px`` of ``mask``'s edge, inside and out: where :meth:`SacBoundaryRefiner.refine` decides."""
    inner = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=band_px, border_value=1)
    return band(mask, band_px) & ~inner


def _check_sizes(radius: int, band_px: int) -> None:
    if int(radius) < 0 or int(band_px) < 1:
        raise ValueError(f"sac boundary refiner: radius must be >= 0 and band_px >= 1, got {radius} and {band_px}")


class SacBoundaryRefiner:
    """Re-decide the thecal-sac pixels near a predicted sac from the acquired intensities (see the module docstring).

    Args:
        classifier: a fitted scikit-learn classifier with ``predict`` (sac = True).
        radius: half-width of the intensity window, pixels (3 = 7 x 7).
        band_px: how far from the sac (true when fitting, predicted when refining) pixels are decided.
    """

    def __init__(self, classifier: object, radius: int = 3, band_px: int = 3) -> None:
        _check_sizes(radius, band_px)
        self.classifier, self.radius, self.band_px = classifier, int(radius), int(band_px)

    @classmethod
    def fit(
        cls, views: Iterable[tuple[np.ndarray, np.ndarray]], radius: int = 3, band_px: int = 3, seed: int = 0
    ) -> SacBoundaryRefiner:
        """Fit on ``(image [H, W], label map [H, W])`` pairs of acquired axial views (views without sac pixels are
        skipped; not-annotated pixels, :data:`~lss_vlm.constants.IGNORE_LABEL`, give no sample).

        Raises:
            DataError: fewer than :data:`MIN_TRAINING_VIEWS` views have a sac pixel, or the samples hold fewer than
                :data:`MIN_CLASS_SAMPLES` sac or non-sac pixels (e.g. only the sac was annotated).
            ValueError: ``radius`` < 0, ``band_px`` < 1, or an image has non-finite values.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier

        _check_sizes(radius, band_px)
        features, targets = [], []
        for image, labels in views:
            labels, scaled = np.asarray(labels), scale_intensity(image)
            sac = labels == SAC
            if sac.any() and scaled is not None:
                region = band(sac, band_px) & (labels >= 0) & (labels < NUM_LABELS)  # not-annotated pixels: no sample
                features.append(patch_features(scaled, region, radius))
                targets.append(sac[region])
        if len(features) < MIN_TRAINING_VIEWS:
            raise DataError(
                f"sac boundary refiner: {len(features)} training view(s) with a labelled thecal sac; "
                f"it needs at least {MIN_TRAINING_VIEWS}"
            )
        y = np.concatenate(targets)
        if min(int(y.sum()), int((~y).sum())) < MIN_CLASS_SAMPLES:
            raise DataError(
                f"sac boundary refiner: {int(y.sum())} sac and {int((~y).sum())} non-sac training pixels near the "
                f"sacs; it needs at least {MIN_CLASS_SAMPLES} of each (are the pixels around the sac annotated?)"
            )
        # early stopping on a held-out 10 % of the pixels (seeded), at most 300 iterations
        classifier = HistGradientBoostingClassifier(max_iter=300, early_stopping=True, random_state=seed)
        classifier.fit(np.concatenate(features), y)
        return cls(classifier, radius, band_px)

    def refine(self, image: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """The label map ``[H, W]`` the composer measures, with the sac re-decided near the predicted one.

        Args:
            image: ``[H, W]`` acquired intensities (any scale).
            probabilities: ``[C, H, W]`` class probabilities on the same grid.

        Raises:
            ValueError: the image and the probabilities are not on the same ``H x W`` grid, or the image has
                non-finite values. An image without contrast returns the unrefined label map.
        """
        image, probabilities = np.asarray(image), np.asarray(probabilities)
        if image.shape != probabilities.shape[1:]:
            raise ValueError(
                f"refine: image {image.shape} and probabilities {probabilities.shape[1:]} are on different grids"
            )
        labels = measurement_labels(probabilities)
        predicted = labels == SAC
        scaled = scale_intensity(image)
        if not predicted.any() or scaled is None:
            return labels
        region = ring(predicted, self.band_px)
        sac = predicted & ~region
        sac[region] = np.asarray(self.classifier.predict(patch_features(scaled, region, self.radius)), dtype=bool)
        if not 1 / MAX_AREA_RATIO <= sac.sum() / predicted.sum() <= MAX_AREA_RATIO:
            return labels
        return with_sac(probabilities, sac)
