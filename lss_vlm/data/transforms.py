"""Reading and MONAI transforms of one case's views: validate → orient → resample → pad/crop → normalise → augment.

Every view is a 2D slice stored as a NIfTI of shape ``(H, W)`` or ``(H, W, 1)``. Views are turned into a
canonical display orientation (:data:`CANONICAL_AXCODES`): sagittal rows run superior→inferior and columns
anterior→posterior; axial rows run anterior→posterior and columns patient right→left (radiological convention).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    Orientationd,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
    Spacing,
    Spacingd,
    SqueezeDimd,
    Transform,
)

from ..constants import IGNORE_LABEL, LEVELS, NUM_CAUSES, NUM_LABELS, VIEWS
from ..errors import DataError
from .native_grid import RecordNativeGridd, native_grid_of

#: Orientation codes (nibabel convention: direction of increasing index) of (rows, columns, slice).
CANONICAL_AXCODES: dict[str, str] = {"sagittal": "IPR", "axial": "PLS"}
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
#: Field of view (mm) that the default target spacing maps onto ``spatial_size`` pixels.
DEFAULT_FOV_MM: dict[str, float] = {"sagittal": 205.0, "axial": 110.0}


def view_kind(view: str) -> str:
    """``"sagittal"`` or ``"axial"`` for a view name of :data:`VIEWS`."""
    return "sagittal" if view.startswith("sag") else "axial"


def image_key(view: str) -> str:
    return f"img_{view}"


def mask_key(view: str) -> str:
    return f"seg_{view}"


def resolve_target_spacing(
    spatial_size: int, target_spacing: float | Sequence[float] | Mapping[str, Any] | None
) -> dict[str, tuple[float, float]]:
    """Target in-plane spacing (row, col) in mm per view kind.

    ``None`` → :data:`DEFAULT_FOV_MM` / ``spatial_size`` (the whole field of view fits); a number or a (row, col)
    pair → the same for both kinds; a mapping → per kind (``{"sagittal": 1.6, "axial": 0.86}``).
    """

    def pair(value: Any, where: str) -> tuple[float, float]:
        values = (float(value), float(value)) if np.isscalar(value) else tuple(float(v) for v in value)
        if len(values) != 2 or min(values) <= 0:
            raise DataError(f"target_spacing {where} must be a positive number or a (row, col) pair, got {value!r}")
        return values  # type: ignore[return-value]

    if target_spacing is None:
        return {kind: (fov / spatial_size, fov / spatial_size) for kind, fov in DEFAULT_FOV_MM.items()}
    if isinstance(target_spacing, Mapping):
        unknown = set(target_spacing) - set(DEFAULT_FOV_MM)
        if unknown:
            raise DataError(f"target_spacing has unknown view kind(s) {sorted(unknown)}; use sagittal, axial")
        out = resolve_target_spacing(spatial_size, None)
        out.update({k: pair(v, k) for k, v in target_spacing.items()})
        return out
    p = pair(target_spacing, "")
    return {kind: p for kind in DEFAULT_FOV_MM}


def _read(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated / corrupt files
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3 or data.shape[2] != 1:
        raise DataError(f"{path}: expected a 2D slice (H, W) or (H, W, 1), got shape {tuple(image.shape)}")
    return nib.Nifti1Image(data, image.affine, image.header)


#: Anatomical axis of the slice normal per view kind (nibabel axis-code pairs).
SLICE_NORMAL: dict[str, tuple[str, str]] = {"sagittal": ("L", "R"), "axial": ("S", "I")}


def read_view(
    image_path: Path, mask_path: Path | None, kind: str | None = None
) -> tuple[MetaTensor, MetaTensor | None]:
    """Read and check one view's image (and mask): finite voxels, labels in 0-5, same shape and affine, and (if
    ``kind`` is given) a slice normal that fits the view (L-R for sagittal, S-I for axial).

    Returns channel-first MetaTensors ``[1, H, W, 1]`` carrying the affine. Raises :class:`DataError` naming the
    file and the problem.
    """
    image = _read(image_path, "image")
    if kind is not None:
        normal = nib.aff2axcodes(image.affine)[2]
        if normal not in SLICE_NORMAL[kind]:
            raise DataError(
                f"{image_path}: slice normal points {normal} (from the affine), but a {kind} view needs an "
                f"{'/'.join(SLICE_NORMAL[kind])} normal; check the view column or the file's affine"
            )
    data = np.asarray(image.dataobj, dtype=np.float32)
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise DataError(f"{image_path}: image has {bad} NaN/infinite voxel(s)")
    img = MetaTensor(torch.from_numpy(data[None]), affine=torch.as_tensor(image.affine, dtype=torch.float64))
    if mask_path is None:
        return img, None
    mask_image = _read(mask_path, "mask")
    labels = np.asarray(mask_image.dataobj, dtype=np.float64)
    if labels.shape != data.shape:
        raise DataError(
            f"{mask_path}: mask shape {labels.shape[:2]} does not match image {image_path} {data.shape[:2]}"
        )
    if not np.allclose(mask_image.affine, image.affine, atol=1e-3):
        raise DataError(f"{mask_path}: mask affine differs from the affine of image {image_path}")
    if not np.isfinite(labels).all():
        raise DataError(f"{mask_path}: mask has NaN/infinite voxels")
    values = np.unique(labels)
    bad_values = values[
        (values != np.round(values)) | (values < 0) | ((values >= NUM_LABELS) & (values != IGNORE_LABEL))
    ]
    if bad_values.size:
        shown = ", ".join(f"{v:g}" for v in bad_values[:5])
        raise DataError(
            f"{mask_path}: mask has label value(s) {shown} outside the label set 0-{NUM_LABELS - 1} "
            f"(and {IGNORE_LABEL} = not annotated)"
        )
    mask = MetaTensor(torch.from_numpy(labels.astype(np.float32)[None]), affine=img.affine.clone())
    return img, mask


class LoadCaseViewsd(MapTransform):
    """Replace the path entries ``img_<view>`` / ``seg_<view>`` of a case record by checked MetaTensors.

    Views whose image path is ``None`` stay absent (the later transforms skip missing keys)."""

    def __init__(self, views: Sequence[str] = VIEWS) -> None:
        super().__init__(keys=[image_key(v) for v in views], allow_missing_keys=True)
        self.views = tuple(views)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for view in self.views:
            path, mask_path = d.pop(image_key(view), None), d.pop(mask_key(view), None)
            if path is None:
                continue
            img, mask = read_view(Path(path), None if mask_path is None else Path(mask_path), view_kind(view))
            d[image_key(view)] = img
            if mask is not None:
                d[mask_key(view)] = mask
        return d


class ResampleLabelsd(MapTransform):
    """Resample label maps to a target spacing faithfully to their areas: one-hot → bilinear → argmax.

    Nearest-neighbour resampling keeps or drops whole rows of a small structure, which biases a compressed sac's
    area by up to ~40 % at 64 px; the one-hot route halves that error. Not-annotated pixels
    (:data:`~lss_vlm.constants.IGNORE_LABEL`) are one more channel and come back as ``IGNORE_LABEL``."""

    def __init__(self, keys: Sequence[str], pixdim: Sequence[float], num_classes: int = NUM_LABELS) -> None:
        super().__init__(keys=keys, allow_missing_keys=True)
        self.spacing = Spacing(pixdim=pixdim, mode="bilinear")
        self.num_classes = num_classes

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            labels = (mask.as_tensor() if isinstance(mask, MetaTensor) else mask)[0].long()
            labels = torch.where(labels == IGNORE_LABEL, self.num_classes, labels)
            onehot = torch.nn.functional.one_hot(labels, self.num_classes + 1).movedim(-1, 0).float()
            resampled = self.spacing(MetaTensor(onehot, affine=mask.affine.clone()))
            out = resampled.argmax(dim=0, keepdim=True)
            d[key] = torch.where(out == self.num_classes, IGNORE_LABEL, out).float()
        return d


class CroppedLabelsWarning(UserWarning):
    """Labelled pixels of a mask fell outside the field of view and were cropped away."""


class PadOrCropWithWarningd(MapTransform):
    """MONAI ``ResizeWithPadOrCropd`` (centre crop / symmetric pad to ``spatial_size``) that records the labelled mask
    pixels (labels 1-5) it crops away, per ``(case_id, view)``: ``lost[(case, view)] = (pixels lost, labelled pixels)``.

    :meth:`warn` issues one :class:`CroppedLabelsWarning` that counts them (``build_dataset`` calls it once the cache is
    filled); with ``warn_each`` every cropping call warns on its own (uncached datasets).
    """

    def __init__(
        self,
        keys: Sequence[str],
        spatial_size: int,
        spacing: Mapping[str, tuple[float, float]] | None = None,
        warn_each: bool = False,
    ) -> None:
        super().__init__(keys=keys, allow_missing_keys=True)
        self.inner = ResizeWithPadOrCropd(keys=keys, spatial_size=(spatial_size, spatial_size), allow_missing_keys=True)
        self.spatial_size = spatial_size
        self.spacing = dict(spacing or {})
        self.warn_each = warn_each
        self.lost: dict[tuple[str, str], tuple[int, int]] = {}

    @staticmethod
    def _labelled(mask: Any) -> int:
        labels = torch.as_tensor(mask)
        return int(((labels > 0) & (labels < NUM_LABELS)).sum())

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        masks = [k for k in self.key_iterator(dict(data)) if k.startswith("seg_")]
        before = {k: self._labelled(data[k]) for k in masks}
        d = self.inner(data)
        for key in masks:
            lost = before[key] - self._labelled(d[key])
            if lost > 0:
                self.lost[(str(data.get("case_id")), key[len("seg_") :])] = (lost, before[key])
                if self.warn_each:
                    self.warn({(str(data.get("case_id")), key[len("seg_") :]): (lost, before[key])})
        return d

    def message(self, lost: Mapping[tuple[str, str], tuple[int, int]] | None = None) -> str | None:
        """The warning text for ``lost`` (default: everything recorded), ``None`` when nothing was cropped."""
        lost = self.lost if lost is None else lost
        if not lost:
            return None
        kinds = sorted({view_kind(view) for _, view in lost})
        fov = ", ".join(
            f"{kind} {self.spatial_size * self.spacing[kind][0]:.0f} x "
            f"{self.spatial_size * self.spacing[kind][1]:.0f} mm"
            for kind in kinds
            if kind in self.spacing
        )
        (case, view), (worst, total) = max(lost.items(), key=lambda item: item[1][0] / item[1][1])
        pixels = sum(n for n, _ in lost.values())
        return (
            f"{pixels} labelled pixel(s) in {len(lost)} view(s) lie outside the field of view ({fov}) and are cropped "
            f"away (worst: case {case} {view}, {worst} of {total} labelled pixels = {100 * worst / total:.1f} %); "
            f"raise data.fov_mm.{'/'.join(kinds)} or set data.target_spacing"
        )

    def warn(self, lost: Mapping[tuple[str, str], tuple[int, int]] | None = None) -> None:
        text = self.message(lost)
        if text is not None:
            warnings.warn(text, CroppedLabelsWarning, stacklevel=2)


def deterministic_transforms(spatial_size: int, spacing: Mapping[str, tuple[float, float]]) -> list:
    """Load, canonical orientation, resampling to the target spacing, squeeze to 2D, pad/crop, normalise."""
    steps: list = [LoadCaseViewsd(VIEWS)]
    for kind in ("sagittal", "axial"):
        views = [v for v in VIEWS if view_kind(v) == kind]
        images, masks = [image_key(v) for v in views], [mask_key(v) for v in views]
        keys = images + masks
        row, col = spacing[kind]
        steps += [
            Orientationd(keys=keys, axcodes=CANONICAL_AXCODES[kind], labels=RAS_LABELS, allow_missing_keys=True),
            RecordNativeGridd(keys=images),
            Spacingd(keys=images, pixdim=(row, col, -1.0), mode="bilinear", allow_missing_keys=True),
            ResampleLabelsd(keys=masks, pixdim=(row, col, -1.0)),
        ]
    keys = [image_key(v) for v in VIEWS] + [mask_key(v) for v in VIEWS]
    images = [image_key(v) for v in VIEWS]
    steps += [
        SqueezeDimd(keys=keys, dim=3, update_meta=False, allow_missing_keys=True),
        PadOrCropWithWarningd(keys=keys, spatial_size=spatial_size, spacing=spacing),
        ScaleIntensityRangePercentilesd(
            keys=images, lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True, allow_missing_keys=True
        ),
    ]
    return steps


#: Train-time augmentation profiles (``data.augment_profile``).
AUGMENT_PROFILES: tuple[str, ...] = ("standard", "domain_randomisation")


def domain_randomisation_transforms() -> list:
    """SynthSeg-style appearance randomisation of real or phantom images (Billot et al. 2023), MONAI transforms per
    view: elastic deformation (image bilinear, mask nearest), a random monotone intensity remapping (histogram shift
    with 4-12 control points, standing in for per-label random contrast on images without complete label maps), a
    bias field, gamma in [0.5, 2], blur (0-1.5 px, thick slices) and Gaussian noise."""
    steps: list = []
    for view in VIEWS:
        pair = [image_key(view), mask_key(view)]
        steps.append(
            Rand2DElasticd(
                keys=pair,
                spacing=(24, 24),
                magnitude_range=(0.0, 2.0),
                prob=0.5,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                allow_missing_keys=True,
            )
        )
    images = [image_key(v) for v in VIEWS]
    steps += [
        RandHistogramShiftd(keys=images, num_control_points=(4, 12), prob=0.8, allow_missing_keys=True),
        RandBiasFieldd(keys=images, coeff_range=(0.0, 0.3), prob=0.5, allow_missing_keys=True),
        RandAdjustContrastd(keys=images, gamma=(0.5, 2.0), prob=0.5, allow_missing_keys=True),
        RandGaussianSmoothd(keys=images, sigma_x=(0.0, 1.5), sigma_y=(0.0, 1.5), prob=0.5, allow_missing_keys=True),
        RandGaussianNoised(keys=images, std=0.05, prob=0.5, allow_missing_keys=True),
    ]
    return steps


def augmentation_transforms(spatial_size: int, profile: str = "standard") -> list:
    """Train-time augmentation: per view a random affine (same for image and mask, nearest for the mask),
    left-right flips of axial views only (the sagittal plane has no valid flip), then intensity jitter; profile
    ``domain_randomisation`` adds :func:`domain_randomisation_transforms` after the affine."""
    if profile not in AUGMENT_PROFILES:
        raise DataError(f"augment profile {profile!r} is unknown; choose one of {', '.join(AUGMENT_PROFILES)}")
    steps: list = []
    for view in VIEWS:
        pair = [image_key(view), mask_key(view)]
        steps.append(
            RandAffined(
                keys=pair,
                prob=0.7,
                rotate_range=(np.deg2rad(10.0),),
                scale_range=(0.1, 0.1),
                translate_range=(0.05 * spatial_size, 0.05 * spatial_size),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                allow_missing_keys=True,
            )
        )
        if view_kind(view) == "axial":
            steps.append(RandFlipd(keys=pair, prob=0.5, spatial_axis=1, allow_missing_keys=True))
    if profile == "domain_randomisation":
        steps += domain_randomisation_transforms()
    images = [image_key(v) for v in VIEWS]
    steps += [
        RandScaleIntensityd(keys=images, factors=0.1, prob=0.5, allow_missing_keys=True),
        RandShiftIntensityd(keys=images, offsets=0.05, prob=0.5, allow_missing_keys=True),
        RandAdjustContrastd(keys=images, gamma=(0.8, 1.25), prob=0.3, allow_missing_keys=True),
        RandGaussianNoised(keys=images, std=0.02, prob=0.3, allow_missing_keys=True),
    ]
    return steps


def assemble_case(data: Mapping[str, Any], spatial_size: int, spacing: Mapping[str, tuple[float, float]]) -> dict:
    """Stack a transformed record into the item of the batch contract (zeros + ``*_valid=False`` when missing)."""
    n, size = len(VIEWS), spatial_size
    views = torch.zeros(n, 1, size, size, dtype=torch.float32)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    view_valid = torch.zeros(n, dtype=torch.bool)
    mask_valid = torch.zeros(n, dtype=torch.bool)
    affine = torch.full((n, 4, 4), math.nan, dtype=torch.float64)
    native_affine = torch.full((n, 4, 4), math.nan, dtype=torch.float64)
    native_shape = torch.zeros(n, 3, dtype=torch.int64)
    for i, view in enumerate(VIEWS):
        img = data.get(image_key(view))
        if img is not None:
            views[i] = torch.as_tensor(img, dtype=torch.float32).reshape(1, size, size)
            view_valid[i] = True
            if isinstance(img, MetaTensor):
                affine[i] = torch.as_tensor(img.affine, dtype=torch.float64).reshape(4, 4)
            native = native_grid_of(img)
            if native is not None:
                native_affine[i], native_shape[i] = native[0].reshape(4, 4), native[1].reshape(3)
        mask = data.get(mask_key(view))
        if mask is not None:
            labels = torch.as_tensor(mask).reshape(size, size).round().long()
            masks[i] = torch.where(labels == IGNORE_LABEL, IGNORE_LABEL, labels.clamp(0, NUM_LABELS - 1))
            mask_valid[i] = True
    spacing_t = torch.tensor([spacing[view_kind(v)] for v in VIEWS], dtype=torch.float32)
    return {
        "case_id": data["case_id"],
        "views": views,
        "masks": masks,
        "mask_valid": mask_valid,
        "view_valid": view_valid,
        "grades": torch.as_tensor(data["grades"], dtype=torch.int64),
        "areas": torch.as_tensor(data["areas"], dtype=torch.float32),
        "spacing": spacing_t,
        "affine": affine,
        "native_affine": native_affine,
        "native_shape": native_shape,
        "reports": list(data["reports"]),
        "clinical": torch.as_tensor(data["clinical"], dtype=torch.float32),
        "causes": torch.as_tensor(data.get("causes", [[math.nan] * NUM_CAUSES] * len(LEVELS)), dtype=torch.float32),
        "labelled": torch.as_tensor(data.get("labelled", [True] * NUM_LABELS), dtype=torch.bool),
    }


class DropMetad(Transform):
    """``MetaTensor`` → plain ``torch.Tensor`` for the present ``keys`` (pixels unchanged, metadata dropped)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        out = dict(data)
        for key in self.keys:
            if isinstance(out.get(key), MetaTensor):
                out[key] = out[key].as_tensor()
        return out


class AssembleCased(Transform):
    """Final step: :func:`assemble_case` (a class, not a lambda, so worker processes can pickle it)."""

    def __init__(self, spatial_size: int, spacing: Mapping[str, tuple[float, float]]) -> None:
        self.spatial_size, self.spacing = spatial_size, dict(spacing)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        return assemble_case(data, self.spatial_size, self.spacing)


def build_case_transform(
    spatial_size: int,
    spacing: Mapping[str, tuple[float, float]],
    augment: bool,
    seed: int = 0,
    augment_profile: str = "standard",
) -> Compose:
    """The whole chain of one case; MONAI's CacheDataset caches it up to the first random transform.

    With ``augment``, the cached views become plain tensors before the random transforms (:class:`DropMetad`):
    CacheDataset deep-copies every cached item for each draw, and copying MONAI's ``MetaTensor`` metadata was about
    half of the time a training epoch spent waiting for batches (``benchmarks/perf/data_wait.py``). The pixels are
    unchanged; augmented items carry a NaN ``affine`` (the random affine moves the pixels off the scanner grid, and
    training never reads it)."""
    steps = deterministic_transforms(spatial_size, spacing)
    if augment:
        steps.append(DropMetad([image_key(v) for v in VIEWS] + [mask_key(v) for v in VIEWS]))
        steps += augmentation_transforms(spatial_size, augment_profile)
    steps.append(AssembleCased(spatial_size, spacing))
    return Compose(steps).set_random_state(seed=seed)
