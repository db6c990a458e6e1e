"""SPIDER lumbar spine MRI segmentation dataset (van der Graaf et al., Sci Data 2024; Zenodo, CC-BY 4.0) → manifest.

Layout (``--root``, the Zenodo archives unpacked)::

    images/<patient>_t1.mha, images/<patient>_t2.mha, images/<patient>_t2_SPACE.mha   sagittal 3D series
    masks/<same names>.mha                                                            label volumes, same grid
    radiological_gradings.csv   (optional) Patient, IVD label (1 = L5-S1 ... 5 = L1-L2), Modic, UP endplate,
                                LOW endplate, Spondylolisthesis, Disc herniation, Disc narrowing, Disc bulging,
                                Pfirrman grade
    overview.csv                (optional, not used)

Mask values: 0 background; 1-25 vertebrae counted from the bottom (L5 = 1); 100 spinal canal; 101-125 partially
visible vertebrae; 201-225 intervertebral discs (L5-S1 = 201, L4-L5 = 202, ..., L1-L2 = 205). Default mapping
(:data:`SPIDER_LABELS`): vertebrae and partial vertebrae → ``vertebral_body``; canal → ``thecal_sac``; discs →
``disc``. SPIDER labels each vertebra as a whole, so the vertebral body and the posterior elements cannot be
separated: the whole vertebra becomes ``vertebral_body``, and ``posterior_elements`` / ``ligamentum_flavum`` never
occur in SPIDER masks (their Dice is reported as absent, not zero). ``--labels`` overrides the mapping.

Views: ``sag_t1`` / ``sag_t2`` = the sagittal slice through the centre of the spinal canal (T2 falls back to
T2 SPACE). ``ax_<level>`` = an oblique axial plane resliced from the T2 volume (T1 if there is no T2) through the
centre of that level's disc, perpendicular to the disc's thinnest principal axis, 100 mm field of view, square pixels
of the volume's finest spacing (≥ 0.5 mm), linear interpolation for the image and nearest neighbour for the mask.
Sagittal slices are 3-4 mm thick in SPIDER, so resliced axial views are blurred left-right. Per level
``meta_canal_area_mm2_<level>`` is the spinal-canal area on that axial view (canal, not dural sac: it is not used
for grades), and the gradings become ``meta_<grading>_<level>``. There are no stenosis grades and no reports:
grade and text metrics are not scored on SPIDER.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...constants import AXIAL_VIEW_OF_LEVEL, LABEL_INDEX, level_key
from ...errors import DataError
from ..labels import parse_label_mapping
from ..readers import read_itk
from ..readers.volume import (
    ANTERIOR_TO_POSTERIOR,
    PLANE_NORMALS,
    Slice2D,
    Volume,
    orient_display,
    plane_affine,
    resample_to_plane,
)
from .base import DATASETS, CaseWriter, PrepareSummary, empty_row, progress_bar, skipping
from .views import display_slice, mapped_mask, mask_on_view, middle_index

SPIDER_LABELS = "vertebral_body=1-25,vertebral_body=101-125,thecal_sac=100,disc=201-225"
CANAL_VALUE = 100
#: SPIDER disc value → our level.
DISC_LEVEL: dict[int, str] = {201: "L5-S1", 202: "L4-L5", 203: "L3-L4", 204: "L2-L3", 205: "L1-L2"}
#: SPIDER gradings "IVD label" → our level.
IVD_LEVEL: dict[int, str] = {value - 200: level for value, level in DISC_LEVEL.items()}
GRADINGS: dict[str, str] = {
    "Modic": "modic",
    "UP endplate": "up_endplate",
    "LOW endplate": "low_endplate",
    "Spondylolisthesis": "spondylolisthesis",
    "Disc herniation": "disc_herniation",
    "Disc narrowing": "disc_narrowing",
    "Disc bulging": "disc_bulging",
    "Pfirrman grade": "pfirrmann",
}
AXIAL_FOV_MM = 100.0
MIN_PIXEL_MM = 0.5
_NAME = re.compile(r"^(?P<patient>\d+)_(?P<series>t1|t2|t2_SPACE)\.mha$", re.IGNORECASE)


@DATASETS.register("spider")
class SpiderAdapter:
    """SPIDER (see the module docstring)."""

    def __init__(self, seed: int = 0, labels: str | None = None) -> None:
        self.seed = seed
        self.mapping = parse_label_mapping(labels or SPIDER_LABELS)

    def collect(self, root: Path, writer: CaseWriter, summary: PrepareSummary, progress: bool) -> list[dict[str, Any]]:
        images = root / "images"
        if not images.is_dir():
            raise DataError(f"{images}: folder not found (expected the SPIDER layout images/ + masks/)")
        series: dict[str, dict[str, Path]] = {}
        for path in sorted(images.iterdir()):
            match = _NAME.match(path.name)
            if match is None:
                summary.skip(str(path.name), "not a SPIDER image name (<patient>_t1.mha, _t2.mha or _t2_SPACE.mha)")
                continue
            series.setdefault(match["patient"], {})[match["series"].lower()] = path
        summary.found.update(patients=len(series), series=sum(len(s) for s in series.values()))
        gradings = self._gradings(root, summary)
        rows = []
        patients = sorted(series, key=int)
        for patient in progress_bar(patients, progress, total=len(patients), desc="spider"):
            with writer.case(patient, item=f"patient {patient}"):
                rows.append(self._patient(patient, series[patient], root, gradings.get(patient, {}), writer, summary))
        return rows

    def _gradings(self, root: Path, summary: PrepareSummary) -> dict[str, dict[str, Any]]:
        path = root / "radiological_gradings.csv"
        if not path.is_file():
            summary.note("radiological_gradings.csv not found: no meta_<grading>_<level> columns")
            return {}
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV ({exc})") from None
        missing = [c for c in ("Patient", "IVD label") if c not in df.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        out: dict[str, dict[str, Any]] = {}
        for _, row in df.iterrows():
            try:
                level = IVD_LEVEL.get(int(float(row["IVD label"])))
            except ValueError:
                summary.skip(f"{path.name} patient {row['Patient']}", f"IVD label {row['IVD label']!r} is not a number")
                continue
            if level is None:  # thoracic discs: not one of our levels
                continue
            cells = out.setdefault(str(row["Patient"]).strip(), {})
            for column, key in GRADINGS.items():
                if column in df.columns and str(row[column]).strip() != "":
                    cells[f"meta_{key}_{level_key(level)}"] = pd.to_numeric(row[column], errors="coerce")
        return out

    def _patient(
        self,
        patient: str,
        files: dict[str, Path],
        root: Path,
        gradings: dict[str, Any],
        writer: CaseWriter,
        summary: PrepareSummary,
    ) -> dict[str, Any]:
        row = empty_row(patient, patient, "spider")
        row.update(gradings)
        loaded: dict[str, tuple[Volume, Volume | None, Volume | None]] = {}
        for view, names in (("sag_t1", ("t1",)), ("sag_t2", ("t2", "t2_space"))):
            name = next((n for n in names if n in files), None)
            if name is None:
                continue
            with skipping(summary, f"patient {patient} {files[name].name}"):
                image, raw = self._load(files[name], root, summary)
                mapped = mapped_mask(raw, self.mapping) if raw is not None else None
                loaded[view] = (image, raw, mapped)
                row.update(self._sagittal(patient, view, image, raw, mapped, writer))
        source = loaded.get("sag_t2") or loaded.get("sag_t1")
        if source is None:
            raise DataError(f"patient {patient}: no readable T1 or T2 image")
        image, raw, mapped = source
        if raw is None or mapped is None:
            summary.note("patients without masks get no axial views (the disc levels come from the masks)")
        else:
            for value, level in DISC_LEVEL.items():
                if not np.any(raw.data == value):
                    continue
                with skipping(summary, f"patient {patient} {level} axial reslice"):
                    axial, axial_mask = self._axial(image, raw, mapped, value)
                    row.update(writer.write(patient, AXIAL_VIEW_OF_LEVEL[level], axial, axial_mask))
                    canal = axial_mask.array == LABEL_INDEX["thecal_sac"]
                    row[f"meta_canal_area_mm2_{level_key(level)}"] = float(canal.sum() * np.prod(axial.spacing))
        return row

    def _load(self, image_path: Path, root: Path, summary: PrepareSummary) -> tuple[Volume, Volume | None]:
        image = read_itk(image_path)
        mask_path = root / "masks" / image_path.name
        if not mask_path.is_file():
            summary.skip(f"{mask_path.relative_to(root)}", "mask not found; image kept without mask")
            return image, None
        raw = read_itk(mask_path)
        if raw.data.shape != image.data.shape or not np.allclose(raw.affine, image.affine, atol=1e-2):
            raise DataError(f"{mask_path}: mask grid {raw.data.shape} does not match its image {image.data.shape}")
        return image, raw

    def _sagittal(
        self, patient: str, view: str, image: Volume, raw: Volume | None, mapped: Volume | None, writer: CaseWriter
    ) -> dict[str, str]:
        axis = image.axis_along(PLANE_NORMALS["sagittal"])
        canal = raw.data == CANAL_VALUE if raw is not None else None
        index = middle_index(image, axis, canal)
        sag = display_slice(image, "sagittal", index, axis)
        seg = mask_on_view(mapped, image, sag, axis, index, "sagittal") if mapped is not None else None
        return writer.write(patient, view, sag, seg)

    def _axial(self, image: Volume, raw: Volume, mapped: Volume, disc_value: int) -> tuple[Slice2D, Slice2D]:
        """Oblique axial image + mapped mask through the centre of one disc, perpendicular to its thinnest axis."""
        points = image.voxel_to_world(np.argwhere(raw.data == disc_value).astype(float))
        centre = points.mean(axis=0)
        if len(points) < 4:
            raise DataError(f"{raw.source}: disc {disc_value} has only {len(points)} voxels; cannot fit its plane")
        _, vectors = np.linalg.eigh(np.cov((points - centre).T))
        normal = vectors[:, 0] * (1 if vectors[2, 0] >= 0 else -1)  # thinnest axis, pointing superior
        canal = image.voxel_to_world(np.argwhere(raw.data == CANAL_VALUE).astype(float))
        near = canal[np.abs((canal - centre) @ normal) < 10.0] if len(canal) else canal
        middle = (centre + near.mean(axis=0)) / 2 if len(near) else centre
        middle = middle - ((middle - centre) @ normal) * normal  # keep the centre in the disc's plane
        row_dir = ANTERIOR_TO_POSTERIOR - (ANTERIOR_TO_POSTERIOR @ normal) * normal
        col_dir = np.cross(row_dir / np.linalg.norm(row_dir), normal)
        pixel = max(min(image.spacing), MIN_PIXEL_MM)
        size = int(round(AXIAL_FOV_MM / pixel))
        affine = plane_affine(middle, row_dir, col_dir, (size, size), pixel)
        axial = orient_display(resample_to_plane(image, affine, (size, size), order=1), "axial")
        mask = orient_display(resample_to_plane(mapped, affine, (size, size), order=0), "axial")
        return axial, mask
