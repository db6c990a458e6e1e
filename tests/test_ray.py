"""``lss-bench compare --backend ray``: a local Ray cluster (``ray.init(num_cpus=2)``), the same results as the local
backend, a worker killed mid-run (Ray retries; the run resumes from its checkpoint), and the option checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.backends import LocalExecutor, RayExecutor, make_executor, run_resources
from benchmarks.cli import main as cli
from benchmarks.suite import load_suite, plan_runs, run_suite
from lss_vlm.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _suite(tmp_path: Path, manifest: Path) -> Path:
    suite = {
        "name": "tiny_ray",
        "set": [
            "model.preset=spca_tiny", "data.batch_size=4", "data.spatial_size=64", "eval.text_metrics=false",
            "eval.max_report_tokens=16", "train.epochs=2", "train.device=cpu", f"data.manifest={manifest}",
        ],
        "losses": ["dice", "ce"],
        "seeds": 1,
        "baseline": "dice",
    }  # fmt: skip
    path = tmp_path / "tiny_ray.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_backend_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ConfigError, match=r"--address: only used with --backend ray"):
        make_executor("local", address="auto")
    with pytest.raises(ConfigError, match=r"--backend 'slurm': choose one of local, ray"):
        make_executor("slurm")
    assert cli(["compare", "quick", "--backend", "local", "--num-gpus", "1", "--out", "/nonexistent/x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lss-bench compare: error: --num-gpus: only used with --backend ray"
    ]
    for value in ("-1", "nan", "inf"):  # checked before a dry run too, without importing Ray
        assert cli(["compare", "quick", "--backend", "ray", "--num-cpus", value, "--dry-run"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"lss-bench compare: error: --num-cpus must be a finite number >= 0, got {float(value)}"
        ]
    cfg = plan_runs(load_suite("quick"))[0].config
    assert run_resources(cfg, None, None) == (1.0 + cfg.data.num_workers, 0.0)
    gpu = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cuda"})})
    assert run_resources(gpu, None, None)[1] == 1.0 and run_resources(gpu, 2, 0.5) == (2.0, 0.5)


@pytest.mark.slow
def test_ray_backend_matches_local_and_survives_a_killed_worker(tiny_phantom: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    import torch
    from ray_helpers import killing_runner

    suite = load_suite(_suite(tmp_path, tiny_phantom))
    torch.set_num_threads(1)
    local = run_suite(suite, tmp_path / "local")
    assert [o.status for o in local] == ["completed", "completed"]
    paths = os.pathsep.join([str(REPO), str(REPO / "tests")])
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": paths}})
    try:
        outcomes = run_suite(suite, tmp_path / "ray", runner=killing_runner, executor=RayExecutor(num_cpus=1))
    finally:
        ray.shutdown()
    assert (tmp_path / "ray" / "killed_once").is_file()  # a worker died after epoch 1 of one run ...
    assert sorted(o.status for o in outcomes) == ["completed", "completed"]  # ... and its retry finished it
    for plan in plan_runs(suite):
        a, b = plan.final_dir(tmp_path / "local"), plan.final_dir(tmp_path / "ray")
        assert not plan.partial_dir(tmp_path / "ray").exists()
        history = [pd.read_csv(d / "history.csv").drop(columns="time_s") for d in (a, b)]
        pd.testing.assert_frame_equal(*history)  # resumed exactly: no epoch lost or counted twice
        metrics = [json.loads((d / "metrics.json").read_text()) for d in (a, b)]
        assert metrics[1] == pytest.approx(metrics[0], nan_ok=True)
