"""The shared vocabulary, the manifest schema, atomic writes and the CLI shell."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from lss_vlm.constants import AREA_CUTOFFS_MM2, GRADES, LEVELS, VIEWS, grade_from_area
from lss_vlm.data.manifest import REQUIRED_COLUMNS, parse_reports, read_manifest, write_manifest
from lss_vlm.errors import DataError
from lss_vlm.io import atomic_path
from lss_vlm.reports.writer import write_reports


@pytest.mark.parametrize(
    ("area", "grade"),
    [
        (150.0, "normal"),
        (100.01, "normal"),
        (100.0, "mild"),
        (76.0, "mild"),
        (75.0, "moderate"),
        (50.0, "moderate"),
        (49.9, "severe"),
        (0.0, "severe"),
    ],
)
def test_grade_cutoffs(area: float, grade: str) -> None:
    assert AREA_CUTOFFS_MM2 == (100.0, 75.0, 50.0)
    assert GRADES[grade_from_area(area)] == grade


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_grade_from_area_rejects_bad_area(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        grade_from_area(bad)


def test_views_cover_two_sagittal_and_one_axial_per_level() -> None:
    assert VIEWS[:2] == ("sag_t1", "sag_t2")
    assert len(VIEWS) == 2 + len(LEVELS)
    assert VIEWS[-1] == "ax_l5_s1"


def _row(case_id: str = "c0") -> dict[str, object]:
    row: dict[str, object] = {"case_id": case_id, "patient_id": "p0", "split": "train", "dataset": "toy"}
    row.update({f"img_{v}": f"{case_id}/{v}.nii.gz" for v in VIEWS})
    return row


def test_manifest_round_trip_and_errors(tmp_path) -> None:
    df = pd.DataFrame([_row("c0"), _row("c1")])
    df["reports"] = [json.dumps(["a"]), json.dumps(["b", "c"])]
    write_manifest(df, tmp_path / "manifest.csv")
    back = read_manifest(tmp_path / "manifest.csv")
    assert list(back.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert parse_reports(back.loc[1, "reports"]) == ["b", "c"]

    with pytest.raises(DataError, match="unknown column.*colour"):
        write_manifest(df.assign(colour="red"), tmp_path / "m2.csv")
    assert not (tmp_path / "m2.csv").exists()
    with pytest.raises(DataError, match="missing required column.*img_sag_t1"):
        write_manifest(df.drop(columns=["img_sag_t1"]), tmp_path / "m3.csv")
    with pytest.raises(DataError, match="duplicated case_id"):
        write_manifest(pd.DataFrame([_row("c0"), _row("c0")]), tmp_path / "m4.csv")
    with pytest.raises(DataError, match="split"):
        write_manifest(pd.DataFrame([_row()]).assign(split="training"), tmp_path / "m5.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_manifest(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_atomic_path_leaves_nothing_on_error(tmp_path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_reference_reports_name_every_level_and_vary() -> None:
    import numpy as np

    reports = write_reports([0, 1, 2, 3, -1], [140, 90, 60, 30, None], np.random.default_rng(0), n=3)
    assert len(set(reports)) == 3
    for report in reports:
        for level in LEVELS:
            assert level in report
        assert "30 mm2" in report and "severe" in report


def test_cli_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "prepare", "train", "evaluate", "compare", "leaderboard", "tune", "report", "demo"):
        assert command in out.stdout


def test_atomic_path_gives_the_usual_file_mode(tmp_path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
