"""``lss-bench prepare images`` on real MRI fixtures (vertebraeSegementation, MIT) and on hand-made bad input.

Each defect of issue 14 that concerns geometry, labels and bad input has a test here whose expected value is the right
one (the wrong one it replaced is named in the comment).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from benchmarks.cli import main as cli_main
from lss_vlm.constants import IGNORE_LABEL, LABEL_INDEX
from lss_vlm.data.adapters import prepare_dataset
from lss_vlm.data.dataset import build_dataset
from lss_vlm.data.manifest import read_manifest
from lss_vlm.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures" / "vertebrae"
MIT_LABELS = "disc=1,vertebra=2"


def _prepare(root, out, **options):
    options.setdefault("view", "sag_t2")
    options.setdefault("pixel_spacing", 1.2)
    return prepare_dataset("images", root, out, **options)


def _copy_fixtures(tmp_path) -> Path:
    root = tmp_path / "vert"
    shutil.copytree(FIXTURES, root)
    return root


def test_fixture_licence_and_attribution_are_vendored() -> None:
    assert "MIT License" in (FIXTURES / "LICENSE").read_text()
    assert "sulaimanvesal/vertebraeSegementation" in (FIXTURES / "README.md").read_text()


def test_real_slices_prepare_with_display_geometry_and_partial_labels(tmp_path) -> None:
    result = _prepare(
        FIXTURES,
        tmp_path / "out",
        labels=MIT_LABELS,
        labelled_classes="disc,vertebral_body",
        absent_means_unlabelled=True,
    )
    df = read_manifest(result.manifest).set_index("case_id")
    assert df.loc["2", "labelled_classes"] == "vertebral_body,disc"
    assert df.loc["13", "labelled_classes"] == "disc"  # only discs drawn: vertebrae are unlabelled, not background
    assert pd.isna(df.loc["0", "seg_sag_t2"])  # empty mask: image kept without a mask
    image = nib.load(result.manifest.parent / df.loc["2", "img_sag_t2"])
    # display orientation: rows superior→inferior, columns anterior→posterior, slice normal left-right
    assert nib.aff2axcodes(image.affine) == ("I", "P", "L")
    assert np.allclose(nib.affines.voxel_sizes(image.affine)[:2], 1.2)
    mask = np.asarray(nib.load(result.manifest.parent / df.loc["2", "seg_sag_t2"]).dataobj)
    source = np.load(FIXTURES / "masks" / "2.npy")
    assert np.array_equal(mask == LABEL_INDEX["disc"], source == 1)  # no mirroring, no transposition
    assert np.array_equal(mask == LABEL_INDEX["vertebral_body"], source == 2)
    # the loader accepts what prepare wrote (issue 14: 'train' failed on the prepared file)
    dataset = build_dataset(result.manifest, "train", spatial_size=64, cache=False)
    assert len(dataset) >= 1


def test_anisotropic_pixel_spacing(tmp_path) -> None:
    result = _prepare(FIXTURES, tmp_path / "out", labels=MIT_LABELS, pixel_spacing="1.0,1.5")
    df = read_manifest(result.manifest)
    image = nib.load(result.manifest.parent / df["img_sag_t2"].iloc[0])
    assert np.allclose(nib.affines.voxel_sizes(image.affine)[:2], (1.0, 1.5))


def test_axial_view_orientation(tmp_path) -> None:
    root = tmp_path / "ax"
    (root / "images").mkdir(parents=True)
    np.save(root / "images" / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    result = _prepare(root, tmp_path / "out", view="ax_l4_l5", pixel_spacing=0.5)
    image = nib.load(result.manifest.parent / read_manifest(result.manifest)["img_ax_l4_l5"].iloc[0])
    assert nib.aff2axcodes(image.affine) == ("P", "L", "I")  # rows anterior→posterior, columns right→left
    assert np.array_equal(np.asarray(image.dataobj), np.arange(12).reshape(3, 4))


def test_ignore_value_is_kept_as_ignore(tmp_path) -> None:
    """Issue 14: with --labels disc=2 the value 255 silently became background; it is 'not annotated' now."""
    root = tmp_path / "ig"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    np.save(root / "images" / "a.npy", np.ones((8, 8), np.float32))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4] = 2
    mask[6:] = 255
    np.save(root / "masks" / "a.npy", mask)
    result = _prepare(root, tmp_path / "out", labels="disc=2", labelled_classes="disc")
    written = np.asarray(nib.load(result.manifest.parent / read_manifest(result.manifest)["seg_sag_t2"][0]).dataobj)
    assert (written[6:] == IGNORE_LABEL).all()
    assert (written[2:4] == LABEL_INDEX["disc"]).all()
    # another ignore value, given in --labels (issue 14: 'disc=2,ignore=255' was rejected)
    mask[6:] = 7
    np.save(root / "masks" / "a.npy", mask)
    result = _prepare(root, tmp_path / "out2", labels="disc=2,ignore=7")
    written = np.asarray(nib.load(result.manifest.parent / read_manifest(result.manifest)["seg_sag_t2"][0]).dataobj)
    assert (written[6:] == IGNORE_LABEL).all()


def _bad_root(tmp_path, image=None, mask=None, image_name="a.npy", mask_name="a.npy") -> Path:
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    np.save(root / "images" / image_name, np.ones((8, 8), np.float32) if image is None else image)
    np.save(root / "masks" / mask_name, np.zeros((8, 8), np.uint8) if mask is None else mask)
    return root


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("shape", r"masks/a\.npy: mask shape \(8, 9\) does not match image .*images/a\.npy \(8, 8\)"),
        ("value", r"masks/a\.npy: mask value 3 is neither mapped"),
        ("3d", r"images/a\.npy: expected a 2D image .*shape \(8, 8, 2\)"),
        ("nifti3d", r"images/a\.nii\.gz: expected a 2D image .*shape \(8, 8, 3\)"),
    ],
)
def test_bad_files_stop_with_one_error_naming_file_and_value(tmp_path, capsys, case, expected) -> None:
    mask = np.zeros((8, 8), np.uint8)
    image = None
    if case == "shape":
        mask = np.zeros((8, 9), np.uint8)
    elif case == "value":
        mask[0, 0] = 3
    elif case == "3d":
        image = np.ones((8, 8, 2), np.float32)
    root = _bad_root(tmp_path, image, mask)
    if case == "nifti3d":
        (root / "images" / "a.npy").unlink()
        nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.float32), np.eye(4)), root / "images" / "a.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=expected):
        _prepare(root, out, labels="disc=2")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    code = cli_main(
        ["prepare", "images", "--root", str(root), "--out", str(out), "--pixel-spacing", "1", "--labels", "disc=2"]
        + ["--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lss-bench prepare: error:")
    assert not out.exists()


@pytest.mark.parametrize("spacing", ["0", "-1", "nan", "inf", "1,0", "abc"])
def test_bad_pixel_spacing(tmp_path, capsys, spacing) -> None:
    root = _bad_root(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=f"--pixel-spacing '{spacing}'"):
        _prepare(root, out, pixel_spacing=spacing)
    code = cli_main(
        ["prepare", "images", "--root", str(root), "--out", str(out), f"--pixel-spacing={spacing}", "--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and spacing in err[0]
    assert not out.exists()


def test_unknown_labelled_class(tmp_path) -> None:
    root = _bad_root(tmp_path)
    with pytest.raises(ConfigError, match="--labelled-classes: unknown class 'spleen'"):
        _prepare(root, tmp_path / "out", labelled_classes="disc,spleen")
    (root / "cases.csv").write_text('case_id,labelled_classes\na,"disc,kidney"\n')
    with pytest.raises(ConfigError, match=r"cases\.csv: case a: unknown class 'kidney'"):
        _prepare(root, tmp_path / "out")


def test_mask_contradicting_labelled_classes(tmp_path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[0] = 1
    root = _bad_root(tmp_path, mask=mask)
    with pytest.raises(DataError, match=r"masks/a\.npy: mask has vertebral_body pixels but labelled_classes is 'disc'"):
        _prepare(root, tmp_path / "out", labelled_classes="disc")


def test_manifest_rejects_unknown_labelled_class(tmp_path) -> None:
    result = _prepare(FIXTURES, tmp_path / "out", labels=MIT_LABELS)
    df = pd.read_csv(result.manifest, dtype=str)
    df.loc[0, "labelled_classes"] = "disc,spleen"
    df.to_csv(result.manifest, index=False)
    with pytest.raises(DataError, match="labelled_classes names unknown class 'spleen'"):
        read_manifest(result.manifest)


def test_nifti_adapter_reports_a_view_train_would_reject_at_prepare_time(tmp_path) -> None:
    """Issue 14: a 2D sagittal NIfTI with an identity affine was accepted (columns mirrored) and 'train' then failed
    naming the *prepared* file. Now prepare reports it, naming the user's file."""
    src = tmp_path / "src"
    src.mkdir()
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.float32), np.eye(4)), src / "slice.nii.gz")
    (src / "manifest.csv").write_text("case_id,img_sag_t2\nc1,slice.nii.gz\n")
    with pytest.raises(DataError, match=r"no usable case.*src/slice\.nii\.gz.*normal") as info:
        prepare_dataset("nifti", src, tmp_path / "out")
    assert "cases/c1" not in str(info.value)


def test_cases_csv_sets_patient_dataset_and_labelled_classes_per_case(tmp_path) -> None:
    root = _copy_fixtures(tmp_path)
    (root / "cases.csv").write_text('case_id,patient_id,dataset,labelled_classes\n13,p7,mit,ivd\n2,p7,mit,""\n')
    result = _prepare(root, tmp_path / "out", labels=MIT_LABELS, labelled_classes="disc,vertebral_body")
    df = read_manifest(result.manifest).set_index("case_id")
    assert df.loc["13", "labelled_classes"] == "disc"  # alias ivd, per-case value wins over the option
    assert df.loc["2", "labelled_classes"] == "vertebral_body,disc"  # empty cell: the option applies
    assert df.loc["13", "patient_id"] == df.loc["2", "patient_id"] == "p7"
    assert df.loc["13", "split"] == df.loc["2", "split"]  # one patient, one split
    assert df.loc["0", "dataset"] == "images" and df.loc["13", "dataset"] == "mit"


def test_palette_and_grey_rgb_mask_pngs_give_their_label_values(tmp_path) -> None:
    """A palette PNG mask (VOC style) was read as the luminance of its colours (index 1 in red -> 76, an 'unmapped
    value'); it gives its indices now. A grey mask saved as RGB gives its grey values; a colour-coded one is refused."""
    from PIL import Image

    mask = np.zeros((8, 8), np.uint8)
    mask[1:3], mask[5:7] = 1, 2
    root = _bad_root(tmp_path)
    (root / "masks" / "a.npy").unlink()
    palette = Image.new("P", (8, 8))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.putdata(mask.flatten().tolist())
    palette.save(root / "masks" / "a.png")
    result = _prepare(root, tmp_path / "pal", labels=MIT_LABELS)
    written = np.asarray(nib.load(result.manifest.parent / read_manifest(result.manifest)["seg_sag_t2"][0]).dataobj)
    assert (written[1:3] == LABEL_INDEX["disc"]).all() and (written[5:7] == LABEL_INDEX["vertebral_body"]).all()

    Image.fromarray(np.repeat(mask[..., None], 3, axis=2)).save(root / "masks" / "a.png")
    result = _prepare(root, tmp_path / "grey", labels=MIT_LABELS)
    written = np.asarray(nib.load(result.manifest.parent / read_manifest(result.manifest)["seg_sag_t2"][0]).dataobj)
    assert (written[1:3] == LABEL_INDEX["disc"]).all()

    colour = np.zeros((8, 8, 3), np.uint8)
    colour[mask == 1] = (255, 0, 0)
    Image.fromarray(colour).save(root / "masks" / "a.png")
    with pytest.raises(DataError, match=r"masks/a\.png: colour-coded mask"):
        _prepare(root, tmp_path / "colour", labels=MIT_LABELS)
    assert not (tmp_path / "colour").exists()


def test_ignore_label_that_means_a_class_or_background_is_refused(tmp_path) -> None:
    """--ignore-label 0 turned all background into 'not annotated', 1-5 without --labels one of our classes, and a
    value --labels maps was silently ignored; each is one error now. A free value still works."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4], mask[6:] = 2, 7
    root = _bad_root(tmp_path, mask=mask)
    for value, labels, culprit in ((0, None, "background"), (3, None, "thecal_sac"), (2, "disc=2", "maps 2 to disc")):
        with pytest.raises(ConfigError, match=f"--ignore-label {value}: .*{culprit}"):
            _prepare(root, tmp_path / "out", labels=labels, ignore_label=value)
    result = _prepare(root, tmp_path / "out", labels="disc=2", ignore_label=7)
    written = np.asarray(nib.load(result.manifest.parent / read_manifest(result.manifest)["seg_sag_t2"][0]).dataobj)
    assert (written[6:] == IGNORE_LABEL).all() and (written[2:4] == LABEL_INDEX["disc"]).all()


@pytest.mark.parametrize("text", ["background", ",", "bg, background", ""])
def test_labelled_classes_naming_no_foreground_class_is_refused(tmp_path, text) -> None:
    """'background' or ',' became the empty cell, which means 'every class labelled': the opposite of the intent."""
    with pytest.raises(ConfigError, match="--labelled-classes"):
        _prepare(_bad_root(tmp_path), tmp_path / "out", labelled_classes=text)
    assert not (tmp_path / "out").exists()
