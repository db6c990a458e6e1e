"""Dataset adapters on fake datasets in the real layouts: manifests, geometry, mappings, bad input, atomic output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
from real_layouts import (
    NIFTI_CANAL_RAS,
    SPIDER_CANAL_AREA_MM2,
    SPIDER_DISC_CENTRES,
    write_mendeley,
    write_nifti,
    write_rsna2024,
    write_spider,
)

from benchmarks.cli import main as cli_main
from lss_vlm.constants import LEVELS, level_key
from lss_vlm.data.adapters import prepare_dataset
from lss_vlm.data.manifest import read_manifest, resolve
from lss_vlm.data.readers import read_nifti
from lss_vlm.errors import ConfigError, DataError
from lss_vlm.metrics.localisation import level_localisation_metrics, reference_points


def _skips(summary: dict) -> list[str]:
    return [f"{s['item']}: {s['reason']}" for s in summary["skipped"]]


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# -- nifti -------------------------------------------------------------------------------------------------------------
def test_nifti_adapter_maps_labels_and_keeps_geometry(tmp_path) -> None:
    manifest_in = write_nifti(tmp_path / "src")
    result = prepare_dataset("nifti", manifest_in, tmp_path / "out", labels="disc=7,canal=9", seed=3)
    df = read_manifest(result.manifest)
    assert len(df) == 6 and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("patient_id")["split"].nunique().max() == 1  # patients never straddle splits
    assert df["img_sag_t1"].isna().all() and df["img_ax_l4_l5"].notna().all()
    seg = read_nifti(resolve(result.manifest.parent, df.loc[0, "seg_sag_t2"]))
    img = read_nifti(resolve(result.manifest.parent, df.loc[0, "img_sag_t2"]))
    assert set(np.unique(seg.data)) == {0, 2, 3} and seg.data.shape == img.data.shape
    canal = np.argwhere(seg.data[:, :, 0] == 3).mean(axis=0)
    ras = seg.affine[:3, :3] @ np.r_[canal, 0] + seg.affine[:3, 3]
    assert np.allclose(ras, NIFTI_CANAL_RAS, atol=1.0)  # the canal blob is where it was in patient space
    row_dir = seg.affine[:3, 0] / np.linalg.norm(seg.affine[:3, 0])
    assert row_dir @ [0, 0, -1] > 0.99  # display orientation: rows run superior -> inferior
    assert df.loc[0, "grade_l4_l5"] == 0 and df.loc[0, "grade_l5_s1"] == -1 and df.loc[0, "age"] == 50
    assert all("L4-L5" in r for r in json.loads(df.loc[1, "reports"]))  # reports written from the grades
    assert result.summary["scored"]["segmentation"] and not result.summary["scored"]["level_localisation"]


def test_nifti_adapter_without_mapping_rejects_foreign_labels(tmp_path) -> None:
    manifest_in = write_nifti(tmp_path / "src", n_cases=3)
    with pytest.raises(DataError, match="no usable case.*pass --labels"):
        prepare_dataset("nifti", manifest_in, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_nifti_adapter_skips_missing_files_and_duplicates(tmp_path) -> None:
    manifest_in = write_nifti(tmp_path / "src")
    df = pd.read_csv(manifest_in, dtype=str)
    df.loc[1, "img_sag_t2"] = "gone.nii.gz"
    df = pd.concat([df, df.iloc[[2]]])
    df.to_csv(manifest_in, index=False)
    result = prepare_dataset("nifti", manifest_in, tmp_path / "out", labels="disc=7,canal=9")
    skips = _skips(result.summary)
    assert any("gone.nii.gz: image file not found" in s for s in skips)
    assert any("case02" in s and "appears 2 times" in s for s in skips)
    assert len(read_manifest(result.manifest)) == 4


# -- rsna2024 ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsna_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    truth = write_rsna2024(root, n_studies=6, seed=0)
    return root, truth


def test_rsna_manifest_grades_views_and_level_points(rsna_root, tmp_path) -> None:
    root, truth = rsna_root
    result = prepare_dataset("rsna2024", root, tmp_path / "out", seed=0)
    df = read_manifest(result.manifest)
    labels = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False).set_index("study_id")
    assert len(df) == 6 and result.summary["n_skipped"] == 0
    mapping = {"Normal/Mild": 0, "Moderate": 2, "Severe": 3, "": -1}
    for _, row in df.iterrows():
        for level in LEVELS:
            expected = mapping[labels.loc[row["case_id"], f"spinal_canal_stenosis_{level_key(level)}"]]
            assert row[f"grade_{level_key(level)}"] == expected
    assert df["img_sag_t1"].notna().all() and df["img_sag_t2"].notna().all()
    assert df["img_ax_l1_l2"].isna().all() and df["img_ax_l4_l5"].notna().all()  # no axial block at L1-L2
    assert all(df[f"seg_{v}"].isna().all() for v in ("sag_t2", "ax_l4_l5"))  # RSNA has no masks
    assert not result.summary["scored"]["segmentation"] and result.summary["scored"]["grades"]
    points = reference_points(df)
    expected = np.stack([[truth[sid][lv.replace("-", "/")] for lv in LEVELS] for sid in df["case_id"]])
    assert np.allclose(points, expected, atol=1e-3)  # pixel (x, y) on the instance -> RAS mm
    assert level_localisation_metrics(points, expected)["loc_mean_mm"] == pytest.approx(0, abs=1e-3)
    # the level point lands on the written sag_t2 view where the meta row/col say
    first = df.iloc[0]
    view = read_nifti(resolve(result.manifest.parent, first["img_sag_t2"]))
    rc = np.array([first["meta_loc_l3_l4_row"], first["meta_loc_l3_l4_col"], 0.0])
    assert np.allclose(view.affine[:3, :3] @ rc + view.affine[:3, 3], expected[0, 2], atol=1e-3)
    # axial view of L4-L5 is the labelled instance: its plane passes through the canal point at that level
    ax = read_nifti(resolve(result.manifest.parent, first["img_ax_l4_l5"]))
    voxel = np.linalg.inv(ax.affine) @ np.r_[expected[0, 3], 1]
    assert abs(voxel[2]) < 1e-3
    reports = json.loads(first["reports"])
    assert len(reports) == 3 and all("L4-L5" in r for r in reports)


def test_rsna_normal_mild_option(rsna_root, tmp_path) -> None:
    root, _ = rsna_root
    df = read_manifest(prepare_dataset("rsna2024", root, tmp_path / "out", normal_mild_grade=1).manifest)
    grades = df[[f"grade_{level_key(lv)}" for lv in LEVELS]].to_numpy()
    assert 1 in grades and 0 not in grades
    with pytest.raises(ConfigError, match="normal_mild_grade"):
        prepare_dataset("rsna2024", root, tmp_path / "out2", normal_mild_grade=2)


def test_rsna_bad_input_is_listed_and_skipped(rsna_root, tmp_path) -> None:
    src, _ = rsna_root
    root = tmp_path / "rsna"
    shutil.copytree(src, root)
    labels = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    sids = labels["study_id"].tolist()
    labels.loc[0, "spinal_canal_stenosis_l4_l5"] = "Mild"  # unknown severity string
    labels = pd.concat([labels, labels.iloc[[1]]])  # duplicated study id
    labels.to_csv(root / "train.csv", index=False)
    series = pd.read_csv(root / "train_series_descriptions.csv", dtype=str)
    t1_of_2 = series[(series.study_id == sids[2]) & (series.series_description == "Sagittal T1")].series_id.iloc[0]
    shutil.rmtree(root / "train_images" / sids[2] / t1_of_2)  # series listed but missing
    shutil.rmtree(root / "train_images" / sids[3])  # whole study missing
    coords = pd.read_csv(root / "train_label_coordinates.csv", dtype=str)
    t2_of_4 = series[(series.study_id == sids[4]) & (series.series_description == "Sagittal T2/STIR")].series_id.iloc[0]
    coords.loc[len(coords)] = [sids[4], t2_of_4, "99", "Spinal Canal Stenosis", "L1/L2", "1", "1"]
    coords.to_csv(root / "train_label_coordinates.csv", index=False)
    # mixed orientations in the sagittal T2 of study 5: tilt one instance
    t2_of_5 = series[(series.study_id == sids[5]) & (series.series_description == "Sagittal T2/STIR")].series_id.iloc[0]
    one = sorted((root / "train_images" / sids[5] / t2_of_5).glob("*.dcm"))[0]
    ds = pydicom.dcmread(one)
    ds.ImageOrientationPatient = [0, 0.9848, 0.1736, 0, 0.1736, -0.9848]
    ds.save_as(one)

    # missing PixelSpacing on the axial instance labelled for L4-L5 in study 4
    ax_of_4 = series[(series.study_id == sids[4]) & (series.series_description == "Axial T2")].series_id.iloc[0]
    labelled = coords[(coords.series_id == ax_of_4) & (coords.level == "L4/L5")].instance_number.iloc[0]
    no_spacing = root / "train_images" / sids[4] / ax_of_4 / f"{labelled}.dcm"
    ds = pydicom.dcmread(no_spacing)
    del ds.PixelSpacing
    ds.save_as(no_spacing)

    result = prepare_dataset("rsna2024", root, tmp_path / "out")
    skips = _skips(result.summary)
    assert any(f"study {sids[4]} L4-L5 axial view" in s and "missing PixelSpacing" in s for s in skips)
    assert any(f"study {sids[0]} spinal_canal_stenosis_l4_l5" in s and "unknown severity 'Mild'" in s for s in skips)
    assert any(f"study {sids[1]}" in s and "duplicated study_id" in s for s in skips)
    assert any(f"series {t1_of_2}" in s and "series folder not found" in s for s in skips)
    assert any(f"study {sids[3]}" in s and "image folder" in s and "not found" in s for s in skips)
    assert any("instance 99" in s and "points to a missing file" in s for s in skips)
    assert any(f"study {sids[5]}" in s and "mixed orientations in one series" in s for s in skips)
    df = read_manifest(result.manifest)
    by_id = df.set_index("case_id")
    assert sids[1] not in by_id.index and sids[3] not in by_id.index
    assert by_id.loc[sids[0], "grade_l4_l5"] == -1
    assert pd.isna(by_id.loc[sids[2], "img_sag_t1"]) and not pd.isna(by_id.loc[sids[2], "img_sag_t2"])
    assert pd.isna(by_id.loc[sids[5], "img_sag_t2"]) and not pd.isna(by_id.loc[sids[5], "img_sag_t1"])
    assert pd.isna(by_id.loc[sids[4], "img_ax_l4_l5"]) and not pd.isna(by_id.loc[sids[4], "img_ax_l3_l4"])
    saved = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert saved["n_skipped"] == len(skips)


def test_rsna_global_errors_leave_nothing(rsna_root, tmp_path) -> None:
    src, _ = rsna_root
    root = tmp_path / "rsna"
    shutil.copytree(src, root)
    (root / "train_series_descriptions.csv").unlink()
    with pytest.raises(DataError, match="train_series_descriptions.csv: file not found"):
        prepare_dataset("rsna2024", root, tmp_path / "out")
    shutil.rmtree(root / "train_images")
    shutil.copy(src / "train_series_descriptions.csv", root)
    with pytest.raises(DataError, match="no usable case.*image folder"):
        prepare_dataset("rsna2024", root, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_prepare_cli(rsna_root, tmp_path, capsys) -> None:
    root, _ = rsna_root
    out = tmp_path / "out"
    assert cli_main(["prepare", "rsna2024", "--root", str(root), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "rsna2024: 6 case(s)" in printed and "segmentation NO" in printed
    assert cli_main(["prepare", "rsna2024", "--root", str(root), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli_main(["prepare", "rsna2024", "--root", str(root), "--out", str(out), "--labels", "disc=1"]) == 2
    assert "--labels does not apply to rsna2024" in capsys.readouterr().err
    assert cli_main(["prepare", "nifti", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "dataset root not found" in capsys.readouterr().err


# -- spider ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spider_root(tmp_path_factory):
    return write_spider(tmp_path_factory.mktemp("spider"), n_patients=4)


def test_spider_views_labels_and_axial_reslice(spider_root, tmp_path) -> None:
    result = prepare_dataset("spider", spider_root, tmp_path / "out")
    df = read_manifest(result.manifest)
    assert len(df) == 4 and result.summary["n_skipped"] == 0
    assert all(df[f"seg_{v}"].notna().all() for v in ("sag_t1", "sag_t2", "ax_l1_l2", "ax_l5_s1"))
    assert (df[[f"grade_{level_key(lv)}" for lv in LEVELS]] == -1).all().all()  # SPIDER has no stenosis grades
    assert not result.summary["scored"]["grades"] and result.summary["scored"]["segmentation"]
    base = result.manifest.parent
    sag = read_nifti(resolve(base, df.loc[0, "seg_sag_t2"]))
    assert set(np.unique(sag.data)) == {0, 1, 2, 3}  # vertebra -> body, disc, canal -> thecal sac
    for value, centre in SPIDER_DISC_CENTRES.items():
        level = {201: "l5_s1", 202: "l4_l5", 203: "l3_l4", 204: "l2_l3", 205: "l1_l2"}[value]
        ax = read_nifti(resolve(base, df.loc[0, f"seg_ax_{level}"]))
        # the disc centre lies in the resliced plane, on a disc pixel
        row, col, depth = np.linalg.inv(ax.affine)[:3] @ np.r_[centre, 1]
        assert abs(depth) < 0.5 and ax.data[int(round(row)), int(round(col)), 0] == 2
        area = df.loc[0, f"meta_canal_area_mm2_{level}"]
        assert SPIDER_CANAL_AREA_MM2 * 0.7 < area < SPIDER_CANAL_AREA_MM2 * 1.3  # 3.3 mm slices blur left-right
    assert df.loc[0, "meta_pfirrmann_l4_l5"] == 1 + (1 + 2) % 5 and df.loc[0, "meta_disc_bulging_l5_s1"] == 1


def test_spider_bad_input_is_listed(spider_root, tmp_path) -> None:
    root = tmp_path / "spider"
    shutil.copytree(spider_root, root)
    (root / "masks" / "1_t1.mha").unlink()  # image without mask
    (root / "images" / "notes.txt").write_text("x")  # stray file
    (root / "images" / "3_t1.mha").write_bytes(b"broken")  # unreadable image
    (root / "images" / "3_t2.mha").unlink()
    (root / "masks" / "3_t2.mha").unlink()
    result = prepare_dataset("spider", root, tmp_path / "out")
    skips = _skips(result.summary)
    assert any("masks/1_t1.mha: mask not found" in s for s in skips)
    assert any("notes.txt: not a SPIDER image name" in s for s in skips)
    assert any("3_t1.mha: not a readable image" in s for s in skips)
    assert any("patient 3: no readable T1 or T2 image" in s for s in skips)
    df = read_manifest(result.manifest).set_index("case_id")
    assert "3" not in df.index and pd.isna(df.loc["1", "seg_sag_t1"]) and not pd.isna(df.loc["1", "img_sag_t1"])


# -- mendeley ----------------------------------------------------------------------------------------------------------
def test_mendeley_axial_labels_and_empty_sagittal(tmp_path) -> None:
    root = write_mendeley(tmp_path / "mendeley", n_patients=4)
    result = prepare_dataset("mendeley", root, tmp_path / "out")
    df = read_manifest(result.manifest)
    assert len(df) == 4 and df["img_sag_t1"].isna().all() and df["img_sag_t2"].isna().all()
    assert df["img_ax_l1_l2"].isna().all() and df["seg_ax_l5_s1"].notna().all()
    seg = read_nifti(resolve(result.manifest.parent, df.loc[0, "seg_ax_l3_l4"]))
    assert set(np.unique(seg.data)) == {0, 2, 3, 4}  # IVD -> disc, TS -> thecal sac, PE -> posterior, AAP -> bg
    assert seg.affine[:3, 0] @ [0, -1, 0] > 0 and seg.affine[:3, 1] @ [-1, 0, 0] > 0  # rows A->P, cols R->L
    assert np.allclose(np.linalg.norm(seg.affine[:3, :2], axis=0), 0.6875)


def test_mendeley_bad_input_is_listed(tmp_path) -> None:
    import SimpleITK as sitk

    root = write_mendeley(tmp_path / "mendeley", n_patients=4)
    (root / "0001" / "L4_L5_label.png").unlink()
    bad = np.full((64, 64), 255, dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(bad), str(root / "0002" / "L5S1_label.png"))
    for path in (root / "0003").iterdir():
        path.unlink()
    result = prepare_dataset("mendeley", root, tmp_path / "out", pixel_spacing=0.5)
    skips = _skips(result.summary)
    assert any("patient 0001 L4-L5: label image not found" in s for s in skips)
    assert any("L5S1_label.png: label value(s) [255]" in s for s in skips)
    assert any("0003: no axial image named after a level" in s for s in skips)
    df = read_manifest(result.manifest).set_index("case_id")
    assert pd.isna(df.loc["0001", "seg_ax_l4_l5"]) and not pd.isna(df.loc["0001", "img_ax_l4_l5"])
    assert pd.isna(df.loc["0002", "img_ax_l5_s1"]) and "0003" not in df.index


def test_same_seed_same_output(rsna_root, tmp_path) -> None:
    root, _ = rsna_root
    first = prepare_dataset("rsna2024", root, tmp_path / "a", seed=5).manifest.read_text()
    second = prepare_dataset("rsna2024", root, tmp_path / "b", seed=5).manifest.read_text()
    assert first == second


def test_assign_splits_is_seeded_patient_level_and_nonempty() -> None:
    from lss_vlm.data.splits import assign_splits

    patients = [f"p{i}" for i in range(20)]
    strata = {p: i % 4 for i, p in enumerate(patients)}
    a = assign_splits(patients + patients[:5], seed=1, strata=strata)
    assert a == assign_splits(patients, seed=1, strata=strata) and set(a) == set(patients)
    assert sorted(list(a.values()).count(s) for s in ("train", "val", "test")) == [4, 4, 12]
    assert set(assign_splits(["a", "b", "c"], seed=0).values()) == {"train", "val", "test"}
    with pytest.raises(ConfigError, match="split fractions"):
        assign_splits(patients, val_frac=0.6, test_frac=0.5)


@pytest.mark.parametrize("dataset", ["rsna2024", "spider", "mendeley", "nifti"])
def test_prepared_manifest_loads_into_contract_batches(dataset, rsna_root, spider_root, tmp_path) -> None:
    dataset_module = pytest.importorskip("lss_vlm.data.dataset", reason="needs the phantom's data loader")
    import torch

    roots = {
        "rsna2024": lambda: rsna_root[0],
        "spider": lambda: spider_root,
        "mendeley": lambda: write_mendeley(tmp_path / "src", n_patients=4),
        "nifti": lambda: write_nifti(tmp_path / "src", n_cases=4),
    }
    options = {"labels": "disc=7,canal=9"} if dataset == "nifti" else {}
    manifest = prepare_dataset(dataset, roots[dataset](), tmp_path / "out", **options).manifest
    batch = next(iter(dataset_module.build_dataloader(manifest, "train", spatial_size=32, batch_size=2, cache=False)))
    b = len(batch["case_id"])
    assert batch["views"].shape == (b, 7, 1, 32, 32) and batch["views"].dtype == torch.float32
    assert batch["masks"].shape == (b, 7, 32, 32) and batch["masks"].dtype == torch.int64
    assert batch["grades"].shape == (b, 5) and batch["spacing"].shape == (b, 7, 2)
    df = read_manifest(manifest).set_index("case_id").loc[batch["case_id"]]
    has_image = df[
        [f"img_{v}" for v in ("sag_t1", "sag_t2", "ax_l1_l2", "ax_l2_l3", "ax_l3_l4", "ax_l4_l5", "ax_l5_s1")]
    ]
    assert torch.equal(batch["view_valid"], torch.as_tensor(has_image.notna().to_numpy()))
    has_mask = df[
        [f"seg_{v}" for v in ("sag_t1", "sag_t2", "ax_l1_l2", "ax_l2_l3", "ax_l3_l4", "ax_l4_l5", "ax_l5_s1")]
    ]
    assert torch.equal(batch["mask_valid"], torch.as_tensor(has_mask.notna().to_numpy()))
    assert int(batch["masks"].max()) <= 5 and (batch["masks"][~batch["mask_valid"]] == 0).all()


def test_nifti_adapter_keeps_user_splits_and_reports(tmp_path) -> None:
    manifest_in = write_nifti(tmp_path / "src", n_cases=4)
    df = pd.read_csv(manifest_in, dtype=str)
    df["split"] = ["test", "train", "train", "val"]
    df["reports"] = [json.dumps([f"report {i}"]) for i in range(4)]
    df["clinical_egfr"] = ["61", "", "88.5", "70"]  # an extra numeric clinical column is copied (empty = unknown)
    df.to_csv(manifest_in, index=False)
    out = read_manifest(prepare_dataset("nifti", tmp_path / "src", tmp_path / "out", labels="disc=7,canal=9").manifest)
    assert out["split"].tolist() == ["test", "train", "train", "val"]
    assert json.loads(out.loc[2, "reports"]) == ["report 2"]
    assert out.loc[2, "clinical_egfr"] == 88.5 and pd.isna(out.loc[1, "clinical_egfr"])


def test_grade_confusion_matrix_of_a_dataset_without_grades_is_empty() -> None:
    import torch

    from lss_vlm.metrics.classification import GradeMetrics

    metrics = GradeMetrics()
    metrics.update(torch.full((2, 5, 4), 0.25), torch.full((2, 5), -1))  # SPIDER/Mendeley: every grade unknown
    assert metrics.confusion_matrix().tolist() == [[0] * 4] * 4
    metrics.update(torch.tensor([[[0.1, 0.2, 0.6, 0.1]] * 5]), torch.tensor([[2, -1, -1, -1, -1]]))
    assert metrics.confusion_matrix()[2, 2] == 1 and metrics.confusion_matrix().sum() == 1
