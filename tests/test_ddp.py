"""Data-parallel training (torchrun, gloo on CPU): sharded sampling, the PID controller's all-reduce, rank-0 outputs,
equivalence with one process of the summed batch, and exact resume after a killed run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from ddp_helpers import PID_PARAMS, controller_worker
from torch.utils.data import DataLoader, RandomSampler

from benchmarks.cli import main as cli
from losses.pid_tversky import PIDTverskyLoss
from lss_vlm.engine.distributed import SeededDistributedSampler

REPO = Path(__file__).resolve().parent.parent
PLUGIN = str(Path(__file__).resolve().parent / "ddp_plugin.py")
KILL_ENV = "LSS_TEST_KILL_AFTER_EPOCHS"  # read by ddp_plugin.py


def test_ranks_share_the_single_process_permutation() -> None:
    """Step k of 2 ranks with batch b covers the cases of step k of one process with batch 2b, every epoch seed."""
    data, b = list(range(11)), 2
    for seed in (0, 7):
        one = torch.Generator().manual_seed(seed)
        single = [
            batch.tolist() for batch in DataLoader(data, batch_size=2 * b, sampler=RandomSampler(data, generator=one))
        ]
        shards = []
        for rank in range(2):
            sampler = SeededDistributedSampler(data, num_replicas=2, rank=rank)
            sampler.generator.manual_seed(seed)  # what the trainer's per-epoch re-seeding does
            shards.append([batch.tolist() for batch in DataLoader(data, batch_size=b, sampler=sampler)])
        assert len(shards[0]) == len(shards[1]) == len(single)
        for k, batch in enumerate(single):
            union = set(shards[0][k]) | set(shards[1][k])
            assert set(batch) <= union and len(union - set(batch)) <= 1  # the last step is padded by one case
        covered = {i for shard in shards for batch in shard for i in batch}
        assert covered == set(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_controller_counts_are_all_reduced_so_ranks_hold_one_state(tmp_path: Path) -> None:
    """2 gloo ranks observing different halves hold the state of one process that observed both halves."""
    halves = [
        [[50.0, 5.0, 1.0, 0.0, 2.0], [3.0, 1.0, 2.0, 0.0, 9.0], [4.0, 6.0, 1.0, 0.0, 1.0]],
        [[48.0, 1.0, 0.0, 3.0, 0.0], [1.0, 4.0, 0.0, 2.0, 0.0], [9.0, 2.0, 5.0, 1.0, 3.0]],
    ]
    init = f"tcp://127.0.0.1:{_free_port()}"
    torch.multiprocessing.spawn(controller_worker, args=(2, init, halves, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]

    def single(counts: list) -> dict:
        loss = PIDTverskyLoss(**PID_PARAMS, num_classes=5)
        for _ in range(2):
            loss.observe_counts(*(torch.tensor(c, dtype=torch.float64) for c in counts))
            loss.update()
        return {k: v.tolist() for k, v in loss.state_dict().items() if isinstance(v, torch.Tensor)}

    summed = [[a + b for a, b in zip(x, y)] for x, y in zip(*halves)]
    expected = single(summed)
    for key, value in expected.items():
        assert torch.allclose(torch.tensor(ranks[0][key]), torch.tensor(value), rtol=1e-6, atol=1e-9), key
    assert single(halves[0])["controller.output"] != expected["controller.output"]  # the halves alone would differ


def test_ddp_option_rejects_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["train", str(REPO / "configs/experiments/phantom_quick.yaml"), "--ddp", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lss-bench train: error: --ddp 1: expected 0 (one process) or a number of processes >= 2"]


# ------------------------------------------------------------------------------------------- torchrun end to end
def _sets(manifest: Path, batch: int) -> list[str]:
    """Tiny budget; no augmentation (MONAI draws per process), constant LR, the killable PID-Tversky."""
    values = [
        f"data.manifest={manifest}", "data.spatial_size=64", f"data.batch_size={batch}", "data.augment=false",
        "model.preset=spca_tiny", "model.params.dropout=0.0", "loss.name=ddp_test_pid", "train.epochs=2",
        "train.schedule=constant", "train.device=cpu", "eval.max_report_tokens=16", "eval.text_metrics=false",
    ]  # fmt: skip
    return [arg for v in values for arg in ("--set", v)]


def _train(manifest: Path, out: Path, batch: int, ddp: int, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.cli", "train", str(REPO / "configs/experiments/phantom_quick.yaml")]
    command += [*_sets(manifest, batch), "--out", str(out), "--quiet", "--import", PLUGIN]
    command += ["--ddp", str(ddp)] if ddp else []
    environ = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=900)


def _history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv").drop(columns="time_s")


@pytest.fixture(scope="module")
def ddp_runs(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    runs = {"one": (4, 0), "two": (2, 2)}
    for name, (batch, ddp) in runs.items():
        done = _train(tiny_phantom, root / name, batch, ddp)
        assert done.returncode == 0, done.stderr[-3000:]
    return {name: root / name for name in runs}


@pytest.mark.slow
def test_two_processes_match_one_process_of_the_summed_batch(ddp_runs: dict[str, Path]) -> None:
    """2 ranks x batch 2 vs 1 process x batch 4, same data order. Not bit-equal: each rank normalises (BatchNorm, CPU)
    and scores the batch-level Tversky term over its own half. Tolerance: 5 % relative on the training losses, 0.02 on
    α/β and on validation/test metrics in [0, 1]."""
    one, two = (_history(ddp_runs[k]) for k in ("one", "two"))
    assert list(one.columns) == list(two.columns) and len(one) == len(two) == 2
    for column in ("train/loss", "train/seg_loss", "train/cls_loss", "train/txt_loss"):
        assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), rel=0.05), column
    controller = [c for c in one.columns if c.startswith(("alpha/", "beta/"))]
    assert controller and (one[controller] != 0.5).any().any()  # the controller moved
    assert two[controller].to_numpy() == pytest.approx(one[controller].to_numpy(), abs=0.02)
    updates = [c for c in one.columns if c.startswith("updates/")]
    assert (two[updates] == one[updates]).all().all()
    m1, m2 = (json.loads((ddp_runs[k] / "metrics.json").read_text()) for k in ("one", "two"))
    for key in ("dice_macro", "accuracy", "macro_f1", "grade_f1_from_text"):
        assert m2[key] == pytest.approx(m1[key], abs=0.02), key
    # rank 0 alone wrote the run folder: one history row per epoch, one status, no per-rank files
    files = sorted(p.name for p in ddp_runs["two"].iterdir())
    assert files == sorted(p.name for p in ddp_runs["one"].iterdir())
    assert json.loads((ddp_runs["two"] / "status.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_exactly(tiny_phantom: Path, ddp_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "killed"
    killed = _train(tiny_phantom, out, 2, 2, env={KILL_ENV: "1"})
    assert killed.returncode != 0 and not (out / "status.json").exists()
    assert len(pd.read_csv(out / "history.csv")) == 1
    resumed = _train(tiny_phantom, out, 2, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    pd.testing.assert_frame_equal(_history(out), _history(ddp_runs["two"]))
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (out, ddp_runs["two"]))
    assert m1 == pytest.approx(m2, nan_ok=True)
