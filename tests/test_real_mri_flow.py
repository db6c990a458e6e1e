"""Issue 14 end to end on the vendored real MRI slices: ``prepare images`` → ``train`` → ``evaluate --manifest`` with no
hand edits, a segmentation-only dataset with partial labels, and cross-dataset evaluation that leaves the run alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmarks.cli import main as cli
from benchmarks.config import dump_config, load_config
from lss_vlm.engine.checkpoints import InitWeightsWarning

FIXTURES = Path(__file__).parent / "fixtures" / "vertebrae"


def _overrides(manifest: Path) -> list[str]:
    return [
        f"data.manifest={manifest}", "data.spatial_size=64", "data.batch_size=2", "model.preset=spca_tiny",
        "loss.name=dice", "train.epochs=1", "train.device=cpu", "train.quiet=true", "eval.max_report_tokens=8",
        "eval.text_metrics=false",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vert") / "prepared"
    argv = ["prepare", "images", "--root", str(FIXTURES), "--out", str(out), "--view", "sag_t2"]
    argv += ["--pixel-spacing", "1.2", "--labels", "disc=1,vertebra=2", "--labelled-classes", "disc,vertebral_body"]
    argv += ["--absent-means-unlabelled", "--no-progress", "--dataset-name", "vertebrae"]
    assert cli(argv) == 0
    manifest = out / "manifest.csv"
    df = pd.read_csv(manifest, dtype=str)
    df["split"] = ["train", "train", "val"]  # 3 cases: a val case is needed, and the disc-only case 13 must train
    df.loc[df["case_id"] == "13", "split"] = "train"
    df.loc[df["case_id"] == "2", "split"] = "val"
    df.loc[df["case_id"] == "0", "split"] = "train"
    df.to_csv(manifest, index=False)
    return manifest


def test_prepare_train_evaluate_on_real_slices(real_manifest, tiny_phantom, tmp_path, capsys) -> None:
    config = tmp_path / "real.yaml"
    dump_config(load_config(None, _overrides(real_manifest)), config)
    run = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(run), "--quiet", "--set", "eval.split=val"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # segmentation-only dataset: the classes it labels are scored, the others and the grade metrics are not
    assert 0.0 <= metrics["dice/disc"] <= 1.0 and metrics["n/disc"] == 1.0
    assert math.isnan(metrics["dice/thecal_sac"]) and metrics["n/thecal_sac"] == 0.0
    assert math.isnan(metrics["accuracy"])
    history = pd.read_csv(run / "history.csv")
    assert history["train/seg_loss"].notna().all()

    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    out = tmp_path / "cross"
    argv = ["evaluate", str(run), "--manifest", str(real_manifest), "--split", "all", "--out", str(out)]
    assert cli([*argv, "--contact-sheet", "1"]) == 0
    with Image.open(out / "cases.jpg") as sheet:  # the worst view, truth beside prediction
        assert sheet.format == "JPEG" and sheet.width > sheet.height
    per_case = pd.read_csv(out / "per_case.csv", dtype={"case_id": str})
    assert sorted(per_case["case_id"]) == ["13", "2"]  # every case with a mask, whatever its split
    assert math.isnan(per_case.set_index("case_id").loc["13", "dice/vertebral_body"])  # not labelled there
    scored = json.loads((out / "metrics.json").read_text())
    assert scored["n/disc"] == 2.0 and scored["n/vertebral_body"] == 1.0
    after = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert after == before  # the run is not touched

    # a phantom-trained run scored on the real slices (cross-dataset evaluation)
    phantom_cfg = tmp_path / "phantom.yaml"
    dump_config(load_config(None, _overrides(tiny_phantom)), phantom_cfg)
    assert cli(["train", str(phantom_cfg), "--out", str(tmp_path / "ph"), "--quiet"]) == 0
    assert cli(["evaluate", str(tmp_path / "ph"), "--manifest", str(real_manifest), "--split", "all"]) == 0
    default_out = tmp_path / "ph" / "eval_prepared_all"
    assert (default_out / "metrics.json").is_file() and (default_out / "per_case.csv").is_file()

    # fine-tuned on the real slices from the phantom run, whose report decoder has the phantom's vocabulary (the
    # real set has no reports): it used to fail ("the weights do not fit"); the image side loads, the words stay fresh
    weights = tmp_path / "ph" / "model.safetensors"
    with pytest.warns(InitWeightsWarning, match=r"lm_head\.weight \(the runs' report vocabularies differ\)"):
        code = cli(
            [
                "train",
                str(config),
                "--out",
                str(tmp_path / "ft"),
                "--quiet",
                "--set",
                "eval.split=val",
                "--set",
                f"train.init_weights={weights}",
            ]
        )
    assert code == 0 and json.loads((tmp_path / "ft" / "status.json").read_text())["status"] == "completed"

    capsys.readouterr()
    assert cli(["evaluate", str(run), "--manifest", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0]


def test_geometry_keys_in_the_config_schema() -> None:
    """Issue 14: data.target_spacing was an unknown key; geometry now lives in the schema with documented defaults."""
    from benchmarks.runner import view_spacing
    from lss_vlm.errors import ConfigError

    default = load_config(None, ["data.spatial_size=64"])
    assert view_spacing(default.data) == {"sagittal": 205.0 / 64, "axial": 110.0 / 64}
    cfg = load_config(None, ["data.target_spacing.sagittal=1.5", "data.fov_mm.axial=128", "data.spatial_size=64"])
    assert view_spacing(cfg.data) == {"sagittal": 1.5, "axial": 2.0}
    with pytest.raises(ConfigError, match="target_spacing.sagittal"):
        load_config(None, ["data.target_spacing.sagittal=0"])


def test_cropped_labels_are_counted_in_a_warning(real_manifest) -> None:
    """Issue 14: labelled area cropped away by the fixed 205 mm sagittal field of view went unreported."""
    import warnings

    from lss_vlm.data.dataset import build_dataset
    from lss_vlm.data.transforms import CroppedLabelsWarning

    with pytest.warns(CroppedLabelsWarning, match=r"case 2 sag_t2, (\d+) of (\d+) labelled pixels") as record:
        build_dataset(real_manifest, "val", spatial_size=64)
    message = str(record[0].message)
    lost, total = (int(x) for x in message.split("case 2 sag_t2, ")[1].split(" labelled")[0].split(" of "))
    assert 0 < lost < total
    with warnings.catch_warnings():
        warnings.simplefilter("error", CroppedLabelsWarning)
        build_dataset(real_manifest, "val", spatial_size=64, target_spacing={"sagittal": 256 * 1.2 / 64})


def test_splits_are_made_per_source_dataset(tmp_path) -> None:
    """Issue 14: the automatic split ignored the source (1 of 5 cases of one source landed in train)."""
    import nibabel as nib
    import numpy as np

    from lss_vlm.data.adapters import prepare_dataset
    from lss_vlm.data.manifest import read_manifest

    src = tmp_path / "src"
    src.mkdir()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])[:, [2, 1, 0, 3]]  # rows I-S, cols A-P, normal L-R
    nib.save(nib.Nifti1Image(np.ones((16, 16, 1), np.float32), affine), src / "s.nii.gz")
    rows = [f"a{i},a,s.nii.gz" for i in range(5)] + [f"b{i},b,s.nii.gz" for i in range(15)]
    (src / "manifest.csv").write_text("case_id,dataset,img_sag_t2\n" + "\n".join(rows) + "\n")
    result = prepare_dataset("nifti", src, tmp_path / "out", val_frac=0.2, test_frac=0.2)
    df = read_manifest(result.manifest)
    counts = df.groupby("dataset")["split"].value_counts().unstack(fill_value=0)
    assert counts.loc["a"].to_dict() == {"test": 1, "train": 3, "val": 1}
    assert counts.loc["b"].to_dict() == {"test": 3, "train": 9, "val": 3}


def test_leaderboard_says_how_many_images_scored_each_class(tmp_path) -> None:
    """Issue 14: with partial labels the leaderboard gave no hint which classes were scored, and on how many cases."""
    from synthetic_runs import write_suite

    from benchmarks.leaderboard import build_leaderboard, to_markdown

    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "tversky": 0.75}, seeds=1)
    for metrics_file in (suite / "runs").glob("*/seed0/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        metrics.update({"n/vertebral_body": 14.0, "n/disc": 17.0, "n/thecal_sac": 0.0})
        metrics_file.write_text(json.dumps(metrics))
    markdown = to_markdown(build_leaderboard(suite))
    expected = "Test images scored per class: vertebral_body 14, disc 17, thecal_sac 0; not scored (left out of Dice"
    assert expected in markdown
