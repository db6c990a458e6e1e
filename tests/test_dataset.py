"""The manifest-driven loader: batch contract, orientation/resampling of foreign files, augmentation, errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from lss_vlm.constants import CLINICAL_COLUMNS, LEVELS, NUM_LABELS, VIEWS
from lss_vlm.data.dataset import build_dataloader, build_dataset
from lss_vlm.data.manifest import IMAGE_COLUMNS, read_manifest
from lss_vlm.data.transforms import DEFAULT_FOV_MM, DropMetad
from lss_vlm.errors import DataError

V, L = len(VIEWS), len(LEVELS)


def _copy(tiny_phantom: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_phantom.parent, tmp_path / "ph")
    return tmp_path / "ph" / "manifest.csv"


def _first_train_row(manifest: Path) -> pd.Series:
    df = read_manifest(manifest)
    return df[df["split"] == "train"].iloc[0]


def test_batch_follows_the_contract(tiny_phantom: Path) -> None:
    loader = build_dataloader(tiny_phantom, "train", spatial_size=48, batch_size=3)
    batch = next(iter(loader))
    assert set(batch) == {
        "case_id", "views", "masks", "mask_valid", "view_valid", "grades", "areas", "spacing", "reports", "clinical",
        "causes", "labelled", "affine", "native_affine", "native_shape",
    }  # fmt: skip
    assert batch["causes"].shape == (3, L, 3) and batch["causes"].dtype == torch.float32
    assert batch["affine"].shape == (3, V, 4, 4) and batch["affine"].dtype == torch.float64
    assert batch["labelled"].dtype == torch.bool and bool(batch["labelled"].all())  # phantom: every class labelled
    assert batch["views"].shape == (3, V, 1, 48, 48) and batch["views"].dtype == torch.float32
    assert batch["masks"].shape == (3, V, 48, 48) and batch["masks"].dtype == torch.int64
    assert batch["mask_valid"].shape == batch["view_valid"].shape == (3, V) and batch["mask_valid"].dtype == torch.bool
    assert batch["mask_valid"].all() and batch["view_valid"].all()
    assert batch["grades"].shape == (3, L) and batch["grades"].dtype == torch.int64
    assert batch["areas"].shape == (3, L) and batch["areas"].dtype == torch.float32
    assert batch["spacing"].shape == (3, V, 2) and batch["clinical"].shape == (3, len(CLINICAL_COLUMNS))
    assert len(batch["case_id"]) == 3 and all(len(r) >= 3 for r in batch["reports"])
    assert 0.0 <= float(batch["views"].min()) and float(batch["views"].max()) <= 1.0
    assert int(batch["masks"].max()) < NUM_LABELS
    # spacing = target spacing: the default field of view on spatial_size pixels
    assert batch["spacing"][0, 0, 0] == pytest.approx(DEFAULT_FOV_MM["sagittal"] / 48)
    assert batch["spacing"][0, -1, 1] == pytest.approx(DEFAULT_FOV_MM["axial"] / 48)
    # labels match the manifest
    df = read_manifest(tiny_phantom).set_index("case_id")
    first = df.loc[batch["case_id"][0]]
    assert batch["grades"][0].tolist() == [int(first[f"grade_{lv.lower().replace('-', '_')}"]) for lv in LEVELS]
    assert batch["clinical"][0, 0] == pytest.approx(first["age"])


def test_resampled_sac_area_stays_close_to_the_truth(tiny_phantom: Path) -> None:
    """Masks are resampled with nearest neighbour: sac pixels × new pixel area ≈ stored area."""
    batch = next(iter(build_dataloader(tiny_phantom, "train", spatial_size=64, batch_size=4)))
    sac = (batch["masks"][:, 2:] == 3).sum(dim=(-1, -2)).float()
    area = sac * batch["spacing"][:, 2:, 0] * batch["spacing"][:, 2:, 1]
    rel = (area - batch["areas"]).abs() / batch["areas"]
    assert float(rel.median()) < 0.1


def test_same_seed_same_batches_and_augmentation_changes_them(tiny_phantom: Path) -> None:
    def first(seed: int, augment: bool) -> dict:
        loader = build_dataloader(tiny_phantom, "train", 48, 4, augment=augment, shuffle=True, cache=False, seed=seed)
        return next(iter(loader))

    a, b, plain = first(1, True), first(1, True), first(1, False)
    assert a["case_id"] == b["case_id"] and torch.equal(a["views"], b["views"]) and torch.equal(a["masks"], b["masks"])
    assert a["case_id"] == plain["case_id"]
    assert not torch.equal(a["masks"], plain["masks"])


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


def _phantom_style_affine(view: str) -> np.ndarray:
    """Rows inferior / columns posterior / slice right (sagittal); rows posterior / columns left / slice up (axial)."""
    if view.startswith("sag"):
        return np.array([[0, 0, 4.0, 0], [0, -1.6, 0, 0], [-1.6, 0, 0, 0], [0, 0, 0, 1]])
    return np.array([[0, -0.86, 0, 0], [-0.86, 0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]])


def test_slice_normal_must_fit_the_view(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    row = _first_train_row(manifest)
    df = pd.read_csv(manifest)
    df.loc[df["case_id"] == row["case_id"], ["img_sag_t1", "seg_sag_t1"]] = [row["img_ax_l1_l2"], row["seg_ax_l1_l2"]]
    df.to_csv(manifest, index=False)
    with pytest.raises(DataError, match="slice normal points S .* a sagittal view needs an L/R normal"):
        build_dataset(manifest, "train")


def test_augmentation_moves_image_and_mask_together(tmp_path: Path) -> None:
    """Images whose intensity encodes the label: after augmentation each pixel's intensity still names its label."""
    rng = np.random.default_rng(0)
    rows = []
    yy, xx = np.mgrid[:64, :64]
    for i in range(5):
        labels = np.zeros((64, 64), np.uint8)
        for k in range(1, NUM_LABELS):
            cy, cx = rng.integers(12, 52, 2)
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(20, 80)] = k
        row = {"case_id": f"c{i}", "patient_id": f"p{i}", "split": "train", "dataset": "toy"}
        for v in VIEWS:
            affine = _phantom_style_affine(v)
            _write(tmp_path / f"{i}_{v}.nii.gz", (100.0 + 100.0 * labels[:, :, None]).astype(np.float32), affine)
            _write(tmp_path / f"{i}_{v}_seg.nii.gz", labels[:, :, None], affine)
            row[f"img_{v}"], row[f"seg_{v}"] = f"{i}_{v}.nii.gz", f"{i}_{v}_seg.nii.gz"
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    loader = build_dataloader(tmp_path / "manifest.csv", "train", 64, 5, augment=True, seed=0, target_spacing={
        "sagittal": 1.6, "axial": 0.86})  # fmt: skip
    batch = next(iter(loader))
    agree, moved = [], 0
    for b in range(5):
        for v in range(V):
            image, mask = batch["views"][b, v, 0], batch["masks"][b, v]
            # interior foreground pixels (3x3 neighbourhood of one label): interpolation blurs only the edges
            padded = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
            same = torch.stack([padded[1 + dy : 65 + dy, 1 + dx : 65 + dx] == mask for dy in (-1, 0, 1)
                                for dx in (-1, 0, 1)]).all(dim=0)  # fmt: skip
            fg = (mask > 0) & same
            medians = torch.stack([image[mask == k].median() for k in range(1, NUM_LABELS)])
            assert torch.all(medians[1:] > medians[:-1])
            nearest = (image[fg][:, None] - medians[None]).abs().argmin(dim=1) + 1
            agree.append(float((nearest == mask[fg]).float().mean()))
            moved += int((mask != torch.as_tensor(np.asarray(nib.load(tmp_path / f"{b}_{VIEWS[v]}_seg.nii.gz")
                                                               .dataobj)[:, :, 0].astype(np.int64))).any())  # fmt: skip
    assert min(agree) > 0.97
    assert moved > V  # the augmentation did move things


def test_foreign_nifti_lps_uint16_is_reoriented_and_resampled(tmp_path: Path) -> None:
    """An axial slice written LPS (rows → patient left, columns → posterior), 0.5 × 0.4 mm, uint16. A marker
    10 mm posterior and 15 mm to the left of the centre must land there after loading (rows posterior, columns
    left, 110/64 mm pixels)."""
    shape, spacing = (220, 260), (0.5, 0.4)
    data = np.random.default_rng(0).integers(50, 150, shape).astype(np.uint16)
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    left_mm, posterior_mm = 15.0, 10.0
    i, j = round(centre[0] + left_mm / spacing[0]), round(centre[1] + posterior_mm / spacing[1])
    data[i - 12 : i + 13, j - 15 : j + 16] = 4000  # 12.5 mm x 12.4 mm block, ~1.4 % of the slice
    affine = np.array(
        [[-spacing[0], 0, 0, 0], [0, -spacing[1], 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]], float
    )  # i → -x (left), j → -y (posterior): "LPS"
    affine[:3, 3] = -affine[:3, :2] @ np.array(centre)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    _write(tmp_path / "ax.nii.gz", data[:, :, None], affine)
    row = {"case_id": "x", "patient_id": "x", "split": "test", "dataset": "foreign", "img_ax_l4_l5": "ax.nii.gz"}
    row.update({c: "" for c in IMAGE_COLUMNS if c != "img_ax_l4_l5"})
    pd.DataFrame([row]).to_csv(tmp_path / "manifest.csv", index=False)
    batch = next(iter(build_dataloader(tmp_path / "manifest.csv", "test", spatial_size=64, batch_size=1)))
    view = VIEWS.index("ax_l4_l5")
    assert batch["view_valid"][0].tolist() == [v == "ax_l4_l5" for v in VIEWS]
    assert not batch["mask_valid"].any() and (batch["grades"] == -1).all() and batch["areas"].isnan().all()
    assert batch["views"][0, 0].abs().sum() == 0  # missing view → zeros
    image = batch["views"][0, view, 0]
    pixel = 110.0 / 64
    peak = torch.nonzero(image == image.max()).float().mean(dim=0)
    expected = torch.tensor([31.5 + posterior_mm / pixel, 31.5 + left_mm / pixel])
    assert torch.allclose(peak, expected, atol=1.5), (peak, expected)


# ---- bad input: one clear DataError naming the file and the problem ----


def test_missing_file(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["img_ax_l4_l5"]
    path.unlink()
    with pytest.raises(DataError, match=rf"{path.name}: image file not found"):
        build_dataset(manifest, "train")


def test_truncated_nifti(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["img_sag_t2"]
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{path.name}: not a readable NIfTI"):
        build_dataset(manifest, "train", cache=False)


def test_corrupt_nifti_header(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["seg_ax_l1_l2"]
    path.write_bytes(gzip.compress(b"not a nifti at all" * 40))
    with pytest.raises(DataError, match=rf"{path.name}: not a readable NIfTI"):
        build_dataset(manifest, "train")


def test_mask_shape_mismatch(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["seg_ax_l2_l3"]
    image = nib.load(path)
    _write(path, np.asarray(image.dataobj)[:-2], image.affine)
    with pytest.raises(DataError, match=rf"{path.name}: mask shape \(62, 64\) does not match image"):
        build_dataset(manifest, "train")


def test_mask_affine_mismatch(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["seg_ax_l3_l4"]
    image = nib.load(path)
    _write(path, np.asarray(image.dataobj), image.affine @ np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match=rf"{path.name}: mask affine differs"):
        build_dataset(manifest, "train")


def test_label_values_outside_the_label_set(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["seg_ax_l5_s1"]
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 9
    _write(path, data, image.affine)
    with pytest.raises(DataError, match=rf"{path.name}: mask has label value\(s\) 9 outside the label set 0-5"):
        build_dataset(manifest, "train")


def test_nan_voxels(tiny_phantom: Path, tmp_path: Path) -> None:
    manifest = _copy(tiny_phantom, tmp_path)
    path = manifest.parent / _first_train_row(manifest)["img_ax_l1_l2"]
    image = nib.load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    data[3:5, 3:5] = np.nan
    _write(path, data, image.affine)
    with pytest.raises(DataError, match=rf"{path.name}: image has 4 NaN/infinite voxel"):
        build_dataset(manifest, "train")


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(",".join(["case_id", "patient_id", "split", "dataset", *IMAGE_COLUMNS]))
    with pytest.raises(DataError, match="manifest has a header but no cases"):
        build_dataloader(tmp_path / "manifest.csv", "train")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DataError, match="blank.csv: manifest is empty"):
        build_dataloader(tmp_path / "blank.csv", "train")


def test_unknown_and_missing_columns(tiny_phantom: Path, tmp_path: Path) -> None:
    df = pd.read_csv(tiny_phantom)
    df.assign(colour="red").to_csv(tmp_path / "unknown.csv", index=False)
    with pytest.raises(DataError, match="unknown column\\(s\\) colour"):
        build_dataloader(tmp_path / "unknown.csv", "train")
    df.drop(columns=["img_sag_t1"]).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DataError, match="missing required column\\(s\\) img_sag_t1"):
        build_dataloader(tmp_path / "missing.csv", "train")


def test_split_with_no_cases(tiny_phantom: Path, tmp_path: Path) -> None:
    df = pd.read_csv(tiny_phantom)
    df.loc[df["split"] == "val", "split"] = "train"
    df.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(DataError, match="split 'val' has no cases"):
        build_dataloader(tmp_path / "manifest.csv", "val")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        build_dataloader(tmp_path / "manifest.csv", "dev")


@pytest.mark.parametrize("profile", ["standard", "domain_randomisation"])
def test_untracked_augmentation_draws_the_same_pixels(
    tiny_phantom: Path, monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    """Augmentation on plain tensors (metadata dropped after the cache, MONAI tracking off while drawing) gives the
    pixels of the MetaTensor chain, item for item; only the affine of an augmented item becomes NaN."""

    def items(reference: bool) -> list[dict]:
        with monkeypatch.context() as patch:
            if reference:  # the chain as it was: metadata kept and tracked through the random transforms
                patch.setattr(DropMetad, "__call__", lambda self, data: dict(data))
            dataset = build_dataset(tiny_phantom, "train", 48, augment=True, seed=3, augment_profile=profile)
            if reference:
                dataset.untracked_draws = False
            return [dataset[i] for i in range(len(dataset)) for _ in range(2)]

    fast, slow = items(False), items(True)
    assert len(fast) == len(slow) >= 4
    for a, b in zip(fast, slow):
        assert torch.equal(a["views"], b["views"]) and torch.equal(a["masks"], b["masks"])
        assert torch.isnan(a["affine"]).all()
    assert any(torch.isfinite(b["affine"]).all() for b in slow)  # the old chain carried the moved affine
    plain = build_dataset(tiny_phantom, "train", 48, augment=False)[0]
    assert torch.isfinite(plain["affine"][plain["view_valid"]]).all()  # unaugmented items keep the scanner affine
