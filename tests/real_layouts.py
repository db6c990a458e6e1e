"""Tiny fake datasets in the exact on-disk layouts of the real ones (RSNA 2024, SPIDER, Mendeley, NIfTI manifests).

Used by tests/test_readers.py and tests/test_adapters.py; also runnable to get a layout to try ``lss-bench prepare``
on: ``python tests/real_layouts.py rsna2024 /tmp/rsna`` (datasets: nifti, rsna2024, spider, mendeley).
The anatomy is a cartoon (a bright disc block and a canal stripe at known patient positions), the geometry is real.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

LEVEL_CODES = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
RSNA_LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
CONDITIONS = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
#: Superior-inferior (RAS z, mm) position of each level's disc in the fake patients; canal at RAS y = -15.
LEVEL_Z_MM = (48.0, 24.0, 0.0, -24.0, -48.0)
CANAL_Y_MM = -15.0

# Orientations as DICOM ImageOrientationPatient (LPS): column direction X then row direction Y.
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # columns run to posterior, rows run to inferior
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # columns run to the left, rows run to posterior


def _ds(values: Sequence[float]) -> list[str]:
    return [f"{float(v):.10g}"[:16] for v in values]


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float],
    spacing: Sequence[float] | None = (1.0, 1.0),
    instance: int = 1,
    slope: float = 1.0,
    intercept: float = 0.0,
    thickness: float = 4.0,
    description: str = "",
    series_uid: str | None = None,
) -> Path:
    """Write one MR instance (uint16 ``stored[rows, cols]``). ``spacing=None`` leaves PixelSpacing out."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid or generate_uid()
    ds.Modality, ds.PatientID, ds.SeriesDescription = "MR", "anon", description
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = _ds(position)
    ds.ImageOrientationPatient = _ds(orientation)
    if spacing is not None:
        ds.PixelSpacing = _ds(spacing)
    ds.SliceThickness = _ds([thickness])[0]
    ds.RescaleSlope, ds.RescaleIntercept = _ds([slope])[0], _ds([intercept])[0]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def lps_point(
    position: Sequence[float], orientation: Sequence[float], spacing: Sequence[float], row: float, col: float
) -> np.ndarray:
    """LPS mm of pixel (row, col) by the DICOM formula (the reference the readers are tested against)."""
    x, y = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return np.asarray(position, float) + col * spacing[1] * x + row * spacing[0] * y


def ras_to_lps(p: Sequence[float]) -> np.ndarray:
    return np.array([-p[0], -p[1], p[2]], dtype=float)


def _pixel_of(
    position: Sequence[float], orientation: Sequence[float], spacing: Sequence[float], ras: Sequence[float]
) -> tuple[float, float]:
    """(row, col) of a RAS point on an instance plane."""
    offset = ras_to_lps(ras) - np.asarray(position, float)
    x, y = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return float(offset @ y / spacing[0]), float(offset @ x / spacing[1])


def _cartoon(shape: tuple[int, int], rng: np.random.Generator, centre: tuple[float, float] | None = None) -> np.ndarray:
    image = rng.normal(300, 20, size=shape).clip(0, 4000)
    if centre is not None:
        r, c = np.ogrid[: shape[0], : shape[1]]
        image[(r - centre[0]) ** 2 + (c - centre[1]) ** 2 < 9] = 1500
    return image.astype(np.uint16)


# -- RSNA 2024 -------------------------------------------------------------------------------------------------------
def _sagittal_series(
    folder: Path,
    rng: np.random.Generator,
    description: str,
    n: int = 5,
    size: int = 48,
    spacing: tuple[float, float] = (2.5, 2.0),
    step: float = 4.0,
) -> list[dict]:
    """A sagittal stack centred on the mid-line (RAS x = 0), files named by shuffled instance numbers."""
    numbers = rng.permutation(n) + 1
    series_uid = generate_uid()
    instances = []
    for k in range(n):
        x_ras = (k - n // 2) * step
        # first pixel: superior (z = +size/2*row_spacing), anterior (y = +size/2*col_spacing) -> LPS
        position = ras_to_lps([x_ras, size / 2 * spacing[1], size / 2 * spacing[0]])
        stored = _cartoon((size, size), rng)
        number = int(numbers[k])
        write_dicom(
            folder / f"{number}.dcm",
            stored,
            position=position,
            orientation=SAGITTAL_IOP,
            spacing=spacing,
            instance=number,
            slope=1.0,
            intercept=0.0,
            thickness=step,
            description=description,
            series_uid=series_uid,
        )
        instances.append({"number": number, "x_ras": x_ras, "position": position, "spacing": spacing})
    return instances


def _axial_series(
    folder: Path,
    rng: np.random.Generator,
    levels: Sequence[int],
    size: int = 40,
    spacing: tuple[float, float] = (2.0, 2.0),
) -> dict[int, dict]:
    """One axial block of two slices per level, each block tilted differently (mixed orientations, like RSNA)."""
    out, number, series_uid = {}, 1, generate_uid()
    for level in levels:
        tilt = np.deg2rad(4.0 * (level - 2))
        # rotate the axial frame about the LPS x axis by the level's tilt
        x = np.array([1.0, 0.0, 0.0])
        y = np.array([0.0, np.cos(tilt), np.sin(tilt)])
        orientation = tuple(x) + tuple(y)
        for offset in (0.0, 3.0):
            centre_ras = np.array([0.0, CANAL_Y_MM, LEVEL_Z_MM[level] + offset])
            centre_lps = ras_to_lps(centre_ras)
            position = centre_lps - (size / 2) * spacing[1] * x - (size / 2) * spacing[0] * y
            write_dicom(
                folder / f"{number}.dcm",
                _cartoon((size, size), rng, (size / 2, size / 2)),
                position=position,
                orientation=orientation,
                spacing=spacing,
                instance=number,
                thickness=4.0,
                description="Axial T2",
                series_uid=series_uid,
            )
            if offset == 0.0:
                out[level] = {"number": number, "position": position, "orientation": orientation, "spacing": spacing}
            number += 1
    return out


def write_rsna2024(root: Path, n_studies: int = 6, seed: int = 0, axial_levels: Sequence[int] = (1, 2, 3, 4)) -> dict:
    """RSNA 2024 layout with ``n_studies`` studies. Returns ground truth: canal points (RAS) per study and level."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    severities = np.array(["Normal/Mild", "Moderate", "Severe", ""])
    label_rows, series_rows, coord_rows, truth = [], [], [], {}
    for s in range(n_studies):
        sid = str(4003253 + 1000 * s)
        grades = rng.choice(severities, size=(len(CONDITIONS), 5), p=[0.6, 0.2, 0.1, 0.1])
        label_rows.append([sid] + [grades[i, j] for i in range(len(CONDITIONS)) for j in range(5)])
        t1, t2, ax = str(702807833 + 10 * s), str(702807833 + 10 * s + 1), str(702807833 + 10 * s + 2)
        series_rows += [[sid, t1, "Sagittal T1"], [sid, t2, "Sagittal T2/STIR"], [sid, ax, "Axial T2"]]
        study = root / "train_images" / sid
        _sagittal_series(study / t1, rng, "Sagittal T1")
        sag = _sagittal_series(study / t2, rng, "Sagittal T2/STIR")
        mid = sag[len(sag) // 2]
        axial = _axial_series(study / ax, rng, axial_levels)
        truth[sid] = {}
        for j, level in enumerate(RSNA_LEVELS):
            point = np.array([0.0, CANAL_Y_MM, LEVEL_Z_MM[j]])
            row, col = _pixel_of(mid["position"], SAGITTAL_IOP, mid["spacing"], point)
            coord_rows.append([sid, t2, mid["number"], "Spinal Canal Stenosis", level, col, row])
            truth[sid][level] = point
        for j, info in axial.items():
            row, col = 20.0, 17.0
            coord_rows.append([sid, ax, info["number"], "Left Subarticular Stenosis", RSNA_LEVELS[j], col, row])
    header = ["study_id"] + [f"{c}_{lv}" for c in CONDITIONS for lv in LEVEL_CODES]
    _write_csv(root / "train.csv", header, label_rows)
    _write_csv(root / "train_series_descriptions.csv", ["study_id", "series_id", "series_description"], series_rows)
    _write_csv(
        root / "train_label_coordinates.csv",
        ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"],
        coord_rows,
    )
    return truth


# -- generic NIfTI manifest -----------------------------------------------------------------------------------------
#: Source mask values of the fake NIfTI dataset (mapped with ``--labels 'disc=7,canal=9'``).
NIFTI_DISC, NIFTI_CANAL = 7, 9
#: RAS position (mm) of the canal blob centre in every fake NIfTI case.
NIFTI_CANAL_RAS = (0.0, -12.0, 6.0)


def write_nifti(root: Path, n_cases: int = 6, seed: int = 0) -> Path:
    """Users' own data: 3D sagittal volumes in LPI-like orientation + masks with source values, 2D axial slices."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    # voxel (i, j, k) -> RAS: i runs to the left, j runs posterior, k runs inferior; spacing 3.5 x 0.7 x 0.9 mm
    affine = np.array([[-3.5, 0, 0, 10.5], [0, -0.7, 0, 10.0], [0, 0, -0.9, 30.0], [0, 0, 0, 1.0]])
    centre = np.round(np.linalg.inv(affine) @ np.r_[NIFTI_CANAL_RAS, 1])[:3].astype(int)
    rows = ["case_id,patient_id,img_sag_t2,seg_sag_t2,img_ax_l4_l5,grade_l4_l5,grade_l5_s1,age"]
    for n in range(n_cases):
        case = f"case{n:02d}"
        image = rng.normal(100, 10, size=(7, 40, 50)).astype(np.float32)
        mask = np.zeros(image.shape, dtype=np.int16)
        i, j, k = centre
        mask[i, j - 2 : j + 3, k - 2 : k + 3] = NIFTI_CANAL
        mask[i - 1 : i + 2, 5:12, 10:20] = NIFTI_DISC
        nib.save(nib.Nifti1Image(image, affine), str(root / f"{case}_t2.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(root / f"{case}_t2_seg.nii.gz"))
        axial = rng.normal(100, 10, size=(32, 32)).astype(np.float32)
        nib.save(nib.Nifti1Image(axial, np.diag([0.8, 0.8, 4.0, 1.0])), str(root / f"{case}_ax45.nii.gz"))
        rows.append(f"{case},p{n // 2},{case}_t2.nii.gz,{case}_t2_seg.nii.gz,{case}_ax45.nii.gz,{n % 4},-1,{50 + n}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


# -- SPIDER -----------------------------------------------------------------------------------------------------------
#: RAS centre (mm) of each SPIDER disc (value 201 = L5-S1 ... 205 = L1-L2) in the fake patients.
SPIDER_DISC_CENTRES = {201 + i: (0.0, 15.0, z) for i, z in enumerate(reversed(LEVEL_Z_MM))}
#: Fake canal: |x| <= 7 mm, -12 <= y <= -2 mm (RAS), all heights: 140 mm2 in an axial plane.
SPIDER_CANAL_AREA_MM2 = 14.0 * 10.0


def _spider_labels(ras: np.ndarray) -> np.ndarray:
    """SPIDER mask values of RAS points [..., 3]: vertebrae (L5 = 1), canal 100, discs 201-205."""
    x, y, z = ras[..., 0], ras[..., 1], ras[..., 2]
    labels = np.zeros(x.shape, dtype=np.int16)
    spine = np.abs(x) <= 20
    for i, zc in enumerate(LEVEL_Z_MM):  # i = 0 -> L1-L2 ... 4 -> L5-S1
        vertebra_value = 5 - i  # vertebra above the disc: L1 = 5 ... L5 = 1
        body = spine & (y >= 0) & (y <= 30) & (z > zc + 4) & (z <= zc + 20)
        posterior = spine & (y >= -25) & (y < -12) & (z > zc + 4) & (z <= zc + 20)
        labels[body | posterior] = vertebra_value
        labels[spine & (y >= 0) & (y <= 30) & (np.abs(z - zc) <= 4)] = 201 + (4 - i)
    labels[(np.abs(x) <= 7) & (y >= -12) & (y <= -2)] = 100
    return labels


def _spider_volume(rng: np.random.Generator, tilt_deg: float) -> tuple:
    import SimpleITK as sitk

    size = (48, 110, 11)  # i: anterior -> posterior, j: superior -> inferior, k: right -> left (sagittal slices)
    spacing = (1.5, 1.4, 3.3)
    t = np.deg2rad(tilt_deg)
    # direction columns in LPS: i -> posterior (+y), j -> inferior (-z), k -> left (+x); tilted about x
    direction = np.array([[0, 0, 1.0], [np.cos(t), np.sin(t), 0], [np.sin(t), -np.cos(t), 0]])
    centre_lps = np.array([0.0, 2.0, 0.0])
    half = direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    origin = centre_lps - half
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).astype(float)
    lps = index * spacing @ direction.T + origin
    ras = lps * [-1, -1, 1]
    labels = _spider_labels(ras)
    image = np.where(labels == 0, 50.0, np.where(labels == 100, 900.0, np.where(labels > 200, 600.0, 300.0)))
    image = image + rng.normal(0, 10, size=image.shape)

    def to_sitk(array: np.ndarray, pixel_type: int) -> sitk.Image:
        out = sitk.Cast(sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0))), pixel_type)
        out.SetSpacing(spacing)
        out.SetOrigin(tuple(origin))
        out.SetDirection(tuple(direction.flatten()))
        return out

    return to_sitk(image, sitk.sitkFloat32), to_sitk(labels, sitk.sitkInt16)


def write_spider(root: Path, n_patients: int = 5, seed: int = 0) -> Path:
    """SPIDER layout: images/<n>_t1.mha, _t2.mha, masks/ on the same grids, radiological_gradings.csv."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    grading_rows = []
    for n in range(1, n_patients + 1):
        for series, tilt in (("t1", 0.0), ("t2", 6.0 * (n % 3 - 1))):
            image, mask = _spider_volume(rng, tilt)
            sitk.WriteImage(image, str(root / "images" / f"{n}_{series}.mha"))
            sitk.WriteImage(mask, str(root / "masks" / f"{n}_{series}.mha"))
        for ivd in range(1, 8):  # 6 and 7 are thoracic discs: not one of our levels
            grading_rows.append([n, ivd, 0, 0, 0, 0, int(ivd == 2), 0, int(ivd == 1), 1 + (n + ivd) % 5])
    header = [
        "Patient",
        "IVD label",
        "Modic",
        "UP endplate",
        "LOW endplate",
        "Spondylolisthesis",
        "Disc herniation",
        "Disc narrowing",
        "Disc bulging",
        "Pfirrman grade",
    ]
    _write_csv(root / "radiological_gradings.csv", header, grading_rows)
    return root


# -- Mendeley ---------------------------------------------------------------------------------------------------------
MENDELEY_FOLDER_LEVELS = ("L3-L4", "L4_L5", "L5S1")  # spellings vary in the wild


def write_mendeley(root: Path, n_patients: int = 5, seed: int = 0, size: int = 64) -> Path:
    """Mendeley layout: <patient>/<level>.png axial slices + <level>_label.png (1 IVD, 2 PE, 3 TS, 4 AAP)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[((r - 18) / 12) ** 2 + ((c - 32) / 16) ** 2 <= 1] = 1  # disc, anterior (top rows)
    labels[(r >= 34) & (r <= 40) & (np.abs(c - 32) <= 10)] = 4  # AAP between disc and posterior elements
    labels[((r - 37) / 4) ** 2 + ((c - 32) / 6) ** 2 <= 1] = 3  # thecal sac
    labels[(r >= 44) & (r <= 56) & (np.abs(c - 32) <= 14)] = 2  # posterior elements
    for n in range(1, n_patients + 1):
        folder = root / f"{n:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for level in MENDELEY_FOLDER_LEVELS:
            image = (labels * 40 + rng.normal(60, 8, size=labels.shape)).clip(0, 255).astype(np.uint8)
            sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / f"{level}.png"))
            sitk.WriteImage(sitk.GetImageFromArray(labels), str(folder / f"{level}_label.png"))
    return root


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: Sequence[str]) -> int:
    writers = {"rsna2024": write_rsna2024, "spider": write_spider, "mendeley": write_mendeley, "nifti": write_nifti}
    if len(argv) != 2 or argv[0] not in writers:
        print(f"usage: python tests/real_layouts.py {{{','.join(writers)}}} DIR", file=sys.stderr)
        return 2
    writers[argv[0]](Path(argv[1]))
    print(f"wrote a fake {argv[0]} layout to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
