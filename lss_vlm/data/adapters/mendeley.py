"""Mendeley "Lumbar Spine MRI Dataset" (Sudirman et al., doi:10.17632/k57fr854j2, CC BY 4.0) axial label images.

The dataset gives, per patient, axial T2 slices through the last three disc levels (L3-L4, L4-L5, L5-S1) and label
images that classify each pixel as IVD (disc), PE (posterior element), TS (thecal sac) or AAP (area between the
anterior and posterior elements). Expected layout (``--root``; one folder per patient)::

    <patient>/<level>.<ext>            the axial T2 slice of that level: .dcm, .png, .tif, .nii(.gz) or .mha
    <patient>/<level>_label.png        its label image (any name containing "label" or "mask" and the level)

``<level>`` is written ``L3-L4``, ``L3_L4``, ``L3L4``, ``L4-L5`` ... ``L5-S1`` (or ``L5S``), case-insensitive.
Label coding (:data:`MENDELEY_LABELS`, override with ``--labels``): 1 IVD → ``disc``, 2 PE →
``posterior_elements``, 3 TS → ``thecal_sac``, 4 AAP → background (the AAP region mixes epidural fat, nerve roots and
ligament; it is not one of our structures). A label image with other values is skipped with a message.
DICOM slices keep their geometry; PNG/TIF slices carry none, so they get square ``pixel_spacing`` mm pixels
(default 0.6875 mm = 220 mm / 320 px) in standard axial orientation. There are no sagittal views (``img_sag_*`` empty,
the loader yields zero images with ``view_valid`` False), no grades and no reports: only segmentation is scored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...constants import AXIAL_VIEW_OF_LEVEL
from ...errors import ConfigError, DataError
from ..labels import parse_label_mapping
from ..readers import read_volume
from ..readers.volume import ANTERIOR_TO_POSTERIOR, RIGHT_TO_LEFT, SUPERIOR_TO_INFERIOR, Volume
from .base import DATASETS, CaseWriter, PrepareSummary, empty_row, progress_bar, skipping
from .views import display_slice, mapped_mask, mask_on_view, slice_axis

MENDELEY_LABELS = "disc=1,posterior_elements=2,thecal_sac=3,background=4"
MENDELEY_LEVELS: tuple[str, ...] = ("L3-L4", "L4-L5", "L5-S1")
DEFAULT_PIXEL_MM = 0.6875
GEOMETRY_FREE = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
IMAGE_SUFFIXES = (".dcm", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd") + GEOMETRY_FREE
_LEVEL = re.compile(r"L([345])[-_ ]?(L[45]|S1?)(?![0-9])", re.IGNORECASE)


def level_of_name(name: str) -> str | None:
    """The disc level named in a file name (``'0001_L4_L5_label.png'`` → ``'L4-L5'``), None if none."""
    match = _LEVEL.search(name)
    if match is None:
        return None
    upper, lower = f"L{match[1]}", match[2].upper()
    level = f"{upper}-{'S1' if lower.startswith('S') else lower}"
    return level if level in MENDELEY_LEVELS else None


def _is_label(name: str) -> bool:
    lower = name.lower()
    return "label" in lower or "mask" in lower


@DATASETS.register("mendeley")
class MendeleyAdapter:
    """Mendeley Lumbar Spine MRI axial label images (see the module docstring)."""

    def __init__(self, seed: int = 0, labels: str | None = None, pixel_spacing: float = DEFAULT_PIXEL_MM) -> None:
        if not 0 < pixel_spacing < float("inf"):
            raise ConfigError(f"pixel_spacing must be a positive, finite number of mm, got {pixel_spacing!r}")
        self.seed = seed
        self.mapping = parse_label_mapping(labels or MENDELEY_LABELS)
        self.pixel_spacing = float(pixel_spacing)

    def collect(self, root: Path, writer: CaseWriter, summary: PrepareSummary, progress: bool) -> list[dict[str, Any]]:
        if not root.is_dir():
            raise DataError(f"{root}: expected a folder with one sub-folder per patient")
        patients = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        summary.found["patients"] = len(patients)
        rows = []
        for folder in progress_bar(patients, progress, total=len(patients), desc="mendeley"):
            with writer.case(folder.name, item=f"patient {folder.name}"):
                rows.append(self._patient(folder, writer, summary))
        return rows

    def _patient(self, folder: Path, writer: CaseWriter, summary: PrepareSummary) -> dict[str, Any]:
        images: dict[str, Path] = {}
        labels: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            level = level_of_name(path.name)
            if level is None or not path.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            target = labels if _is_label(path.name) else images
            if level in target:
                raise DataError(
                    f"{folder}: two {'label' if target is labels else 'image'} files for {level} "
                    f"({target[level].name}, {path.name})"
                )
            target[level] = path
        if not images:
            raise DataError(f"{folder}: no axial image named after a level (L3-L4, L4-L5, L5-S1)")
        row = empty_row(folder.name, folder.name, "mendeley")
        for level, image_path in images.items():
            with skipping(summary, f"patient {folder.name} {level}"):
                label_path = labels.get(level)
                if label_path is None:
                    summary.skip(f"patient {folder.name} {level}", "label image not found; image kept without mask")
                row.update(self._view(folder.name, level, image_path, label_path, writer))
        for level in sorted(set(labels) - set(images)):
            summary.skip(f"patient {folder.name} {level}", f"{labels[level].name}: label image without an image")
        if not any(row[f"img_{AXIAL_VIEW_OF_LEVEL[lv]}"] for lv in MENDELEY_LEVELS):
            raise DataError(f"{folder}: no usable axial image")
        return row

    def _read(self, path: Path) -> Volume:
        volume = read_volume(path)
        if path.name.lower().endswith(GEOMETRY_FREE):
            affine = np.eye(4)
            affine[:3, 0] = RIGHT_TO_LEFT * self.pixel_spacing  # i = image column: patient right -> left
            affine[:3, 1] = ANTERIOR_TO_POSTERIOR * self.pixel_spacing  # j = image row: anterior -> posterior
            affine[:3, 2] = SUPERIOR_TO_INFERIOR * 4.0  # one 4 mm axial slice
            volume = Volume(volume.data, affine, volume.source)
        return volume

    def _view(
        self, patient: str, level: str, image_path: Path, label_path: Path | None, writer: CaseWriter
    ) -> dict[str, str]:
        volume = self._read(image_path)
        if volume.data.shape[2] != 1:
            raise DataError(f"{image_path}: expected one axial slice, got {volume.data.shape[2]} slices")
        image = display_slice(volume, "axial")
        mask = None
        if label_path is not None:
            raw = self._read(label_path)
            if raw.data.shape != volume.data.shape:
                raise DataError(
                    f"{label_path}: label image {raw.data.shape[:2]} does not match its image {volume.data.shape[:2]}"
                )
            if label_path.name.lower().endswith(GEOMETRY_FREE):
                raw = Volume(raw.data, volume.affine, raw.source)  # drawn on the image's pixel grid
            unknown = sorted(set(np.unique(raw.data).tolist()) - set(self.mapping) - {0})
            if unknown:
                raise DataError(
                    f"{label_path}: label value(s) {unknown[:6]} are not in the label coding "
                    f"({MENDELEY_LABELS}); pass --labels to map them"
                )
            mapped = mapped_mask(raw, self.mapping)
            mask = mask_on_view(mapped, volume, image, slice_axis(volume, "axial"), 0, "axial")
        return writer.write(patient, AXIAL_VIEW_OF_LEVEL[level], image, mask)
