#!/usr/bin/env bash
# GPU check of the paper budget, <= 8 minutes on one GPU:
#   1. step time, images/s and peak GPU memory of the paper model (CPU vs GPU float32 / AMP / AMP + torch.compile);
#   2. the first epochs of the paper budget (lss-bench train configs/experiments/phantom_paper.yaml), stopped after
#      TRAIN_SECONDS, with the history of the epochs it finished.
# Usage (repository root): bash benchmarks/perf/gpu_check.sh [TRAIN_SECONDS, default 240]
# Env: PYTHON (default: python), GPU_CHECK_OUT (default: a temporary folder; the run folder is kept there).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
TRAIN_SECONDS=${1:-240}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "error: $PYTHON cannot import torch; set PYTHON to the environment's python (PYTHON=.venv/bin/python)" >&2
  exit 2
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "error: gpu_check.sh needs a CUDA GPU: torch.cuda.is_available() is False; run it on a GPU node" >&2
  exit 2
fi
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
CONFIG=configs/experiments/phantom_paper.yaml
started=$(date +%s)
echo "== phantom of the paper budget (cached after the first call)"
"$PYTHON" -c "from benchmarks.config import load_config; from benchmarks.data import resolve_manifest; \
print(resolve_manifest(load_config('$CONFIG').data))"
echo "== step time and memory ($(( $(date +%s) - started )) s so far)"
timeout 240 "$PYTHON" benchmarks/perf/gpu_check.py --config "$CONFIG" || echo "(step timing stopped: exit $?)"
echo "== first epochs of the paper budget, ${TRAIN_SECONDS} s ($(( $(date +%s) - started )) s so far)"
timeout "$TRAIN_SECONDS" "$PYTHON" -m benchmarks.cli train "$CONFIG" --out "$OUT/paper_run" --quiet \
  || echo "(training stopped after ${TRAIN_SECONDS} s, as intended, or failed: exit $?)"
if [ -f "$OUT/paper_run/history.csv" ]; then
  "$PYTHON" - "$OUT/paper_run/history.csv" <<'PY'
import sys
import pandas as pd
h = pd.read_csv(sys.argv[1])
cols = [c for c in ("epoch", "train/loss", "val/dice_macro", "val/dice/ligamentum_flavum", "val/accuracy", "time_s") if c in h]
print(h[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
print(f"mean epoch time {h['time_s'].mean():.1f} s: 60 epochs (the paper budget) take about {h['time_s'].mean():.0f} min")
PY
else
  echo "no epoch finished within ${TRAIN_SECONDS} s"
fi
echo "== done in $(( $(date +%s) - started )) s; run folder: $OUT/paper_run"
