"""Multi-rater merging of boxes and points, and its use on RSNA 2024's spinal-canal coordinates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from real_layouts import write_rsna2024

from benchmarks.cli import main as cli
from lss_vlm.constants import LEVELS, level_key
from lss_vlm.data.adapters import prepare_dataset
from lss_vlm.data.manifest import read_manifest
from lss_vlm.data.multirater import consensus_point, merge_boxes, merge_points
from lss_vlm.errors import ConfigError
from lss_vlm.metrics.localisation import reference_points


def test_overlapping_boxes_of_similar_shape_merge_to_their_corners() -> None:
    boxes = np.array(
        [
            [10, 10, 30, 20],  # rater 1
            [11, 10, 31, 21],  # rater 2: IoU ~0.83, same shape -> merged with 1
            [10, 10, 30, 20],  # rater 3: exact duplicate of 1
            [10, 10, 20, 30],  # same corner, tall instead of wide: IoU 1/3 and another aspect ratio -> kept apart
            [60, 60, 70, 70],  # another structure
        ]
    )
    merged, group = merge_boxes(boxes)
    assert group.tolist() == [0, 0, 0, 1, 2]
    assert merged.tolist() == [[10, 10, 31, 21], [10, 10, 20, 30], [60, 60, 70, 70]]
    # the aspect test alone separates boxes that overlap enough: a 20 x 10 box inside a 20 x 12 one (IoU 0.83)
    _, strict = merge_boxes(np.array([[0, 0, 20, 10], [0, 0, 20, 12]]), aspect_tolerance=0.1)
    _, loose = merge_boxes(np.array([[0, 0, 20, 10], [0, 0, 20, 12]]), aspect_tolerance=0.25)
    assert strict.tolist() == [0, 1] and loose.tolist() == [0, 0]
    assert merge_boxes(np.zeros((0, 4)))[0].shape == (0, 4)
    with pytest.raises(ValueError, match="x0 <= x1"):
        merge_boxes(np.array([[5, 0, 1, 3]]))


def test_points_merge_within_the_radius_and_the_majority_wins() -> None:
    points = np.array([[0.0, 0.0], [3.0, 0.0], [6.0, 0.0], [40.0, 0.0]])  # a chain of three, one outlier
    merged, group = merge_points(points, radius=4.0)
    assert group.tolist() == [0, 0, 0, 1] and np.allclose(merged, [[3.0, 0.0], [40.0, 0.0]])
    consensus = consensus_point(points, radius=4.0)
    assert np.allclose(consensus.point, [3.0, 0.0]) and (consensus.n_raters, consensus.n_dropped) == (3, 1)
    assert merge_points(points, radius=0.0)[0].shape == (4, 2)  # radius 0: nothing merges


@pytest.fixture(scope="module")
def overlapping_rsna(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """Two RSNA studies; study 0 L4/L5 gets two more raters 4 mm either side of the first (3 rows that agree within
    10 mm), study 1 L2/L3 a second rater 40 mm away (2 rows that disagree)."""
    root = tmp_path_factory.mktemp("overlapping") / "rsna"
    truth = write_rsna2024(root, n_studies=2, seed=0)
    path = root / "train_label_coordinates.csv"
    coords = pd.read_csv(path, dtype=str)
    canal = coords[coords["condition"] == "Spinal Canal Stenosis"]
    sids = sorted(truth)
    extra = []
    agree = canal[(canal["study_id"] == sids[0]) & (canal["level"] == "L4/L5")].iloc[0]
    for dx in (-2.0, 2.0):  # two more raters, 2 pixels (4 mm) either side of the first: the mean is the truth
        extra.append({**agree.to_dict(), "x": str(float(agree["x"]) + dx)})
    outlier = canal[(canal["study_id"] == sids[1]) & (canal["level"] == "L2/L3")].iloc[0]
    extra.append({**outlier.to_dict(), "x": str(float(outlier["x"]) + 20.0)})  # 40 mm away: dropped
    pd.concat([coords, pd.DataFrame(extra)]).to_csv(path, index=False)
    return root, truth, sids


def test_rsna_adapter_merges_raters_points_per_level(overlapping_rsna, tmp_path) -> None:
    root, truth, sids = overlapping_rsna
    result = prepare_dataset("rsna2024", root, tmp_path / "out")
    df = read_manifest(result.manifest).set_index("case_id").loc[sids]
    expected = np.stack([[truth[sid][lv.replace("-", "/")] for lv in LEVELS] for sid in sids])
    assert np.allclose(reference_points(df.reset_index()), expected, atol=1e-3)
    assert df.loc[sids[0], f"meta_loc_{level_key('L4-L5')}_n"] == 3
    assert df.loc[sids[1], f"meta_loc_{level_key('L2-L3')}_n"] == 2
    summary = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert summary["found"]["level_points_merged"] == 2 and summary["found"]["level_points_dropped"] == 1
    dropped = [s for s in summary["skipped"] if "L2-L3 spinal canal point" in s["item"]]
    assert len(dropped) == 1 and "2 rows disagree" in dropped[0]["reason"] and "dropped 1" in dropped[0]["reason"]
    with pytest.raises(ConfigError, match="merge_radius_mm"):
        prepare_dataset("rsna2024", root, tmp_path / "bad", merge_radius_mm=-1)


@pytest.mark.parametrize(
    ("radius", "merged", "dropped", "n_l45"),
    [
        ("2", 0, 3, 3),  # 4 mm apart: nothing merges; the first of three equal groups is kept, the outlier dropped
        ("10", 2, 1, 3),  # the default: the three agreeing raters merge, the 40 mm outlier is dropped
        ("50", 3, 0, 3),  # the outlier merges too
    ],
)
def test_prepare_cli_merge_radius_counts_merged_and_dropped_points(
    overlapping_rsna, tmp_path, capsys, radius, merged, dropped, n_l45
) -> None:
    root, _, sids = overlapping_rsna
    out = tmp_path / "out"
    argv = ["prepare", "rsna2024", "--root", str(root), "--out", str(out), "--no-progress"]
    assert cli([*argv, "--merge-radius-mm", radius]) == 0
    assert f"level_points_merged {merged}" in capsys.readouterr().out
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["found"].get("level_points_merged", 0) == merged
    assert summary["found"].get("level_points_dropped", 0) == dropped
    df = read_manifest(out / "manifest.csv").set_index("case_id")
    assert df.loc[sids[0], f"meta_loc_{level_key('L4-L5')}_n"] == n_l45


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--merge-radius-mm", "-1"], "argument --merge-radius-mm: expected a finite number of mm >= 0, got '-1'"),
        (["--merge-radius-mm", "nan"], "argument --merge-radius-mm: expected a finite number of mm >= 0, got 'nan'"),
    ],
)
def test_prepare_cli_bad_merge_radius_is_one_error_line(overlapping_rsna, tmp_path, capsys, extra, message) -> None:
    root, _, _ = overlapping_rsna
    with pytest.raises(SystemExit) as exc:
        cli(["prepare", "rsna2024", "--root", str(root), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len([x for x in err.splitlines() if "error:" in x]) == 1
    assert not (tmp_path / "out").exists()
    assert cli(["prepare", "spider", "--root", str(root), "--out", str(tmp_path / "o"), "--merge-radius-mm", "5"]) == 2
    assert "--merge-radius-mm applies to rsna2024 only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
