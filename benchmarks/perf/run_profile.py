"""Where the wall time of one run goes: the per-stage split of its ``timing.json``.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/perf/run_profile.py RUN_DIR`` for a finished run, ``...
run_profile.py SUITE_DIR`` for a suite folder (``lss-bench compare --out``: the stages summed over its runs, and the
spread of the per-run fractions), or
``... run_profile.py --train configs/suites/standard.yaml [--loss dice] [--set k=v ...]`` to train one run of an
experiment or suite config into a temporary folder first (a separate ``lss-bench train`` process, so start-up and
imports are counted as a user sees them). Prints one line per stage: seconds and share of the process's wall time,
and the fraction of it in optimizer steps (issue 18's target: >= 70 % for a standard run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
#: Stages in the order a run meets them, with what they cover.
STAGES: dict[str, str] = {
    "startup": "interpreter start, imports, config (before the run starts)",
    "setup": "phantom/manifest, model build, report vocabulary and warm-up, loaders",
    "train_steps": "optimizer steps (forward, loss, backward, step, controller)",
    "data": "waiting for training batches",
    "validation": "per-epoch validation",
    "checkpoints": "writing checkpoints/last and best",
    "sac_refiner": "final evaluation: fitting the sac boundary refiner (eval.refine_sac)",
    "eval_inference": "final evaluation: forward passes and segmentation/grade metrics",
    "generation": "final evaluation: report generation",
    "composer": "final evaluation: structured reports composed from the masks",
    "text_metrics": "final evaluation: BLEU/METEOR/ROUGE-L/CIDEr (Java) and the reference ceiling",
    "bertscore": "final evaluation: BERTScore (MiniLM)",
    "eval_outputs": "final evaluation: per_case.csv, reports.jsonl, overlay.png",
}


def profile_lines(timing: dict[str, float]) -> list[str]:
    """The per-stage table of a ``timing.json`` mapping (``time/<stage>_s`` keys), as printable lines."""
    total = float(timing.get("time/total_s") or timing.get("time/run_wall_s") or 0.0)
    lines = [f"{'stage':<15} {'seconds':>8} {'share':>7}  what"]
    known = 0.0
    for stage, what in STAGES.items():
        seconds = float(timing.get(f"time/{stage}_s", 0.0))
        known += seconds
        share = f"{100 * seconds / total:6.1f}%" if total > 0 else "   n/a"
        lines.append(f"{stage:<15} {seconds:8.1f} {share}  {what}")
    rest = max(total - known, 0.0)
    lines.append(f"{'other':<15} {rest:8.1f} {100 * rest / total if total else 0:6.1f}%  provenance, status, gaps")
    lines.append(f"{'total':<15} {total:8.1f} {100.0:6.1f}%  start-up + the run's wall time")
    steps = timing.get("time/steps_fraction")
    lines.append(f"optimizer steps: {100 * float(steps):.1f} % of the wall time" if steps is not None else "")
    return lines


def suite_timings(suite_dir: Path) -> dict[str, dict[str, float]]:
    """``{"<loss>/seed<k>": timing}`` of every finished run of a suite folder (``runs/<loss>/seed<k>/timing.json``)."""
    return {
        f"{path.parent.parent.name}/{path.parent.name}": json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(suite_dir.glob("runs/*/seed*/timing.json"))
    }


def suite_lines(timings: dict[str, dict[str, float]], target: float = 0.70) -> list[str]:
    """The stage table summed over a suite's runs (shares of the summed totals: a suite's CPU time, not its wall
    time when runs train side by side), then the per-run optimizer-step fractions: min / median / max and how many
    runs reach ``target``."""
    keys = {key for timing in timings.values() for key in timing if key.endswith("_s")}
    summed = {key: sum(float(timing.get(key, 0.0)) for timing in timings.values()) for key in keys}
    summed["time/steps_fraction"] = summed["time/train_steps_s"] / summed["time/total_s"]
    fractions = sorted(float(t["time/steps_fraction"]) for t in timings.values())
    median = float(np.median(fractions))
    reached = sum(f >= target for f in fractions)
    lines = [f"{len(timings)} runs, stages summed over the runs:", *profile_lines(summed)]
    lines.append(
        f"per run: optimizer steps {100 * fractions[0]:.1f} / {100 * median:.1f} / {100 * fractions[-1]:.1f} % "
        f"(min / median / max); {reached} of {len(fractions)} runs at >= {100 * target:.0f} %"
    )
    return lines


def train_one(config: str, loss: str | None, overrides: list[str], out: Path) -> Path:
    """Train one run of ``config`` (an experiment or, with its base and ``set``, a suite YAML) into ``out``."""
    command = [sys.executable, "-m", "benchmarks.cli", "train", *_experiment_args(config), "--out", str(out), "--quiet"]
    for item in ([f"loss.name={loss}"] if loss else []) + overrides:
        command += ["--set", item]
    subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    return out


def _experiment_args(config: str) -> list[str]:
    """``[experiment YAML, --set ...]`` for a suite YAML (its base and set list), ``[config]`` otherwise."""
    import yaml

    data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    if "base" not in data:
        return [config]
    base = (Path(config).parent / data["base"]).resolve()
    return [str(base), *[arg for item in data.get("set", []) for arg in ("--set", item)]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("run_dir", nargs="?", help="a finished run directory (holds timing.json) or a suite folder")
    parser.add_argument("--train", metavar="CONFIG", help="train one run of this experiment or suite YAML first")
    parser.add_argument("--loss", help="loss of the trained run (default: the config's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if bool(args.run_dir) == bool(args.train):
        parser.error("give a RUN_DIR or --train CONFIG (one of them)")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else train_one(args.train, args.loss, args.overrides, Path(tmp))
        path = run_dir / "timing.json"
        if not path.is_file() and (timings := suite_timings(run_dir)):
            print(f"suite: {run_dir}")
            print("\n".join(suite_lines(timings)))
            return 0
        if not path.is_file():
            print(
                f"error: {path}: not found, nor runs/*/seed*/timing.json (not a finished run or suite folder, or one"
                " from before stage timers existed)",
                file=sys.stderr,
            )
            return 2
        print(f"run: {run_dir}" + (f" ({args.train})" if args.train else ""))
        print("\n".join(profile_lines(json.loads(path.read_text(encoding="utf-8")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
