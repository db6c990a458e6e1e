"""``lss-bench refine`` end to end: a tiny trained run, a tiny from-config causal LM, LoRA, draft-vs-refined scores."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.cli import main as cli
from lss_vlm.reports.refine import training_examples


@pytest.fixture(scope="module")
def tiny_run(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch ``spca_tiny`` run on the tiny phantom (text metrics off), trained through the CLI."""
    run_dir = tmp_path_factory.mktemp("refine_run") / "run"
    overrides = [
        f"data.manifest={tiny_phantom}", "data.spatial_size=64", "data.batch_size=4", "model.preset=spca_tiny",
        "loss.name=dice", "train.epochs=1", "train.device=cpu", "eval.max_report_tokens=32", "eval.text_metrics=false",
    ]  # fmt: skip
    argv = ["train", "configs/experiments/phantom_quick.yaml", "--out", str(run_dir), "--quiet"]
    assert cli([*argv, *(x for o in overrides for x in ("--set", o))]) == 0
    return run_dir


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # ~20-30 s on 2 cores: the default run stays under 10 min
def test_refine_fine_tunes_rewrites_and_scores_draft_against_refined(tiny_run, tiny_lm, tiny_phantom, capsys) -> None:
    out = tiny_run / "refined_here"
    argv = ["refine", str(tiny_run), "--lm", tiny_lm, "--max-new-tokens", "6", "--device", "cpu", "--out", str(out)]
    assert cli([*argv, "--fine-tune-epochs", "1", "--lora-rank", "2", "--no-text-metrics"]) == 0
    printed = capsys.readouterr().out
    assert "grade_f1_from_text" in printed and "LoRA fine-tuning: token CE" in printed

    drafts = _lines(tiny_run / "reports.jsonl")
    refined = _lines(out / "refined.jsonl")
    assert [r["case_id"] for r in refined] == [r["case_id"] for r in drafts]
    assert [r["draft"] for r in refined] == [r["generated"] for r in drafts]
    assert all(r["prompt"].endswith("Refined report:") and isinstance(r["refined"], str) for r in refined)
    summary = json.loads((out / "refine_scores.json").read_text())
    scores = summary["metrics"]
    run_metrics = json.loads((tiny_run / "metrics.json").read_text())
    # the draft is scored by the run's own scorer on the same cases: the run's number comes back
    assert scores["draft/grade_f1_from_text"] == pytest.approx(run_metrics["grade_f1_from_text"])
    assert scores["delta/grade_f1_from_text"] == pytest.approx(
        scores["refined/grade_f1_from_text"] - scores["draft/grade_f1_from_text"]
    )
    n_pairs = len(training_examples(tiny_phantom))
    assert scores["refine/steps"] == math.ceil(n_pairs / 4) and summary["n_cases"] == len(drafts)
    assert json.loads((out / "adapters" / "adapter_config.json").read_text())["r"] == 2
    assert not [p for p in tiny_run.iterdir() if ".tmp-" in p.name]  # no staging folder left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the private mode of a temporary folder

    # a second refine into the same folder replaces it whole: no fine-tuning now, so no stale adapters; text metrics
    assert cli(argv) == 0
    scores = json.loads((out / "refine_scores.json").read_text())["metrics"]
    assert not (out / "adapters").exists() and "refine/steps" not in scores
    for key in ("draft/bertscore_f1", "refined/bertscore_f1"):
        assert 0.0 < scores[key] <= 1.0
    if shutil.which("java"):
        assert {"draft/bleu_4", "refined/cider", "delta/meteor"} <= set(scores)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"run": "missing"}, "not a run directory"),
        ({"run": "no_reports"}, "reports.jsonl: not found"),
        ({"lm": "missing"}, "not a folder"),
        ({"lm": "empty"}, "no config.json, so not a Hugging Face model folder"),
        ({"lm": "garbage"}, "not a loadable causal LM"),
        ({"out": "other_files"}, "holds files that are not a refine output (notes.txt)"),
        ({"extra": ["--lora-rank", "0"]}, "argument --lora-rank: expected a whole number >= 1, got '0'"),
        ({"extra": ["--lr", "nan"]}, "argument --lr: expected a number > 0, got 'nan'"),
        ({"extra": ["--fine-tune-epochs", "-1"]}, "argument --fine-tune-epochs: expected a whole number >= 0"),
    ],
)
def test_refine_bad_input_is_one_error_line_and_writes_nothing(
    tiny_run, tiny_lm, tmp_path, capsys, change, message
) -> None:
    run_dir, lm, out = tiny_run, tiny_lm, tmp_path / "out"
    if change.get("run") == "missing":
        run_dir = tmp_path / "no_run"
    elif change.get("run") == "no_reports":
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        shutil.copy(tiny_run / "config.yaml", run_dir / "config.yaml")
    if change.get("lm"):
        lm = str(tmp_path / "lm")
        if change["lm"] in ("empty", "garbage"):
            (tmp_path / "lm").mkdir()
        if change["lm"] == "garbage":
            (tmp_path / "lm" / "config.json").write_text("{}")
    if change.get("out"):
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = ["refine", str(run_dir), "--lm", str(lm), "--out", str(out), "--device", "cpu", *change.get("extra", [])]
    try:
        code = cli(argv)
    except SystemExit as exc:  # argparse rejects a bad number before the command runs
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len([line for line in err.splitlines() if "error:" in line]) == 1
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing of the user's deleted
