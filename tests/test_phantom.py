"""The phantom: determinism, files and affines, grades measured from the masks, reports, splits, statistics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lss_vlm.constants import AXIAL_VIEWS, GRADES, LABEL_INDEX, LEVELS, VIEWS, grade_from_area, level_key
from lss_vlm.data.manifest import read_manifest
from lss_vlm.data.phantom import SHIFT_PRESETS, PhantomConfig, phantom_stats, synthesize
from lss_vlm.data.phantom.cohort import level_prevalence, sample_grades
from lss_vlm.errors import ConfigError

SAC, DISC = LABEL_INDEX["thecal_sac"], LABEL_INDEX["disc"]


def _data(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)[:, :, 0]


@pytest.fixture(scope="module")
def modest_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 cases at 64 px: large enough for follow-up studies, strata and class-share statistics."""
    return synthesize(tmp_path_factory.mktemp("modest"), n_cases=40, size=64, seed=3)


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", n_cases=6, size=40, seed=7).parent
    b = synthesize(tmp_path / "b", n_cases=6, size=40, seed=7).parent
    c = synthesize(tmp_path / "c", n_cases=6, size=40, seed=8).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert len(files) == 6 * (len(VIEWS) + len(AXIAL_VIEWS) + 1)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert any(not np.array_equal(_data(a / f), _data(c / f)) for f in files)


def test_views_have_mm_affines_in_canonical_orientation(tiny_phantom: Path) -> None:
    df = read_manifest(tiny_phantom)
    row = df.iloc[0]
    for view in VIEWS:
        image = nib.load(tiny_phantom.parent / row[f"img_{view}"])
        mask = nib.load(tiny_phantom.parent / row[f"seg_{view}"])
        assert image.shape == mask.shape == (64, 64, 1)
        assert image.header.get_xyzt_units()[0] == "mm"
        np.testing.assert_allclose(image.affine, mask.affine)
        zooms = image.header.get_zooms()
        expected = ("I", "P", "R") if view.startswith("sag") else ("P", "L", "S")
        assert nib.aff2axcodes(image.affine) == expected
        fov = zooms[0] * 64
        assert (180 < fov < 240) if view.startswith("sag") else (90 < fov < 130), (view, fov)
        assert 2.5 <= zooms[2] <= 5.0  # slice thickness


def test_manifest_is_valid_and_complete(tiny_phantom: Path) -> None:
    df = read_manifest(tiny_phantom)
    assert len(df) == 12 and set(df["split"]) == {"train", "val", "test"}
    assert (df["dataset"] == "phantom").all()
    for column in ("age", "sex", "bmi", "symptom_months", "claudication", "odi"):
        assert df[column].notna().all()
    assert df["odi"].between(0, 100).all() and set(df["sex"]) <= {0.0, 1.0}


def test_stored_area_is_the_mask_area_and_grade_follows_cutoffs(tiny_phantom: Path) -> None:
    df = read_manifest(tiny_phantom)
    for _, row in df.iterrows():
        for level, view in zip(LEVELS, AXIAL_VIEWS):
            path = tiny_phantom.parent / row[f"seg_{view}"]
            zooms = nib.load(path).header.get_zooms()
            area = (_data(path) == SAC).sum() * zooms[0] * zooms[1]
            assert row[f"area_{level_key(level)}"] == pytest.approx(area, abs=1e-3)
            assert row[f"grade_{level_key(level)}"] == grade_from_area(area)


def test_sagittal_canal_narrows_at_stenotic_levels(modest_phantom: Path) -> None:
    """The sac on the sagittal mask is thinner (fewer sac pixels per row) in cases with worse grades."""
    df = read_manifest(modest_phantom)
    worst = df[[f"grade_{level_key(lv)}" for lv in LEVELS]].max(axis=1)
    sac_pixels = [(_data(modest_phantom.parent / p) == SAC).sum() for p in df["seg_sag_t2"]]
    normal = np.mean([n for n, g in zip(sac_pixels, worst) if g == 0])
    severe = np.mean([n for n, g in zip(sac_pixels, worst) if g == 3])
    assert severe < normal


def test_reports_name_every_level_and_grade(tiny_phantom: Path) -> None:
    df = read_manifest(tiny_phantom)
    for _, row in df.iterrows():
        reports = json.loads(row["reports"])
        assert len(reports) >= 3 and len(set(reports)) == len(reports)
        for text in reports:
            for level in LEVELS:
                assert level in text
        grades = [GRADES[row[f"grade_{level_key(lv)}"]] for lv in LEVELS]
        for grade in set(grades) - {"normal"}:
            assert all(grade in text for text in reports)


def test_splits_are_patient_level_and_stratified(modest_phantom: Path) -> None:
    df = read_manifest(modest_phantom)
    assert df["patient_id"].nunique() < len(df)  # some patients have a follow-up study
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    patients = df.groupby("patient_id").agg(split=("split", "first"))
    shares = patients["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.07)
    assert shares["val"] == pytest.approx(0.2, abs=0.07) and shares["test"] == pytest.approx(0.2, abs=0.07)
    worst = df.assign(w=df[[f"grade_{level_key(lv)}" for lv in LEVELS]].max(axis=1)).groupby("patient_id")["w"].max()
    for grade, count in worst.value_counts().items():
        if count >= 5:  # every sizeable stratum reaches every split
            assert set(patients.loc[worst[worst == grade].index, "split"]) == {"train", "val", "test"}, grade


def test_class_imbalance_is_real(modest_phantom: Path) -> None:
    stats = phantom_stats(modest_phantom)
    share = stats["class_share"]
    assert sum(share["all"].values()) == pytest.approx(1.0)
    assert 0 < share["all"]["ligamentum_flavum"] < 0.01
    assert 0 < share["axial"]["ligamentum_flavum"] < 0.01
    assert 0 < stats["sac_share_by_grade"]["severe"]["max"] < 0.01
    assert stats["sac_share_by_grade"]["severe"]["mean"] < stats["sac_share_by_grade"]["normal"]["mean"]
    assert stats["area_mask_max_abs_diff_mm2"] < 1e-3
    areas = stats["area_mm2_by_grade"]
    assert areas["normal"]["min"] > 100 and areas["mild"]["max"] <= 100 and areas["severe"]["max"] < 50
    assert sum(stats["grade_counts"].values()) == 40 * len(LEVELS)


def test_level_prevalence_is_imbalanced_and_sampling_matches_it() -> None:
    cfg = PhantomConfig()
    probs = level_prevalence(cfg)
    np.testing.assert_allclose(probs.mean(axis=0), cfg.prevalence)
    l1, l4 = LEVELS.index("L1-L2"), LEVELS.index("L4-L5")
    assert probs[l4, 3] > 2 * probs[l1, 3]  # severe stenosis concentrates at L4-L5
    rng = np.random.default_rng(0)
    draws = np.array([sample_grades(rng.standard_normal(), rng, cfg) for _ in range(6000)])
    freq = np.stack([(draws == g).mean(axis=0) for g in range(len(GRADES))], axis=1)
    np.testing.assert_allclose(freq, probs, atol=0.025)


def test_configured_prevalence_is_respected(tmp_path: Path) -> None:
    manifest = synthesize(tmp_path, n_cases=30, size=40, seed=1, prevalence=(0.1, 0.1, 0.1, 0.7), level_risk=(1.0,) * 5)
    grades = read_manifest(manifest)[[f"grade_{level_key(lv)}" for lv in LEVELS]].to_numpy()
    assert (grades == 3).mean() > 0.5


def test_t1_contrast_shift_makes_csf_dark(tmp_path: Path) -> None:
    base = synthesize(tmp_path / "t2", n_cases=5, size=64, seed=0)
    shifted = synthesize(tmp_path / "t1", n_cases=5, size=64, seed=0, shift="t1_contrast")

    def sac_over_disc(manifest: Path) -> float:
        row = read_manifest(manifest).iloc[0]
        image, mask = _data(manifest.parent / row["img_ax_l1_l2"]), _data(manifest.parent / row["seg_ax_l1_l2"])
        return float(image[mask == SAC].mean() / image[mask == DISC].mean())

    assert sac_over_disc(base) > 1.0 > sac_over_disc(shifted)


@pytest.mark.parametrize("name", sorted(SHIFT_PRESETS))
def test_every_shift_preset_builds_a_valid_config(name: str) -> None:
    from lss_vlm.data.phantom import resolve_config

    assert resolve_config(name) != PhantomConfig()


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid shifts: t1_contrast"):
        synthesize(tmp_path, n_cases=5, shift="nope")
    with pytest.raises(ConfigError, match="prevalence"):
        synthesize(tmp_path, n_cases=5, prevalence=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="no normal cases"):
        synthesize(tmp_path, n_cases=5, prevalence=(0.1, 0.1, 0.1, 0.7))
    with pytest.raises(ConfigError, match="unknown phantom option"):
        synthesize(tmp_path, n_cases=5, colour="red")
    with pytest.raises(ConfigError, match="at least 5"):
        synthesize(tmp_path, n_cases=2)


def test_rerun_is_cached_and_interrupted_run_leaves_nothing_half_written(tmp_path: Path) -> None:
    manifest = synthesize(tmp_path / "ph", n_cases=5, size=40, seed=0)
    stamp = manifest.stat().st_mtime_ns
    assert synthesize(tmp_path / "ph", n_cases=5, size=40, seed=0) == manifest
    assert manifest.stat().st_mtime_ns == stamp  # nothing rewritten

    calls = []

    def interrupt(_: int) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "ph", n_cases=6, size=40, seed=0, progress=interrupt)
    assert manifest.stat().st_mtime_ns == stamp  # the old complete phantom is untouched
    assert not [p for p in (tmp_path / "ph").iterdir() if p.name.startswith(".staging")]
    fresh = synthesize(tmp_path / "ph", n_cases=6, size=40, seed=0)
    assert len(pd.read_csv(fresh)) == 6
    shutil.rmtree(tmp_path / "ph")


def test_montage_is_written(tiny_phantom: Path, tmp_path: Path) -> None:
    from lss_vlm.data.phantom import save_montage

    png = save_montage(tiny_phantom, tmp_path / "m.png", n_cases=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_synth_prints_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli import main

    assert main(["synth", "--out", str(tmp_path), "--cases", "5", "--size", "40", "--stats", "--no-montage"]) == 0
    out = capsys.readouterr().out
    assert "ligamentum_flavum" in out and "grade prevalence" in out
    assert main(["synth", "--out", str(tmp_path), "--shift", "bogus"]) == 2
    assert "valid shifts" in capsys.readouterr().err


def test_clinical_table_worsens_with_severity(modest_phantom: Path) -> None:
    df = read_manifest(modest_phantom)
    worst = df[[f"grade_{level_key(lv)}" for lv in LEVELS]].max(axis=1)
    assert df["odi"].corr(worst, method="spearman") > 0.4
    assert df["age"].corr(worst, method="spearman") > 0.1
    assert df.loc[worst >= 2, "claudication"].mean() > df.loc[worst == 0, "claudication"].mean()


def test_output_does_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", n_cases=5, size=40, seed=4).parent
    two = synthesize(tmp_path / "two", n_cases=5, size=40, seed=4, workers=2).parent
    files = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz")) + [Path("manifest.csv")]
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
