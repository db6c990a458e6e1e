"""Readers: DICOM (pydicom), .mha (SimpleITK), NIfTI - geometry survives, values are rescaled, bad input is named."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from real_layouts import AXIAL_IOP, SAGITTAL_IOP, lps_point, write_dicom

from lss_vlm.data.labels import apply_label_mapping, parse_label_mapping
from lss_vlm.data.readers import (
    LPS_TO_RAS,
    orient_display,
    plane_affine,
    read_dicom_series,
    read_dicom_slice,
    read_itk,
    read_nifti,
    read_volume,
    resample_to_plane,
    write_view,
)
from lss_vlm.data.readers.mha import sitk_affine
from lss_vlm.data.readers.volume import extract_slice
from lss_vlm.errors import ConfigError, DataError


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = np.deg2rad(z_deg), np.deg2rad(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


ROWS, COLS, N_SLICES = 12, 10, 5
SPACING = (0.8, 0.5)  # row spacing, column spacing: non-square pixels
STEP = 3.0
MARKER = {"slice": 1, "row": 5, "col": 7}
SLOPE, INTERCEPT = 2.0, -10.0


def _oblique_series(folder, orientation=None, drop_spacing_in=None, instance_numbers=(3, 5, 1, 4, 2)):
    """Oblique stack, shuffled instance numbers, files written in a scrambled order. Returns header info per slice."""
    rot = _rotation(20, 15)
    x, y = rot[:, 0], rot[:, 1]
    iop = tuple(x) + tuple(y) if orientation is None else orientation
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    origin = np.array([-30.0, 12.0, 40.0])
    series_uid = generate_uid()
    slices = []
    for k in range(N_SLICES):
        stored = np.full((ROWS, COLS), 100, dtype=np.uint16)
        if k == MARKER["slice"]:
            stored[MARKER["row"], MARKER["col"]] = 1000
        number = instance_numbers[k]
        path = write_dicom(
            folder / f"{number}.dcm",
            stored,
            position=origin + k * STEP * normal,
            orientation=iop,
            series_uid=series_uid,
            spacing=None if drop_spacing_in == k else SPACING,
            instance=number,
            slope=SLOPE,
            intercept=INTERCEPT,
            thickness=STEP,
        )
        slices.append(path)
    return slices


def test_dicom_series_geometry_marker_and_rescale(tmp_path) -> None:
    paths = _oblique_series(tmp_path / "series")
    volume = read_dicom_series(tmp_path / "series")
    assert volume.data.shape == (COLS, ROWS, N_SLICES)
    assert volume.spacing == pytest.approx((SPACING[1], SPACING[0], STEP), abs=1e-6)
    # the marker's patient position, computed by the DICOM formula from what pydicom reads back
    ds = pydicom.dcmread(paths[MARKER["slice"]])
    lps = lps_point(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing, MARKER["row"], MARKER["col"])
    ras = np.array([-lps[0], -lps[1], lps[2]])
    index = np.round(volume.world_to_voxel(ras)).astype(int)
    assert np.allclose(volume.world_to_voxel(ras), index, atol=1e-4)
    assert volume.data[tuple(index)] == pytest.approx(1000 * SLOPE + INTERCEPT)
    assert index.tolist() == [MARKER["col"], MARKER["row"], MARKER["slice"]]  # sorted by position, not by number
    assert np.count_nonzero(volume.data == 1000 * SLOPE + INTERCEPT) == 1
    assert np.all(volume.data[volume.data != 1990] == pytest.approx(100 * SLOPE + INTERCEPT))


def test_dicom_series_affine_matches_simpleitk(tmp_path) -> None:
    _oblique_series(tmp_path / "series")
    volume = read_dicom_series(tmp_path / "series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    image = reader.Execute()
    assert np.allclose(volume.affine, sitk_affine(image), atol=1e-4)
    assert np.allclose(volume.data, sitk.GetArrayFromImage(image).T, atol=1e-3)


def test_bundled_mr_small_through_dicom_reader() -> None:
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    volume = read_volume(path)
    assert volume.data.shape == (ds.Columns, ds.Rows, 1)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    assert np.allclose(volume.data[:, :, 0], ds.pixel_array.T * slope + intercept)
    image = sitk.ReadImage(path)
    assert np.allclose(volume.affine[:, [0, 1, 3]], sitk_affine(image)[:, [0, 1, 3]], atol=1e-4)
    # first pixel: ImagePositionPatient converted LPS -> RAS
    assert np.allclose(volume.affine[:3, 3], (LPS_TO_RAS @ np.r_[np.asarray(ds.ImagePositionPatient, float), 1])[:3])


@pytest.mark.parametrize(
    ("orientation", "plane"),
    [
        (SAGITTAL_IOP, "sagittal"),
        ((0.0, 0.0, 1.0, 0.0, -1.0, 0.0), "sagittal"),  # columns to superior, rows to anterior: transposed + flipped
        (AXIAL_IOP, "axial"),
        ((0.0, 1.0, 0.0, -1.0, 0.0, 0.0), "axial"),  # columns to posterior, rows to the right
    ],
)
def test_display_orientation_keeps_patient_positions(tmp_path, orientation, plane) -> None:
    stored = np.full((ROWS, COLS), 10, dtype=np.uint16)
    stored[2, 7] = 999
    position = (5.0, -3.0, 20.0)
    path = write_dicom(tmp_path / "1.dcm", stored, position=position, orientation=orientation, spacing=SPACING)
    view = orient_display(extract_slice(read_dicom_slice(path), 2, 0), plane)
    ras = LPS_TO_RAS[:3, :3] @ lps_point(position, orientation, SPACING, 2, 7)
    row, col, depth = view.world_to_pixel(ras)
    assert depth == pytest.approx(0, abs=1e-6)
    assert view.array[int(round(row)), int(round(col))] == 999
    row_dir = view.affine[:3, 0] / np.linalg.norm(view.affine[:3, 0])
    col_dir = view.affine[:3, 1] / np.linalg.norm(view.affine[:3, 1])
    if plane == "sagittal":  # rows run to inferior, columns to posterior
        assert row_dir @ [0, 0, -1] > 0.99 and col_dir @ [0, -1, 0] > 0.99
    else:  # rows run to posterior, columns to the patient's left
        assert row_dir @ [0, -1, 0] > 0.99 and col_dir @ [-1, 0, 0] > 0.99


def test_mha_marker_and_affine_match_simpleitk(tmp_path) -> None:
    data = np.zeros((6, 9, 11), dtype=np.int16)  # [k, j, i]
    data[4, 2, 8] = 7
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.6, 0.9, 3.3))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection(tuple(_rotation(10, -25).flatten()))
    sitk.WriteImage(image, str(tmp_path / "1_t2.mha"))
    volume = read_itk(tmp_path / "1_t2.mha")
    assert volume.data.shape == (11, 9, 6)
    lps = np.asarray(image.TransformIndexToPhysicalPoint((8, 2, 4)))
    ras = np.array([-lps[0], -lps[1], lps[2]])
    index = np.round(volume.world_to_voxel(ras)).astype(int)
    assert index.tolist() == [8, 2, 4] and volume.data[8, 2, 4] == 7
    assert np.allclose(volume.voxel_to_world(np.array([8, 2, 4])), ras)


def test_nifti_round_trip_and_resample(tmp_path) -> None:
    affine = plane_affine(np.array([1.0, 2.0, 3.0]), np.array([0, 0, -1.0]), np.array([0, -1.0, 0]), (9, 7), 0.7)
    from lss_vlm.data.readers import Slice2D

    array = np.arange(63, dtype=np.float32).reshape(9, 7)
    write_view(tmp_path / "v.nii.gz", Slice2D(array, affine))
    volume = read_nifti(tmp_path / "v.nii.gz")
    assert volume.data.shape == (9, 7, 1) and np.allclose(volume.affine, affine)
    resampled = resample_to_plane(volume, affine, (9, 7), order=0)
    assert np.array_equal(resampled.array, array)


def test_bad_dicom_input_is_named(tmp_path) -> None:
    with pytest.raises(DataError, match="series folder not found"):
        read_dicom_series(tmp_path / "missing")
    _oblique_series(tmp_path / "nospacing", drop_spacing_in=2)
    with pytest.raises(DataError, match=r"\.dcm: missing PixelSpacing"):
        read_dicom_series(tmp_path / "nospacing")
    # one instance tilted: mixed orientations in one series
    _oblique_series(tmp_path / "mixed")
    write_dicom(
        tmp_path / "mixed" / "9.dcm",
        np.zeros((ROWS, COLS), np.uint16),
        position=(0, 0, 100.0),
        orientation=AXIAL_IOP,
        spacing=SPACING,
        instance=9,
    )
    with pytest.raises(DataError, match="mixed orientations in one series"):
        read_dicom_series(tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .dcm files"):
        read_dicom_series(tmp_path / "empty")
    (tmp_path / "junk.dcm").write_text("not dicom")
    with pytest.raises(DataError, match="junk.dcm: not a readable DICOM"):
        read_dicom_slice(tmp_path / "junk.dcm")


def test_label_mapping() -> None:
    mapping = parse_label_mapping("disc=201-203, canal=100, vertebra=1-2")
    assert mapping == {201: 2, 202: 2, 203: 2, 100: 3, 1: 1, 2: 1}
    mask = np.array([[0, 1, 2, 100], [201, 203, 7, 150]])
    assert apply_label_mapping(mask, mapping).tolist() == [[0, 1, 1, 3], [2, 2, 0, 0]]
    with pytest.raises(ConfigError, match="unknown label 'bone'"):
        parse_label_mapping("bone=1")
    with pytest.raises(ConfigError, match="twice"):
        parse_label_mapping("disc=2,canal=2")
    with pytest.raises(DataError, match="pass --labels"):
        apply_label_mapping(mask, None)
