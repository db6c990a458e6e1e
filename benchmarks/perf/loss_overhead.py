"""Forward+backward time of PID-Tversky relative to MONAI ``TverskyLoss`` (target ratio <= 1.15).

Run: ``PYTHONPATH=. python benchmarks/perf/loss_overhead.py [--repeats 30] [--threads 1]``. Both losses see the same
8x6x128x128 float32 logits and int64 labels, with the same settings (softmax, batch-level counts, background excluded);
the two are timed alternately, each repeat one forward+backward, and the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.losses import TverskyLoss

from losses import build_loss


def _time_once(loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor) -> float:
    leaf = logits.detach().requires_grad_(True)
    start = time.perf_counter()
    loss_fn(leaf, target).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats per loss (>= 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", type=int, default=128, help="spatial size (H = W)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 6, args.size, args.size, generator=generator)
    target = torch.randint(0, 6, (8, 1, args.size, args.size), generator=generator)
    pid = build_loss("pid_tversky", num_classes=6)
    monai = TverskyLoss(include_background=False, to_onehot_y=True, softmax=True, alpha=0.5, beta=0.5, batch=True)
    for _ in range(5):  # warm-up
        _time_once(pid, logits, target), _time_once(monai, logits, target)
    pid_times, monai_times = [], []
    for repeat in range(max(args.repeats, 20)):
        pairs = [(pid, pid_times), (monai, monai_times)]
        for loss_fn, times in pairs if repeat % 2 == 0 else pairs[::-1]:
            times.append(_time_once(loss_fn, logits, target))
            if loss_fn is pid:
                pid.on_step_end()
    pid_ms, monai_ms = statistics.median(pid_times) * 1e3, statistics.median(monai_times) * 1e3
    print(f"logits 8x6x{args.size}x{args.size} float32, CPU, {args.threads} thread(s), {len(pid_times)} repeats each")
    print(f"PID-Tversky fwd+bwd median {pid_ms:.2f} ms; MONAI TverskyLoss {monai_ms:.2f} ms")
    print(f"ratio PID/MONAI = {pid_ms / monai_ms:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
