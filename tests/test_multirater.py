"""Multi-rater merging of boxes and points, and its use on RSNA 2024's spinal-canal coordinates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from real_layouts import write_rsna2024

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


def test_rsna_adapter_merges_raters_points_per_level(tmp_path) -> None:
    root = tmp_path / "rsna"
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

    result = prepare_dataset("rsna2024", root, tmp_path / "out")
    df = read_manifest(result.manifest).set_index("case_id").loc[sids]
    expected = np.stack([[truth[sid][lv.replace("-", "/")] for lv in LEVELS] for sid in sids])
    assert np.allclose(reference_points(df.reset_index()), expected, atol=1e-3)
    assert df.loc[sids[0], f"meta_loc_{level_key('L4-L5')}_n"] == 3
    assert df.loc[sids[1], f"meta_loc_{level_key('L2-L3')}_n"] == 2
    summary = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert summary["found"]["level_points_merged"] == 2
    dropped = [s for s in summary["skipped"] if "L2-L3 spinal canal point" in s["item"]]
    assert len(dropped) == 1 and "2 rows disagree" in dropped[0]["reason"] and "dropped 1" in dropped[0]["reason"]
    with pytest.raises(ConfigError, match="merge_radius_mm"):
        prepare_dataset("rsna2024", root, tmp_path / "bad", merge_radius_mm=-1)
