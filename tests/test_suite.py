"""Suites: failed runs recorded, resume skips finished runs, partial runs never counted, kill -9 safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from synthetic_runs import write_run

from benchmarks.leaderboard import build_leaderboard, to_markdown
from benchmarks.suite import load_suite, plan_runs, run_suite
from lss_vlm.errors import ConfigError

QUALITY = {"dice": 0.70, "tversky": 0.74, "focal": 0.60}
REPO = Path(__file__).resolve().parent.parent


class FakeRunner:
    """Stands in for run_experiment: writes a synthetic run directory; the losses in ``fail`` raise like a NaN."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.calls: list[tuple[str, int, str, list[str]]] = []

    def __call__(self, cfg, out_dir, on_epoch=None):
        out_dir = Path(out_dir)
        self.calls.append((cfg.loss.name, cfg.train.seed, out_dir.name, sorted(p.name for p in out_dir.iterdir())))
        if on_epoch is not None:
            on_epoch(1, {"dice_macro": 0.5})
        if cfg.loss.name in self.fail:
            raise FloatingPointError(f"loss is NaN at epoch 1 ({cfg.loss.name})")
        write_run(out_dir, QUALITY[cfg.loss.name], cfg.train.seed)
        return json.loads((out_dir / "metrics.json").read_text())


def write_suite_yaml(tmp_path: Path, **changes) -> Path:
    suite = {"name": "t", "losses": ["dice", "tversky", "focal"], "seeds": 2, "baseline": "dice", **changes}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_failed_run_is_recorded_and_suite_finishes(tmp_path):
    suite = load_suite(write_suite_yaml(tmp_path))
    runner = FakeRunner(fail=("focal",))
    outcomes = run_suite(suite, tmp_path / "out", runner=runner)
    assert [o.status for o in outcomes] == ["completed", "completed", "failed"] * 2  # seed-major order
    status = json.loads((tmp_path / "out/runs/focal/seed1/status.json").read_text())
    assert status["status"] == "failed" and "NaN" in status["reason"]
    assert not list((tmp_path / "out/runs").glob("*/*.partial"))
    board = build_leaderboard(tmp_path / "out")
    focal = board.table.set_index("loss").loc["focal"]
    assert (focal["n_seeds"], focal["n_failed"]) == (0, 2)
    assert "FAILED run focal seed0: FloatingPointError: loss is NaN" in to_markdown(board)
    assert list(board.table["loss"]) == ["tversky", "dice", "focal"]


def test_progress_lines_name_each_run(tmp_path):
    from rich.console import Console

    from benchmarks.suite import SuiteProgress

    suite = load_suite(write_suite_yaml(tmp_path, seeds=1))
    console = Console(record=True, width=200, file=open(os.devnull, "w"))
    run_suite(suite, tmp_path / "out", runner=FakeRunner(fail=("focal",)), progress=SuiteProgress(False, True, console))
    run_suite(suite, tmp_path / "out", runner=FakeRunner(), progress=SuiteProgress(False, True, console))
    text = console.export_text()
    assert "[1/3] dice seed0: completed in" in text and "dice_macro=0.7" in text
    assert "[3/3] focal seed0: failed in" in text and "FloatingPointError: loss is NaN" in text
    assert "[2/3] tversky seed0: already completed, skipped" in text


def test_only_loss_and_seed_differ_between_runs(tmp_path):
    suite = load_suite(write_suite_yaml(tmp_path, set=["train.epochs=2", "train.lr=0.01"]))
    plans = plan_runs(suite)
    assert [(p.label, p.seed) for p in plans] == [(n, s) for s in (0, 1) for n in ("dice", "tversky", "focal")]
    dumps = [p.config.model_dump(mode="json") for p in plans]
    for d in dumps:
        assert (d["train"]["epochs"], d["train"]["lr"]) == (2, 0.01)
        d.pop("name"), d.pop("loss"), d["train"].pop("seed")
    assert all(d == dumps[0] for d in dumps)


def test_resume_skips_finished_runs_and_adds_seeds(tmp_path):
    suite = load_suite(write_suite_yaml(tmp_path))
    run_suite(suite, tmp_path / "out", runner=FakeRunner(fail=("focal",)))
    again = FakeRunner()
    outcomes = run_suite(suite, tmp_path / "out", runner=again)
    assert again.calls == [] and {o.status for o in outcomes} == {"skipped"}
    more = FakeRunner(fail=("focal",))
    run_suite(suite, tmp_path / "out", seeds=[0, 1, 2], runner=more)
    assert [(c[0], c[1]) for c in more.calls] == [("dice", 2), ("tversky", 2), ("focal", 2)]
    retry = FakeRunner()
    run_suite(suite, tmp_path / "out", seeds=[0, 1, 2], runner=retry, retry_failed=True)
    assert [(c[0], c[1]) for c in retry.calls] == [("focal", 0), ("focal", 1), ("focal", 2)]
    assert build_leaderboard(tmp_path / "out").table.set_index("loss").loc["focal", "n_seeds"] == 3


def test_partial_run_resumes_in_its_folder_and_is_counted_once(tmp_path):
    suite = load_suite(write_suite_yaml(tmp_path, losses=["dice"], seeds=1))
    partial = tmp_path / "out/runs/dice/seed0.partial"
    (partial / "checkpoints").mkdir(parents=True)  # what a killed run leaves behind
    runner = FakeRunner()
    run_suite(suite, tmp_path / "out", runner=runner)
    assert runner.calls == [("dice", 0, "seed0.partial", ["checkpoints"])]
    assert not partial.exists() and (tmp_path / "out/runs/dice/seed0/status.json").is_file()


def test_partial_run_that_had_ended_is_only_renamed(tmp_path):
    suite = load_suite(write_suite_yaml(tmp_path, losses=["dice"], seeds=1))
    write_run(tmp_path / "out/runs/dice/seed0.partial", 0.7, 0)  # killed between status.json and the rename
    runner = FakeRunner()
    run_suite(suite, tmp_path / "out", runner=runner)
    assert runner.calls == []
    assert build_leaderboard(tmp_path / "out").table["n_seeds"].tolist() == [1]


def test_changed_suite_refuses_resume_and_no_resume_starts_over(tmp_path):
    run_suite(load_suite(write_suite_yaml(tmp_path)), tmp_path / "out", runner=FakeRunner())
    changed = load_suite(write_suite_yaml(tmp_path, set=["train.epochs=1"]))
    with pytest.raises(ConfigError, match=r"6 run\(s\) were trained with another resolved config.*train\.epochs"):
        run_suite(changed, tmp_path / "out", runner=FakeRunner())
    fresh = FakeRunner()
    run_suite(changed, tmp_path / "out", resume=False, runner=fresh)
    assert len(fresh.calls) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"losses": ["dice"], "sedes": 2}, "sedes"),
        ({"losses": ["dice", "dice"]}, "duplicate label"),
        ({"losses": ["dice"], "baseline": "ce"}, "baseline 'ce' is not one of the losses"),
        ({"losses": []}, "losses"),
    ],
)
def test_bad_suite_files_name_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", **content}))
    with pytest.raises(ConfigError, match=message) as info:
        load_suite(path)
    assert str(path) in str(info.value)


def test_unknown_loss_is_rejected_before_anything_runs(tmp_path):
    suite = load_suite(write_suite_yaml(tmp_path, losses=["dice", "dicee"]))
    runner = FakeRunner()
    with pytest.raises(ConfigError, match="dicee"):
        run_suite(suite, tmp_path / "out", runner=runner)
    assert runner.calls == []


def test_shipped_suites_are_valid_and_standard_covers_every_loss():
    import losses

    for name in ("quick", "standard", "minority", "ood"):
        assert plan_runs(load_suite(name))
    quick = load_suite("quick")
    assert {"dice", "pid_tversky"} <= {e.name for e in quick.losses} and len(quick.losses) >= 4
    assert quick.seed_list() == [0]
    standard = load_suite("standard")
    names = {e.name for e in standard.losses}
    # every loss in its default configuration, plus at least one collapse-prone *_nobg variant to show the pitfall
    assert names - {"dice_nobg"} == {n for n in losses.available_losses() if not n.endswith("_nobg")}
    assert any(n.endswith("_nobg") for n in names)
    assert len(standard.seed_list()) == 3
    with pytest.raises(ConfigError, match="no shipped suite"):
        load_suite("quik")
    from lss_vlm.data.phantom.config import PhantomConfig

    minority = plan_runs(load_suite("minority"))[0].config.data.phantom.options
    harder = PhantomConfig().replace(**{k: tuple(v) for k, v in minority.items()})
    assert harder.prevalence[3] < PhantomConfig().prevalence[3]
    assert harder.lf_thickness_mm[1] <= PhantomConfig().lf_thickness_mm[0]


# ------------------------------------------------------------------------------------------------ real engine runs
TINY = [
    "model.preset=spca_tiny",
    "data.batch_size=4",
    "data.spatial_size=64",
    "eval.text_metrics=false",
]


def tiny_suite_yaml(tmp_path: Path, manifest: Path, losses: list, seeds: int = 1, epochs: int = 1) -> Path:
    suite = {
        "name": "tiny",
        "set": [*TINY, f"train.epochs={epochs}", f"data.manifest={manifest}"],
        "losses": losses,
        "seeds": seeds,
        "baseline": "dice",
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="module")
def nan_loss() -> Iterator[str]:
    """A registered loss that returns NaN (the injected failure)."""
    import losses
    from losses.base import SegLoss

    class NaNLoss(SegLoss):
        """L = NaN (test only)."""

        def forward(self, logits, target):
            return logits.sum() * float("nan")

    name = "test_nan_loss"
    with pytest.MonkeyPatch.context() as patch:  # registered for this module only: later tests see the shipped zoo
        patch.setattr(losses.registry, "_LOSSES", dict(losses.registry._LOSSES))
        losses.register_loss(name)(NaNLoss)
        yield name


def test_real_suite_with_injected_nan_loss(tmp_path, tiny_phantom, nan_loss):
    suite = load_suite(tiny_suite_yaml(tmp_path, tiny_phantom, ["dice", nan_loss]))
    outcomes = run_suite(suite, tmp_path / "out")
    assert [o.status for o in outcomes] == ["completed", "failed"]
    reason = json.loads((tmp_path / f"out/runs/{nan_loss}/seed0/status.json").read_text())["reason"]
    assert "nan" in reason.lower()
    board = build_leaderboard(tmp_path / "out")
    assert board.table.set_index("loss").loc[nan_loss, "n_failed"] == 1
    assert board.table.set_index("loss").loc["dice", "n_seeds"] == 1


@pytest.mark.slow
def test_kill_9_during_compare_then_rerun_equals_uninterrupted(tmp_path, tiny_phantom):
    suite_path = tiny_suite_yaml(tmp_path, tiny_phantom, ["dice", "pid_tversky"], seeds=2, epochs=3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def compare(out: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "benchmarks.cli", "compare", str(suite_path), "--out", str(out), "--no-progress"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    killed = tmp_path / "killed"
    proc = compare(killed)
    deadline = time.monotonic() + 900
    # kill once the second run has written a checkpoint (one run final, one in progress)
    while not list(killed.glob("runs/*/seed*.partial/checkpoints/*")) or not list(killed.glob("runs/*/seed0")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(killed.glob("runs/*/seed*.partial"))
    assert compare(killed).wait() == 0
    assert compare(tmp_path / "clean").wait() == 0

    def table(out: Path) -> pd.DataFrame:
        return pd.read_csv(out / "leaderboard.csv").drop(columns=["wall_time_s_mean"])

    pd.testing.assert_frame_equal(table(killed), table(tmp_path / "clean"))
    assert table(killed)["n_seeds"].tolist() == [2, 2]
