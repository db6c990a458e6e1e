"""Per-stage timers (timing.json), the profile script, the GPU budget's configs and switches on a CPU-only machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.config import load_config
from benchmarks.runner import run_experiment
from benchmarks.suite import load_suite, plan_runs

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_profile", REPO / "benchmarks/perf/run_profile.py")
run_profile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_profile)
STAGES = (
    "startup",
    "setup",
    "train_steps",
    "data",
    "validation",
    "checkpoints",
    "sac_refiner",
    "eval_inference",
    "generation",
)


def _tiny(manifest: Path, cache: Path, *extra: str):
    return load_config(None, [
        f"data.manifest={manifest}", "data.spatial_size=64", "model.preset=spca_tiny", "train.epochs=1",
        "train.device=cpu", "train.quiet=true", "eval.max_report_tokens=16", "eval.text_metrics=false",
        f"data.cache_dir={cache}", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def timed_run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    cfg = _tiny(tiny_phantom, cache, "train.amp=true", "train.compile=true")  # both accepted, no-ops on a CPU
    run_dir = tmp_path_factory.mktemp("timed") / "run"
    run_experiment(cfg, run_dir)
    return run_dir


def test_report_warm_up_is_cached_across_losses_and_exact(timed_run: Path, tiny_phantom: Path, tmp_path: Path) -> None:
    """A run of another loss with the same model, data and seed reuses the warmed-up decoder of ``timed_run`` and
    ends exactly where a run that warms up itself (empty cache) ends."""
    shared = Path(load_config(timed_run / "config.yaml").data.cache_dir)
    assert len(list((shared / "report_warmup").glob("*.safetensors"))) == 1
    cached = run_experiment(_tiny(tiny_phantom, shared, "loss.name=ce"), tmp_path / "cached")
    fresh = run_experiment(_tiny(tiny_phantom, tmp_path / "empty", "loss.name=ce"), tmp_path / "fresh")
    assert json.loads((tmp_path / "cached" / "report_warmup.json").read_text())["report_warmup/cached"] == 1.0
    assert "report_warmup/cached" not in json.loads((tmp_path / "fresh" / "report_warmup.json").read_text())
    assert cached == pytest.approx(fresh, nan_ok=True)


def test_runs_that_warm_up_together_warm_up_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one seed starting together (two Ray workers): one warms up, the other waits and loads its entry."""
    import threading
    import time

    from benchmarks import warmup_cache

    monkeypatch.setattr(warmup_cache, "warmup_key", lambda cfg: "samekey")
    cfg = load_config(None, [f"data.cache_dir={tmp_path}"])
    calls: list[int] = []
    models = [torch.nn.Module() for _ in range(2)]
    results: dict[int, dict[str, float]] = {}

    def run(i: int) -> None:
        models[i].report_decoder = torch.nn.Linear(2, 2)

        def warm_up() -> dict[str, float]:
            calls.append(i)
            time.sleep(0.5)  # long enough for the other run to arrive while this one warms up
            with torch.no_grad():
                models[i].report_decoder.weight.fill_(7.0)
            return {"report_warmup/steps": 3.0}

        results[i] = warmup_cache.cached_warm_up(models[i], cfg, warm_up)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    waited = 1 - calls[0]
    assert results[waited] == {"report_warmup/steps": 3.0, "report_warmup/cached": 1.0}
    assert torch.all(models[waited].report_decoder.weight == 7.0)


def test_timing_json_splits_the_run_into_stages(timed_run: Path) -> None:
    timing = json.loads((timed_run / "timing.json").read_text())
    for stage in STAGES:
        assert timing[f"time/{stage}_s"] >= 0, stage
    assert timing["time/train_steps_s"] > 0 and timing["time/validation_s"] > 0
    staged = sum(timing[f"time/{s}_s"] for s in STAGES if s != "startup")
    assert staged <= timing["time/run_wall_s"] + 0.5  # the stages do not overlap
    assert timing["time/total_s"] == pytest.approx(timing["time/run_wall_s"] + timing["time/startup_s"], abs=0.01)
    assert 0 < timing["time/steps_fraction"] < 1
    assert not any(k.startswith("time/") for k in json.loads((timed_run / "metrics.json").read_text()))


def test_run_profile_prints_the_split(timed_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_profile.main([str(timed_run)]) == 0
    out = capsys.readouterr().out
    timing = json.loads((timed_run / "timing.json").read_text())
    assert f"{100 * timing['time/steps_fraction']:.1f} % of the wall time" in out
    row = next(line for line in out.splitlines() if line.startswith("train_steps"))
    assert float(row.split()[1]) == pytest.approx(timing["time/train_steps_s"], abs=0.051)
    assert run_profile.main([str(timed_run.parent)]) == 2  # no timing.json there


def test_run_profile_sums_a_suite_folder(timed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A suite folder: stages summed over its runs, the step share of the sums, and the per-run spread."""
    timing = json.loads((timed_run / "timing.json").read_text())
    other = {**timing, "time/train_steps_s": 90.0, "time/total_s": 100.0, "time/steps_fraction": 0.9}
    for name, data in (("dice/seed0", timing), ("ce/seed1", other)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "timing.json").write_text(json.dumps(data))
    assert run_profile.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    steps = timing["time/train_steps_s"] + 90.0
    total = timing["time/total_s"] + 100.0
    assert "2 runs, stages summed" in out
    assert f"{100 * steps / total:.1f} % of the wall time" in out
    low = 100 * timing["time/steps_fraction"]
    assert f"{low:.1f} / {(low + 90) / 2:.1f} / 90.0 %" in out and "1 of 2 runs at >= 70 %" in out


def test_compile_and_amp_are_no_ops_on_cpu() -> None:
    from lss_vlm.engine.trainer import Trainer, TrainerSettings
    from lss_vlm.engine.validation import autocast_context

    settings = TrainerSettings(
        epochs=1, lr=1e-3, weight_decay=0.0, schedule="constant", grad_clip=None, lambda_seg=1.0, lambda_cls=0.0,
        lambda_txt=0.0, seed=0, deterministic=True, device="cpu", amp=True, monitor="dice_macro",
        monitor_mode="max", patience=0, quiet=True, compile=True,
    )  # fmt: skip
    model = torch.nn.Conv2d(1, 2, 1)
    trainer = Trainer(model, torch.nn.Identity(), [0], [0], settings, "unused")
    assert trainer.forward_model is model and not trainer.scaler.is_enabled() and not trainer.use_amp
    with autocast_context(torch.device("cpu"), True):
        assert torch.get_autocast_dtype("cpu") and not torch.is_autocast_enabled("cpu")


def test_paper_suite_resolves_to_the_gpu_budget() -> None:
    suite = load_suite(REPO / "configs/suites/paper.yaml")
    runs = plan_runs(suite)
    cfg = runs[0].config
    assert cfg.data.spatial_size >= 128 and cfg.data.phantom.size >= 128
    assert cfg.model.params["encoder"] == "resnet18" and cfg.model.params["embed_dim"] > 64
    assert cfg.train.amp and cfg.train.epochs >= 40
    assert len(runs) == len(suite.losses) * 5
    standard = plan_runs(load_suite("standard"))[0].config
    assert cfg.train.epochs * cfg.data.phantom.n_cases > 4 * standard.train.epochs * standard.data.phantom.n_cases


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_refuses_without_cuda() -> None:
    for command in (
        [sys.executable, "benchmarks/perf/gpu_check.py"],
        ["bash", "benchmarks/perf/gpu_check.sh", "1"],
    ):
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin",
                                                                    "PYTHONPATH": str(REPO)}, timeout=300,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "CUDA" in lines[0]
