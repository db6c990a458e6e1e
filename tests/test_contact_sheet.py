"""``lss-bench evaluate --contact-sheet``: which views are drawn, and bad values of the option."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.cli import main as cli
from benchmarks.contact_sheet import collect_views, save_contact_sheet, worst_views
from lss_vlm.constants import VIEWS

NAN = math.nan


def _per_case() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "e"],
            "view": ["sag_t2"] * 5,
            "dice/vertebral_body": [0.9, NAN, 0.2, NAN, 0.5],
            "dice/disc": [0.7, 0.3, 0.4, NAN, 0.5],
        }
    )


def test_worst_views_rank_by_the_mean_over_scored_classes_only() -> None:
    rows = worst_views(_per_case(), 10)
    # c: 0.3, b: 0.3 (disc only, the body is not scored there), e: 0.5, a: 0.8; d has no scored class
    assert list(rows["case_id"]) == ["b", "c", "e", "a"]
    assert rows["mean_dice"].tolist() == pytest.approx([0.3, 0.3, 0.5, 0.8])
    assert list(worst_views(_per_case(), 2)["case_id"]) == ["b", "c"]
    assert worst_views(_per_case().iloc[0:0], 3).empty


def test_collect_and_draw_the_chosen_views(tmp_path) -> None:
    j = VIEWS.index("sag_t2")
    views = torch.zeros(2, len(VIEWS), 1, 16, 16)
    views[1, j, 0] = 1.0
    masks = torch.zeros(2, len(VIEWS), 16, 16, dtype=torch.int64)
    masks[1, j, 4:8, 4:8] = 2
    logits = torch.zeros(2, len(VIEWS), 6, 16, 16)
    logits[1, j, 1, :8] = 5.0  # predicted vertebral body in the top half of case "y"
    batch = {"case_id": ["x", "y"], "views": views, "masks": masks}
    found = collect_views([(batch, {"seg_logits": logits})], {("y", "sag_t2")})
    assert set(found) == {("y", "sag_t2")}
    image, truth, pred = found[("y", "sag_t2")]
    assert image.max() == 1.0 and (truth == 2).sum() == 16 and (pred == 1).sum() == 128
    rows = worst_views(_per_case(), 1).assign(case_id="y")
    path = save_contact_sheet(tmp_path / "cases.jpg", rows, found)
    assert path.is_file() and path.stat().st_size > 1000
    assert not list(tmp_path.glob("*.tmp*"))  # written through a temporary path


@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
def test_a_bad_count_is_one_error_line(value, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse rejects the value before the command runs
        cli(["evaluate", str(tmp_path), "--contact-sheet", value])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in last and "--contact-sheet" in last and repr(value) in last


def test_contact_sheet_with_shifts_is_refused(tmp_path, capsys) -> None:
    assert cli(["evaluate", str(tmp_path), "--shifts", "bias_field", "--contact-sheet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: --contact-sheet" in err[0]


def test_tile_arrays_are_plain_numpy() -> None:
    views = torch.rand(1, len(VIEWS), 1, 8, 8)
    batch = {"case_id": ["z"], "views": views, "masks": torch.zeros(1, len(VIEWS), 8, 8, dtype=torch.int64)}
    found = collect_views([(batch, {"seg_logits": torch.zeros(1, len(VIEWS), 6, 8, 8)})], {("z", VIEWS[0])})
    assert all(isinstance(a, np.ndarray) for a in found[("z", VIEWS[0])])


def test_no_scored_view_warns_and_writes_nothing(tmp_path) -> None:
    from benchmarks.contact_sheet import write_contact_sheet

    _per_case().assign(**{"dice/vertebral_body": NAN, "dice/disc": NAN}).to_csv(tmp_path / "per_case.csv", index=False)
    with pytest.warns(UserWarning, match="no view of this split has a scored class"):
        assert write_contact_sheet(None, [], None, tmp_path, 5) is None
    assert not (tmp_path / "cases.jpg").exists()
