"""CPU train-step time of the default VLM relative to smp ``Unet(resnet18)`` on the same pixels.

One step = forward + backward + AdamW on a batch of ``batch`` cases × 7 views at ``size``² (the VLM also decodes
reference reports with teacher forcing and classifies grades). The reference is smp
``Unet("resnet18", encoder_weights=None, in_channels=1, classes=6)`` on ``batch × 7`` single images with a
cross-entropy loss. Steps alternate (VLM, U-Net, VLM, ...) after one warm-up step each, so load changes on a shared
machine hit both; the ratio is median(VLM) / median(U-Net). Target: ratio ≤ 1.5.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/perf/model_step.py --repeats 7
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from lss_vlm.constants import NUM_LABELS, NUM_LEVELS, NUM_VIEWS
from lss_vlm.models import build_model, count_parameters
from lss_vlm.reports.writer import write_reports

TARGET_RATIO = 1.5


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vlm_step(model: nn.Module, batch: int, size: int) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    views = torch.randn(batch, NUM_VIEWS, 1, size, size, generator=gen)
    masks = torch.randint(0, NUM_LABELS, (batch * NUM_VIEWS, size, size), generator=gen)
    grades = torch.randint(0, 4, (batch, NUM_LEVELS), generator=gen)
    rng = np.random.default_rng(0)
    ids, mask = model.tokenize_reports([write_reports(g.tolist(), rng=rng, n=1)[0] for g in grades])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> None:
        out = model(views, ids, mask)
        seg = nn.functional.cross_entropy(out["seg_logits"].flatten(0, 1), masks)
        cls = nn.functional.cross_entropy(out["grade_logits"].flatten(0, 1), grades.flatten())
        loss = seg + cls + out.get("report_loss", 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def unet_step(batch: int, size: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=NUM_LABELS).train()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch * NUM_VIEWS, 1, size, size, generator=gen)
    masks = torch.randint(0, NUM_LABELS, (batch * NUM_VIEWS, size, size), generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def describe(name: str, times_ms: list[float]) -> str:
    runs = ", ".join(f"{t:.0f}" for t in times_ms)
    return f"{name:>16}: median {statistics.median(times_ms):8.0f} ms/step  ({runs})"


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="spca_vlm", help="registered model to time (default: spca_vlm)")
    parser.add_argument("--text-encoder", default="minilm", help="text encoder of the model (default: minilm)")
    parser.add_argument("--encoder", default=None, help="image backbone override (default: the model's default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model, alternating")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    cfg = {"text_encoder": args.text_encoder} | ({"encoder": args.encoder} if args.encoder else {})
    model = build_model(args.model, **cfg)
    total, trainable = count_parameters(model)
    vlm = vlm_step(model, args.batch, args.size)
    vlm()  # warm-up
    rss_vlm = peak_rss_mb()
    unet = unet_step(args.batch, args.size)
    unet()  # warm-up
    vlm_ms, unet_ms = [], []
    for _ in range(args.repeats):
        vlm_ms.append(timed(vlm))
        unet_ms.append(timed(unet))
    ratio = statistics.median(vlm_ms) / statistics.median(unet_ms)
    verdict = "OK" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"model {args.model} ({cfg}), params total {total:,} trainable {trainable:,}")
    print(f"batch {args.batch} cases x {NUM_VIEWS} views, {args.size}^2, torch threads {torch.get_num_threads()}")
    print(describe(args.model, vlm_ms))
    print(describe("unet_resnet18", unet_ms))
    print(f"peak RSS: {rss_vlm:.0f} MiB after the VLM warm-up step, {peak_rss_mb():.0f} MiB at the end (both models)")
    print(f"ratio {args.model} / unet_resnet18 = {ratio:.2f} (target <= {TARGET_RATIO}) -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
