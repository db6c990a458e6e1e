"""run_experiment / evaluate_run / CLI end to end on the tiny phantom with the tiny model preset."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import losses
from benchmarks.cli import main as cli
from benchmarks.config import ExperimentConfig, dump_config, load_config
from benchmarks.runner import RunFailed, evaluate_run, read_status, run_experiment
from lss_vlm.constants import GRADES, LABELS, LEVELS, level_key
from lss_vlm.reports.writer import level_sentences

RUN_FILES = (
    "config.yaml", "status.json", "metrics.json", "per_case.csv", "history.csv", "reports.jsonl",
    "confusion_matrix.csv", "calibration.csv", "overlay.jpg", "model.safetensors", "provenance.json",
    "checkpoints/last/model.safetensors", "checkpoints/last/state.pt", "checkpoints/best/model.safetensors",
)  # fmt: skip


def tiny_overrides(manifest: Path, text_metrics: bool = True) -> list[str]:
    return [
        f"data.manifest={manifest}", "data.spatial_size=64", "data.batch_size=4", "model.preset=spca_tiny",
        "loss.name=pid_tversky", "train.epochs=2", "train.device=cpu", "train.quiet=true", "eval.max_report_tokens=32",
        f"eval.text_metrics={str(text_metrics).lower()}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_config(tiny_phantom: Path) -> ExperimentConfig:
    return load_config(None, tiny_overrides(tiny_phantom))


@pytest.fixture(scope="module")
def tiny_config_no_text(tiny_phantom: Path) -> ExperimentConfig:
    """Same training as ``tiny_config``; text metrics (two JVM starts per report set) off to keep tests fast."""
    return load_config(None, tiny_overrides(tiny_phantom, text_metrics=False))


def assert_same_metrics(a: dict, b: dict) -> None:
    """Equal on every key both have that is computed in both (NaN text metrics where text metrics are off)."""
    shared = [k for k in a if k in b and not (math.isnan(a[k]) != math.isnan(b[k]))]
    assert len(shared) > 50
    assert {k: a[k] for k in shared} == pytest.approx({k: b[k] for k in shared}, nan_ok=True)


@pytest.fixture(scope="module")
def finished_run(tiny_config: ExperimentConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run") / "seed0"
    return run_dir, run_experiment(tiny_config, run_dir)


def metrics_of(run_dir: Path) -> pd.Series:
    return pd.Series(json.loads((run_dir / "metrics.json").read_text())).sort_index()


def test_run_directory_holds_every_file_with_the_documented_keys(finished_run: tuple[Path, dict]) -> None:
    run_dir, metrics = finished_run
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    status = read_status(run_dir)
    assert status["status"] == "completed" and status["reason"] is None and status["wall_time_s"] > 0
    assert status_written_last(run_dir)
    for key in (
        "dice_macro",
        "dice/ligamentum_flavum",
        "iou_macro",
        "hd95_macro",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "qwk",
        "auroc",
        "ece",
        "cider",
        "cider_x100",
        "bleu_1",
        "bleu_4",
        "meteor",
        "rouge_l",
        "grade_f1_from_text",
        "composed/cider_x100",
        "area_mae_mm2",
        "area_bias_mm2",
        "best_epoch",
        "epochs_run",
    ):
        assert key in metrics, key
    assert 0.0 <= metrics["dice_macro"] <= 1.0 and metrics["epochs_run"] == 2
    assert metrics_of(run_dir).to_dict() == pytest.approx(metrics, nan_ok=True)

    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    for column in (
        "train/loss",
        "train/seg_loss",
        "train/cls_loss",
        "train/txt_loss",
        "val/dice_macro",
        "lr",
        *(f"{q}/{label}" for q in ("alpha", "beta", "error", "integral") for label in LABELS[1:]),
    ):
        assert column in history.columns, column
    assert history[["alpha/thecal_sac", "beta/thecal_sac"]].sum(axis=1).round(5).eq(1.0).all()

    per_case = pd.read_csv(run_dir / "per_case.csv")
    assert {"case_id", "view", "dice/ligamentum_flavum", "hd95/thecal_sac"} <= set(per_case.columns)
    reports = [json.loads(line) for line in (run_dir / "reports.jsonl").read_text().splitlines()]
    assert set(per_case["case_id"]) == {r["case_id"] for r in reports} and len(reports) == metrics["n_cases"]
    assert all({"case_id", "generated", "composed", "references"} <= set(r) for r in reports)
    assert all(r["composed"] and r["references"] for r in reports)
    # issue 13: the word-level vocabulary of the training split beside the weights; no unfilled measurement slot
    vocab = json.loads((run_dir / "report_vocab.json").read_text())
    assert vocab["tokens"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and "L4-L5" in vocab["tokens"]
    assert vocab["max_length"] >= vocab["length_p95"]
    assert not any("<area_" in r["generated"] or "<ap_" in r["generated"] for r in reports)
    ceiling = metrics["reference/cider_x100"]  # NaN: one test case here (needs 2), see test_metrics_text for values
    assert math.isnan(ceiling) if metrics["n_cases"] < 2 or not shutil.which("java") else ceiling >= 100
    measured_ceiling = metrics["reference/measured_cider_x100"]
    assert math.isnan(measured_ceiling) if math.isnan(ceiling) else 0 < measured_ceiling <= ceiling
    # every area of the composed report is a recorded measurement of the predicted masks, beside the true masks'
    for r in reports:
        assert set(r["measurements"]) == set(r["true_measurements"]) == {level_key(lv) for lv in LEVELS}
        for level, sentence in level_sentences(r["composed"]).items():
            area = r["measurements"][level_key(level)]["area_mm2"]
            quoted = re.search(r"(\d+) mm2", sentence)
            assert (area is None) == (quoted is None) and (quoted is None or abs(int(quoted[1]) - area) <= 0.51)
    confusion = pd.read_csv(run_dir / "confusion_matrix.csv", index_col=0)
    assert list(confusion.index) == list(GRADES) == list(confusion.columns)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    for key in ("git_sha", "packages", "config_hash", "data_manifest_hash", "seed", "wall_time_s", "device"):
        assert key in provenance, key
    assert provenance["device"] == "cpu" and provenance["seed"] == 0
    assert provenance["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert provenance["packages"]["lss-vlm"]  # the toolkit itself, installed by the test environment


def test_run_writes_a_jpeg_overlay_calibration_bins_and_tensorboard_events(finished_run: tuple[Path, dict]) -> None:
    run_dir, metrics = finished_run
    assert (run_dir / "overlay.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    bins = pd.read_csv(run_dir / "calibration.csv")
    assert list(bins.columns) == ["bin", "low", "high", "count", "confidence", "accuracy"]
    assert bins["count"].sum() == metrics["n_graded"]
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = [e for f in (run_dir / "tb").iterdir() for e in EventFileLoader(str(f)).Load()]
    tags = {(v.tag, e.step) for e in events for v in e.summary.value}
    history = pd.read_csv(run_dir / "history.csv")
    assert {("train/seg_loss", int(epoch)) for epoch in history["epoch"]} <= tags
    assert {c for c in history.columns if c != "epoch" and history[c].notna().all()} <= {tag for tag, _ in tags}


def status_written_last(run_dir: Path) -> bool:
    status_time = (run_dir / "status.json").stat().st_mtime_ns
    return all(p.stat().st_mtime_ns <= status_time for p in run_dir.iterdir() if p.is_file())


def test_completed_run_is_not_retrained_and_evaluate_reproduces_metrics(finished_run: tuple[Path, dict]) -> None:
    run_dir, metrics = finished_run
    weights_time = (run_dir / "model.safetensors").stat().st_mtime_ns
    again = run_experiment(load_config(run_dir / "config.yaml"), run_dir)
    assert again == pytest.approx(metrics, nan_ok=True)
    assert (run_dir / "model.safetensors").stat().st_mtime_ns == weights_time
    assert evaluate_run(run_dir) == pytest.approx(metrics, nan_ok=True)  # training summary keys kept
    assert metrics_of(run_dir).to_dict() == pytest.approx(metrics, nan_ok=True)


def test_run_with_weight_averaging_saves_and_evaluates_the_average(tiny_phantom: Path, tmp_path: Path) -> None:
    """``train.ema_decay``: the run's ``model.safetensors`` is the weight average kept in the best checkpoint's
    ``state.pt``, not the raw weights of that checkpoint, and ``evaluate`` scores it as training did."""
    from safetensors.torch import load_file

    cfg = load_config(None, [*tiny_overrides(tiny_phantom, text_metrics=False), "train.ema_decay=0.5"])
    metrics = run_experiment(cfg, tmp_path / "ema")
    saved = load_file(str(tmp_path / "ema" / "model.safetensors"))
    raw = load_file(str(tmp_path / "ema" / "checkpoints" / "best" / "model.safetensors"))
    state = torch.load(tmp_path / "ema" / "checkpoints" / "best" / "state.pt", weights_only=True)
    average = {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
    assert int(state["ema"]["n_averaged"]) > 1
    assert all(torch.equal(v, average[k]) for k, v in saved.items())
    assert any(not torch.equal(v, raw[k]) for k, v in saved.items())
    assert evaluate_run(tmp_path / "ema") == pytest.approx(metrics, nan_ok=True)


def test_pruned_run_records_status_then_resumes_to_the_same_metrics(
    tiny_config_no_text: ExperimentConfig, finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    tiny_config = tiny_config_no_text

    class Pruned(Exception):
        pass

    def prune_first_epoch(epoch: int, val: dict[str, float]) -> None:
        assert "dice_macro" in val and epoch == 1
        raise Pruned("pruned by the tuner at epoch 1")

    with pytest.raises(Pruned):
        run_experiment(tiny_config, tmp_path / "run", on_epoch=prune_first_epoch)
    status = read_status(tmp_path / "run")
    assert status["status"] == "pruned" and "epoch 1" in status["reason"]
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1

    resumed = run_experiment(tiny_config, tmp_path / "run")  # continues from checkpoints/last
    assert read_status(tmp_path / "run")["status"] == "completed"
    assert_same_metrics(resumed, finished_run[1])
    history = pd.read_csv(tmp_path / "run" / "history.csv").drop(columns="time_s")
    expected = pd.read_csv(finished_run[0] / "history.csv").drop(columns="time_s")
    pd.testing.assert_frame_equal(history, expected)


class NanLoss(torch.nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.mean() * math.nan

    def on_step_end(self) -> None: ...

    def on_epoch_end(self) -> None: ...

    def controller_state(self) -> dict:
        return {}


def test_nan_loss_marks_the_run_failed_and_raises_run_failed(
    tiny_config_no_text: ExperimentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(losses, "build_loss", lambda name, **kwargs: NanLoss())
    with pytest.raises(RunFailed, match="non-finite loss at epoch 1, step 1") as info:
        run_experiment(tiny_config_no_text, tmp_path / "run")
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed"
    assert "TrainingDiverged: non-finite loss at epoch 1, step 1: total=nan" in status["reason"]
    assert info.value.reason == status["reason"] and info.value.run_dir == tmp_path / "run"
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_run_directory_of_another_config_is_refused(tiny_config: ExperimentConfig, tmp_path: Path) -> None:
    from lss_vlm.errors import ConfigError

    dump_config(tiny_config.model_copy(update={"name": "other"}), tmp_path / "run" / "config.yaml")
    with pytest.raises(ConfigError, match="holds a run of a different config"):
        run_experiment(tiny_config, tmp_path / "run")


def test_cli_train_same_seed_same_metrics_then_evaluate_and_report(
    tiny_phantom: Path, finished_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dump_config(load_config(None, tiny_overrides(tiny_phantom, text_metrics=False)), tmp_path / "tiny.yaml")
    assert cli(["train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert "dice_macro" in capsys.readouterr().out
    assert_same_metrics(metrics_of(tmp_path / "cli").to_dict(), finished_run[1])  # same seed, same numbers

    assert cli(["evaluate", str(tmp_path / "cli"), "--split", "val"]) == 0
    assert "dice_macro" in json.loads((tmp_path / "cli" / "eval_val" / "metrics.json").read_text())
    case_id = json.loads((tmp_path / "cli" / "reports.jsonl").read_text().splitlines()[0])["case_id"]
    assert cli(["report", str(tmp_path / "cli"), "--case", case_id, "--out", str(tmp_path / "case.png")]) == 0
    out = capsys.readouterr().out
    assert "generated report:" in out and "composed report" in out and "reference 1:" in out
    assert (tmp_path / "case.png").stat().st_size > 10_000

    assert cli(["report", str(tmp_path / "cli"), "--case", "no_such_case"]) == 2
    assert "--case 'no_such_case' is not in" in capsys.readouterr().err
    assert cli(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_run_trained_before_the_full_resolution_skip_loads_with_its_own_decoder(
    tiny_config: ExperimentConfig, tmp_path: Path
) -> None:
    """A config.yaml that does not name ``full_resolution_skip`` rebuilds the decoder it was trained with."""
    from safetensors.torch import save_model

    from benchmarks.run_loading import build_model_from_config, load_run_config, load_trained_model

    legacy = tiny_config.model_copy(deep=True)
    legacy.model.params["full_resolution_skip"] = False
    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    save_model(build_model_from_config(legacy), str(run_dir / "model.safetensors"))
    raw = yaml.safe_load(dump_config(legacy))
    del raw["model"]["params"]["full_resolution_skip"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw))
    assert load_run_config(run_dir).model.params["full_resolution_skip"] is False
    model, _ = load_trained_model(run_dir, load_run_config(run_dir))
    assert model.seg_decoder.stem is None
    current = tiny_config.model_copy(deep=True)
    current.model.params["full_resolution_skip"] = True
    dump_config(current, run_dir / "config.yaml")  # a config that names it keeps its value
    assert load_run_config(run_dir).model.params["full_resolution_skip"] is True


def test_a_cross_dataset_evaluation_measures_the_networks_own_masks(
    finished_run: tuple[Path, dict], tiny_phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sac refiner fitted on the run's data would read another dataset's contrast: evaluate --manifest skips it."""
    import benchmarks.measurement

    def no_refiner(cfg):
        raise AssertionError("the sac refiner was fitted for a cross-dataset evaluation")

    monkeypatch.setattr(benchmarks.measurement, "fit_sac_refiner", no_refiner)
    run_dir, _ = finished_run
    metrics = evaluate_run(run_dir, manifest=tiny_phantom, out=tmp_path / "cross")
    assert math.isfinite(metrics["dice_macro"]) and (tmp_path / "cross" / "reports.jsonl").is_file()
