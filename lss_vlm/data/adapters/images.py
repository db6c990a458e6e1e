"""2D images and masks in display orientation (PNG, NumPy ``.npy``, 2D NIfTI): the simplest way to bring real slices.

Layout (``--root``)::

    images/<case>.<ext>     one 2D image per case, ext = .png, .npy, .nii or .nii.gz
    masks/<case>.<ext>      its label mask (optional per case), same shape, same or another of those formats
    cases.csv               optional: case_id plus any of patient_id, dataset, labelled_classes

**Display orientation** (the one every view of the toolkit uses, see :mod:`lss_vlm.data.readers.volume`): array
``[row, col]``, rows run superior→inferior; columns run anterior→posterior for sagittal views (patient facing left)
and patient-right→patient-left for axial views. The affine is *written from this convention* and ``pixel_spacing``
(``(row_mm, col_mm)``); any affine stored in a NIfTI file is ignored (a 2D NIfTI usually carries an identity affine,
which places a sagittal slice in the axial plane). Slice thickness is written as 4 mm (it is not used).

**Labels.** ``labels`` (``--labels 'disc=1,vertebra=2'``) maps source mask values to ours; without it masks must use
our values 0-5. 0 is background, the ``ignore_label`` value (default 255; ``ignore=V`` in ``--labels`` works too) marks
pixels that are not annotated, and any other unmapped value is an error (a forgotten ``--labels`` item, not silent
background). ``labelled_classes`` (``--labelled-classes disc,vertebral_body``, or per case in ``cases.csv``) says which
classes the masks annotate; the others are merged with background by the loss and not scored. With
``absent_means_unlabelled`` a listed class with no pixel in a case's mask counts as not annotated in that case (public
sets often label some cases partly); a mask with no annotated pixel at all is then dropped (the image stays, without
mask) and reported in the summary.

**Bad input** stops the whole command with one :class:`DataError` naming the file and the value, and nothing is
written: image and mask shapes differ, a mask value is neither mapped nor the ignore value, a ``labelled_classes``
entry names an unknown class, ``pixel_spacing`` is not a positive finite number, a file holds a 3D array.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...constants import IGNORE_LABEL, LABELS, VIEWS
from ...errors import ConfigError, DataError
from ..labels import (
    DEFAULT_IGNORE_VALUE,
    MASK_VALUE_MAX,
    MASK_VALUE_MIN,
    apply_label_mapping,
    label_index,
    parse_label_mapping,
)
from ..manifest import LABELLED_COLUMN
from ..readers.volume import DISPLAY_DIRECTIONS, Slice2D
from .base import DATASETS, CaseWriter, PrepareSummary, empty_row, progress_bar

SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".npy", ".png")
CASES_CSV = "cases.csv"
SLICE_THICKNESS_MM = 4.0


def parse_pixel_spacing(value: Any) -> tuple[float, float]:
    """``1.0`` → ``(1.0, 1.0)``; ``"0.9,1.2"`` / ``(0.9, 1.2)`` → ``(row_mm, col_mm)``. Positive and finite, else
    :class:`ConfigError` naming the value."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else np.atleast_1d(value).tolist()
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or not all(math.isfinite(n) and n > 0 for n in numbers):
        raise ConfigError(
            f"--pixel-spacing {value!r}: expected a positive, finite pixel size in mm "
            "(e.g. 1.0, or ROW,COL like 0.9,1.2)"
        )
    return numbers[0], numbers[1]


def parse_labelled_option(text: str | None, where: str = "--labelled-classes") -> str:
    """Canonical ``labelled_classes`` cell (``"vertebral_body,disc"``, label order) of user text with aliases;
    ``""`` (all labelled) for ``None``/empty. Unknown names raise :class:`ConfigError` naming the value."""
    if text is None or not str(text).strip():
        return ""
    indices = set()
    for name in filter(None, (n.strip() for n in str(text).split(","))):
        try:
            index = label_index(name)
        except ConfigError:
            raise ConfigError(
                f"{where}: unknown class {name!r}; expected names from {', '.join(LABELS[1:])} (or an alias)"
            ) from None
        if index:
            indices.add(index)
    if not indices:  # 'background' or ',' would otherwise read as the empty cell: every class labelled
        raise ConfigError(
            f"{where}: {text!r} names no foreground class; expected one or more of {', '.join(LABELS[1:])} "
            "(leave it out when every class is labelled)"
        )
    return ",".join(LABELS[i] for i in sorted(indices))


def check_ignore_label(value: Any, mapping: dict[int, int] | None) -> int:
    """``--ignore-label``: a whole source value in the 16-bit mask range that does not already mean something: not 0
    (background), not a value ``--labels`` maps to a class, and without ``--labels`` not one of our labels 1-5
    (their pixels would silently become "not annotated"). :class:`ConfigError` naming the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"--ignore-label {value!r}: expected a whole number")
    value = int(value)
    if not MASK_VALUE_MIN <= value <= MASK_VALUE_MAX or value == 0:
        raise ConfigError(
            f"--ignore-label {value}: expected a mask value from {MASK_VALUE_MIN} to {MASK_VALUE_MAX} other than 0 "
            "(background)"
        )
    if mapping is None and 0 < value < len(LABELS):
        raise ConfigError(
            f"--ignore-label {value}: without --labels the masks use our values, and {value} is {LABELS[value]}; "
            f"give a value outside 0-{len(LABELS) - 1} (default {DEFAULT_IGNORE_VALUE})"
        )
    if mapping is not None and mapping.get(value, IGNORE_LABEL) != IGNORE_LABEL:
        raise ConfigError(
            f"--ignore-label {value}: --labels maps {value} to {LABELS[mapping[value]]}; give a value --labels "
            "does not map"
        )
    return value


def display_affine(view: str, spacing: tuple[float, float]) -> np.ndarray:
    """4x4 affine of a display-oriented 2D view: ``(row, col, 0)`` → RAS mm, origin at pixel (0, 0).

    Column 0 = row direction x row_mm, column 1 = column direction x col_mm (:data:`DISPLAY_DIRECTIONS`), column 2 =
    their right-handed normal x :data:`SLICE_THICKNESS_MM` (L for sagittal, I for axial views).
    """
    row_dir, col_dir = DISPLAY_DIRECTIONS["sagittal" if view.startswith("sag") else "axial"]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[0]
    affine[:3, 1] = col_dir * spacing[1]
    affine[:3, 2] = np.cross(row_dir, col_dir) * SLICE_THICKNESS_MM
    return affine


def read_2d(path: Path, what: str = "image") -> np.ndarray:
    """The 2D array ``[row, col]`` of a PNG, ``.npy`` or 2D NIfTI (affine ignored). A colour PNG image becomes its
    luminance; a mask PNG gives its palette indices or grey values (a colour-coded mask is refused: :func:`_png_mask`).

    Raises :class:`DataError` naming the file for unreadable files and for 3D arrays (trailing unit axes are dropped).
    """
    name = path.name.lower()
    try:
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as img:
                array = _png_mask(img, path) if what == "mask" else _png_image(img)
        elif name.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            import nibabel as nib

            array = np.asanyarray(nib.load(str(path)).dataobj)
    except DataError:
        raise
    except Exception as exc:  # PIL, numpy and nibabel raise many types for corrupt files
        raise DataError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from None
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2D {what} [rows, cols], got a {array.ndim}D array of shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: {what} has non-numeric dtype {array.dtype}")
    return array


def _png_image(img: Any) -> np.ndarray:
    """An image PNG's pixels: colour (RGB, palette, with alpha) → luminance; grey and 16-bit as stored."""
    return np.asarray(img.convert("L") if img.mode in ("RGB", "RGBA", "P", "PA", "LA") else img)


def _png_mask(img: Any, path: Path) -> np.ndarray:
    """A mask PNG's label values: a palette PNG's indices (its colours are only how a viewer shows them), a grey
    PNG's values, and an RGB(A) PNG only when it is grey (R = G = B); a colour-coded mask is a :class:`DataError`
    (its luminance would be an arbitrary number, not a label)."""
    if img.mode in ("P", "PA"):
        indices = np.asarray(img)
        return indices[..., 0] if img.mode == "PA" else indices
    if img.mode in ("LA", "RGB", "RGBA"):
        bands = np.asarray(img.convert("RGB"))
        if not (np.array_equal(bands[..., 0], bands[..., 1]) and np.array_equal(bands[..., 0], bands[..., 2])):
            raise DataError(
                f"{path}: colour-coded mask ({img.mode} PNG with R, G, B differing); masks hold label values: save "
                "it as a greyscale or palette PNG, or as .npy"
            )
        return bands[..., 0]
    return np.asarray(img)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _files(folder: Path) -> dict[str, Path]:
    """``{case: path}`` of the supported files of a folder; two files of one case is an error."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.lower().endswith(SUFFIXES):
            continue
        case = _stem(path)
        if case in found:
            raise DataError(f"{folder}: two files for case {case!r} ({found[case].name}, {path.name})")
        found[case] = path
    return found


@DATASETS.register("images")
class ImagesAdapter:
    """2D images + masks in display orientation (see the module docstring)."""

    def __init__(
        self,
        view: str = "sag_t2",
        pixel_spacing: Any = None,
        labels: str | None = None,
        labelled_classes: str | None = None,
        ignore_label: int | None = None,
        absent_means_unlabelled: bool = False,
        dataset_name: str = "images",
        seed: int = 0,
    ) -> None:
        if view not in VIEWS:
            raise ConfigError(f"--view {view!r}: expected one of {', '.join(VIEWS)}")
        if pixel_spacing is None:
            raise ConfigError("--pixel-spacing is required for 'images' (PNG/NumPy files carry no geometry)")
        self.view = view
        self.spacing = parse_pixel_spacing(pixel_spacing)
        self.mapping = parse_label_mapping(labels) if labels else None
        if labelled_classes is not None and not str(labelled_classes).strip():
            raise ConfigError("--labelled-classes: empty; name the annotated classes or leave the option out")
        self.labelled = parse_labelled_option(labelled_classes)
        if ignore_label is None:
            self.ignore_value = DEFAULT_IGNORE_VALUE  # a value --labels maps wins over it (labels.apply_label_mapping)
        else:
            self.ignore_value = check_ignore_label(ignore_label, self.mapping)
        self.absent_means_unlabelled = bool(absent_means_unlabelled)
        self.dataset_name = dataset_name
        self.seed = seed

    def collect(self, root: Path, writer: CaseWriter, summary: PrepareSummary, progress: bool) -> list[dict[str, Any]]:
        images, masks = _files(root / "images"), _files(root / "masks")
        if not images:
            raise DataError(f"{root}: no images/<case>.png|.npy|.nii(.gz) files (see docs/datasets.md, 'images')")
        extra = self._cases_table(root / CASES_CSV)
        summary.found.update({"images": len(images), "masks": len(masks)})
        for case in sorted(set(masks) - set(images)):
            summary.skip(f"case {case}", f"{masks[case].name}: mask without an image")
        rows = []
        for case in progress_bar(sorted(images), progress, total=len(images), desc="images"):
            rows.append(self._case(case, images[case], masks.get(case), extra.get(case, {}), writer, summary))
        return rows

    def _cases_table(self, path: Path) -> dict[str, dict[str, str]]:
        if not path.is_file():
            return {}
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV ({exc})") from None
        allowed = {"case_id", "patient_id", "dataset", LABELLED_COLUMN}
        unknown = sorted(set(df.columns) - allowed)
        if "case_id" not in df.columns or unknown:
            raise DataError(f"{path}: expected columns case_id and any of patient_id, dataset, {LABELLED_COLUMN}")
        table = {}
        for _, row in df.iterrows():
            entry = {k: str(row[k]).strip() for k in allowed - {"case_id"} if k in row.index}
            if LABELLED_COLUMN in entry:
                entry[LABELLED_COLUMN] = parse_labelled_option(entry[LABELLED_COLUMN], f"{path}: case {row['case_id']}")
            table[str(row["case_id"]).strip()] = entry
        return table

    def _case(
        self,
        case: str,
        image_path: Path,
        mask_path: Path | None,
        extra: dict[str, str],
        writer: CaseWriter,
        summary: PrepareSummary,
    ) -> dict[str, Any]:
        image = read_2d(image_path, "image").astype(np.float32)
        if not np.isfinite(image).all():
            raise DataError(f"{image_path}: image has {int((~np.isfinite(image)).sum())} NaN/infinite pixel(s)")
        row = empty_row(case, extra.get("patient_id") or case, extra.get("dataset") or self.dataset_name)
        affine = display_affine(self.view, self.spacing)
        mask = None
        labelled = extra.get(LABELLED_COLUMN) or self.labelled
        if mask_path is not None:
            raw = read_2d(mask_path, "mask")
            if raw.shape != image.shape:
                raise DataError(f"{mask_path}: mask shape {raw.shape} does not match image {image_path} {image.shape}")
            if raw.dtype.kind == "f" and not np.isfinite(raw).all():
                raise DataError(f"{mask_path}: mask has NaN/infinite values")
            mask = apply_label_mapping(raw, self.mapping, str(mask_path), self.ignore_value, strict=True)
            labelled = self._labelled_of(mask, labelled, mask_path)
            if labelled is None:
                summary.skip(f"case {case}", f"{mask_path.name}: no annotated pixel; image kept without mask")
                mask = None
                labelled = ""
        row[LABELLED_COLUMN] = labelled
        cells = writer.write(
            case,
            self.view,
            Slice2D(image, affine),
            None if mask is None else Slice2D(mask, affine.copy()),
            source=str(image_path),
        )
        row.update(cells)
        return row

    def _labelled_of(self, mask: np.ndarray, labelled: str, mask_path: Path) -> str | None:
        """The case's ``labelled_classes`` cell; ``None`` when nothing in the mask is annotated.

        A mask value outside the listed classes is an error (the mask contradicts ``labelled_classes``).
        """
        present = {int(v) for v in np.unique(mask)} - {0, IGNORE_LABEL}
        listed = {LABELS.index(n) for n in labelled.split(",") if n} if labelled else set(range(1, len(LABELS)))
        outside = sorted(present - listed)
        if outside:
            raise DataError(
                f"{mask_path}: mask has {LABELS[outside[0]]} pixels but labelled_classes is {labelled!r}; "
                "add the class to --labelled-classes or fix the mask"
            )
        if not self.absent_means_unlabelled:
            return labelled
        kept = sorted(listed & present)
        if not kept:
            return None
        return ",".join(LABELS[i] for i in kept)
