"""Forward+backward time of PID-Tversky relative to MONAI ``TverskyLoss`` (target ratio <= 1.15).

Run: ``PYTHONPATH=. python benchmarks/perf/loss_overhead.py [--repeats 30] [--threads 1]``. Both losses see the same
8x6x128x128 float32 logits and int64 labels, with the same settings (softmax, batch-level counts, background included,
the defaults of both); the losses are timed alternately, each repeat one forward+backward (plus the step-cadence
controller update), and the ratios of the medians are printed. The pixel-weight actuator also computes a
cross-entropy, so MONAI ``DiceCELoss`` is printed beside it as the library loss of the same shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.losses import DiceCELoss, TverskyLoss

from losses import build_loss


def _time_once(loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor) -> float:
    """One forward+backward, plus the per-step controller hook (a no-op except for PID's "step" cadence)."""
    leaf = logits.detach().requires_grad_(True)
    start = time.perf_counter()
    loss_fn(leaf, target).backward()
    if hasattr(loss_fn, "on_step_end"):
        loss_fn.on_step_end()
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
    candidates = {
        "MONAI TverskyLoss": TverskyLoss(to_onehot_y=True, softmax=True, alpha=0.5, beta=0.5, batch=True),
        "MONAI DiceCELoss": DiceCELoss(to_onehot_y=True, softmax=True, batch=True),
        "PID-Tversky (default: recall sensor, beta, step)": build_loss("pid_tversky", num_classes=6),
        "PID-Tversky (pixel weights, step)": build_loss("pid_tversky", num_classes=6, actuator="pixel_weight"),
        "PID-Tversky (lagrange actuator, step)": build_loss("pid_tversky", num_classes=6, actuator="lagrange"),
    }
    for loss_fn in candidates.values():  # warm-up
        for _ in range(5):
            _time_once(loss_fn, logits, target)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for repeat in range(max(args.repeats, 20)):
        order = list(candidates) if repeat % 2 == 0 else list(candidates)[::-1]
        for name in order:
            times[name].append(_time_once(candidates[name], logits, target))
    median_ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    reference = median_ms["MONAI TverskyLoss"]
    print(f"logits 8x6x{args.size}x{args.size} float32, CPU, {args.threads} thread(s), {len(times[order[0]])} repeats")
    for name, ms in median_ms.items():
        print(f"{name:42s} fwd+bwd median {ms:7.2f} ms  ratio {ms / reference:.3f}")
    ratio = median_ms["PID-Tversky (default: recall sensor, beta, step)"] / reference
    print(f"ratio PID-Tversky (default) / MONAI TverskyLoss = {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
