"""``lss-bench refine``: a local causal LM rewrites a run's generated reports; drafts and rewrites are scored alike."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from benchmarks.commands import bounded_number

HELP = "rewrite a run's generated reports with a local causal LM (optional LoRA) and score draft vs refined"
DESCRIPTION = """\
Rewrite the generated reports of a trained run (RUN_DIR/reports.jsonl) with any Hugging Face causal language model
in a local folder (--lm: config.json, weights and tokenizer files; nothing is downloaded), from a structured prompt:
one findings line per level (grade and dural-sac area measured on the predicted masks, never the true grades), the
draft, then 'Refined report:'. With --fine-tune-epochs N > 0, LoRA adapters (peft, rank --lora-rank) are first
trained on the run's training split: the true findings and one reference of a case as the draft, the next reference
as the target.

Writes OUT (default RUN_DIR/refine/), all at once when everything succeeded:
  refined.jsonl       per case: case_id, prompt, draft, refined, references, true_grades
  refine_scores.json  draft/<metric>, refined/<metric> and delta/<metric> = refined - draft on the same cases:
                      grade_f1_from_text (falls when the LM changes a grade: hallucination) and, unless
                      --no-text-metrics, BERTScore and (with Java) BLEU-1..4, METEOR, ROUGE-L, CIDEr
  adapters/           the LoRA adapters (with --fine-tune-epochs > 0)
An existing OUT is replaced only when it holds an earlier refine output (or nothing). See docs/model.md."""
EXAMPLES = """\
examples:
  lss-bench refine lss_runs/train/phantom_quick-dice-seed0 --lm ~/models/opt-125m
  lss-bench refine lss_runs/train/phantom_quick-dice-seed0 --lm ~/models/opt-125m --fine-tune-epochs 2 \\
      --lora-rank 8 --device cuda --out lss_runs/refine/opt125m-lora
"""
#: The files of a refine output folder (an existing --out holding anything else is refused).
OUTPUT_NAMES = frozenset({"refined.jsonl", "refine_scores.json", "adapters"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    whole_0 = bounded_number(int, 0, "a whole number >= 0")
    whole_1 = bounded_number(int, 1, "a whole number >= 1")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'lss-bench train'")
    parser.add_argument("--lm", required=True, metavar="PATH", help="local folder of a Hugging Face causal LM")
    parser.add_argument(
        "--fine-tune-epochs",
        type=whole_0,
        default=0,
        metavar="N",
        help="LoRA fine-tuning passes over the training references; 0 = use the LM as it is",
    )
    parser.add_argument("--lora-rank", type=whole_1, default=8, metavar="R", help="LoRA rank")
    parser.add_argument(
        "--lr", type=bounded_number(float, 0.0, "a number > 0", strict=True), default=2e-4, help="LoRA learning rate"
    )
    parser.add_argument("--batch-size", type=whole_1, default=4, metavar="B", help="fine-tuning batch size")
    parser.add_argument(
        "--max-new-tokens", type=whole_1, default=160, metavar="N", help="cap on the tokens of a refined report"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available")
    parser.add_argument("--seed", type=whole_0, default=0, help="seed of the fine-tuning batches")
    parser.add_argument(
        "--no-text-metrics", action="store_true", help="score grade-F1 only (no BERTScore, no Java scorers)"
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/refine)")


def run(args: argparse.Namespace) -> int:
    from benchmarks.run_loading import load_run_config

    run_dir = Path(args.run_dir)
    cfg = load_run_config(run_dir)  # "not a run directory" before anything heavy
    reports = run_dir / "reports.jsonl"
    out = Path(args.out) if args.out else run_dir / "refine"
    _check_inputs(reports, out)
    scores, records = _refine_into_staging(args, cfg, reports, out)
    _print_scores(scores, len(records), out)
    return 0


def _check_inputs(reports: Path, out: Path) -> None:
    """The run's reports exist; ``out`` is a new folder, an empty one or an earlier refine output."""
    from benchmarks.outputs import check_parent_writable
    from lss_vlm.errors import ConfigError, DataError

    if not reports.is_file():
        raise DataError(f"{reports}: not found (evaluate the run first: lss-bench evaluate {reports.parent})")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES)
        if other:
            raise ConfigError(
                f"--out {out}: holds files that are not a refine output ({', '.join(other[:3])}); "
                "give a new or empty folder"
            )
    check_parent_writable(out, "--out")


def _refine_into_staging(args: argparse.Namespace, cfg: Any, reports: Path, out: Path) -> tuple[dict, list]:
    """Load the LM, fine-tune it (optional), refine and score into a staging folder, then swap it in as ``out``."""
    import shutil
    import tempfile

    from lss_vlm.io import _umask, atomic_write_json
    from lss_vlm.reports.refine import ReportRefiner, refine_run_reports, score_refined

    pairs = _training_pairs(cfg) if args.fine_tune_epochs else []
    refiner = ReportRefiner(args.lm, max_new_tokens=args.max_new_tokens, device=_device(args.device))
    base = next(p for p in out.absolute().parents if p.is_dir())  # no folder is created before the swap
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=base))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output folder gets the usual permissions
    try:
        fit: dict[str, float] = {}
        if pairs:
            steps = math.ceil(args.fine_tune_epochs * len(pairs) / args.batch_size)
            fit = refiner.fine_tune(pairs, steps, args.lr, args.batch_size, args.seed, args.lora_rank)
            refiner.save_adapters(staging / "adapters")
        records = refine_run_reports(reports, refiner, staging / "refined.jsonl")
        scores = score_refined(records, text_metrics=not args.no_text_metrics)
        settings = {k: getattr(args, k) for k in ("fine_tune_epochs", "lora_rank", "lr", "batch_size", "seed")}
        settings |= {"lm": str(Path(args.lm).expanduser().resolve()), "max_new_tokens": args.max_new_tokens}
        summary = {"run_dir": str(Path(args.run_dir).resolve()), **settings, "n_cases": len(records)}
        summary["metrics"] = {**fit, **scores}
        atomic_write_json(staging / "refine_scores.json", summary)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary["metrics"], records


def _training_pairs(cfg: Any) -> list[tuple[str, str]]:
    from benchmarks.data import resolve_manifest
    from lss_vlm.errors import DataError
    from lss_vlm.reports.refine import training_examples

    manifest = resolve_manifest(cfg.data)
    pairs = training_examples(manifest)
    if not pairs:
        raise DataError(f"{manifest}: no training case with 2 or more reference reports to fine-tune on")
    return pairs


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        from lss_vlm.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    return choice


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty or an earlier refine output: :func:`_check_inputs`) by ``staging``."""
    import os
    import shutil

    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
        return
    old = staging.with_name(staging.name + "-old")
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _print_scores(metrics: dict[str, float], n_cases: int, out: Path) -> None:
    names = [k.split("/", 1)[1] for k in metrics if k.startswith("refined/") and not k.endswith("n_reports")]
    print(f"refined {n_cases} report(s) -> {out}")
    print(f"{'metric':<26}{'draft':>10}{'refined':>10}{'delta':>10}")
    for name in names:
        cells = [metrics.get(f"{p}/{name}", math.nan) for p in ("draft", "refined", "delta")]
        print(f"{name:<26}" + "".join(f"{v:>10.4f}" for v in cells))
    if "refine/last_loss" in metrics:
        print(f"LoRA fine-tuning: token CE {metrics['refine/first_loss']:.3f} -> {metrics['refine/last_loss']:.3f}")
