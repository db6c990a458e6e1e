"""Step time, images/s and peak GPU memory of the paper budget's model, on the CPU and on one GPU.

Run by ``benchmarks/perf/gpu_check.sh`` (which then trains the first epochs of the paper budget), or alone:
``PYTHONPATH=. python benchmarks/perf/gpu_check.py [--config C] [--steps N] [--cpu-steps N] [--no-compile]``.
One real training batch of the config (``data.batch_size`` cases, 7 views each) goes through the trainer's own
training step (objective, backward, AdamW, controller hooks) in each mode: CPU float32, GPU float32, GPU AMP (bf16
where supported, else fp16) and GPU AMP + ``torch.compile``. Prints ms/step, cases/s and view images/s, the speed-up
over the CPU and ``torch.cuda.max_memory_allocated`` per GPU mode. Exits 2 with one ``error:`` line without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "experiments" / "phantom_paper.yaml"


def require_cuda() -> None:
    """Exit 2 with one clear line when no CUDA device is usable."""
    if not torch.cuda.is_available():
        print(
            "error: gpu_check needs a CUDA GPU: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); run it on a GPU node",
            file=sys.stderr,
        )
        sys.exit(2)


def build_trainer(cfg, device: str, amp: bool, compile_: bool, folder: Path):
    """A :class:`Trainer` of ``cfg`` on ``device`` (fresh model, seeded) whose ``_train_step`` is timed."""
    import losses
    from benchmarks.runner import build_model_from_config, build_report_vocab, build_split_loader
    from lss_vlm.engine.seeding import seed_everything
    from lss_vlm.engine.trainer import Trainer, TrainerSettings

    seed_everything(cfg.train.seed, cfg.train.deterministic)
    model = build_model_from_config(cfg, build_report_vocab(cfg, folder, save=False))
    t = cfg.train
    settings = TrainerSettings(
        epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay, schedule=t.schedule, grad_clip=t.grad_clip,
        lambda_seg=t.lambda_seg, lambda_cls=t.lambda_cls, lambda_txt=t.lambda_txt, seed=t.seed, deterministic=False,
        device=device, amp=amp, monitor=t.early_stopping.metric, monitor_mode=t.early_stopping.mode, patience=0,
        quiet=True, compile=compile_,
    )  # fmt: skip
    loader = build_split_loader(cfg, "train", train=True)
    return Trainer(model, losses.build_loss(cfg.loss.name, **cfg.loss.params), loader, loader, settings, folder)


def time_steps(trainer, batch: dict, steps: int, warmup: int) -> float:
    """Mean seconds per training step after ``warmup`` steps (CUDA synchronised)."""
    from lss_vlm.engine.batches import move_batch

    batch = move_batch(batch, trainer.device)
    cuda = trainer.device.type == "cuda"
    for i in range(warmup):
        trainer._train_step(batch, 1, i + 1)
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        trainer._train_step(batch, 1, warmup + i + 1)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / max(steps, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default: phantom_paper)")
    parser.add_argument("--steps", type=int, default=20, help="timed GPU steps per mode (default: 20)")
    parser.add_argument("--cpu-steps", type=int, default=2, help="timed CPU steps (default: 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile mode")
    args = parser.parse_args(argv)
    require_cuda()
    from benchmarks.config import load_config
    from benchmarks.runner import build_split_loader

    cfg = load_config(args.config, ["train.quiet=true"])
    batch = next(iter(build_split_loader(cfg, "train", train=True)))
    cases = int(batch["views"].shape[0])
    images = int(batch["view_valid"].sum()) if "view_valid" in batch else cases * int(batch["views"].shape[1])
    print(f"config {args.config}: batch {cases} cases = {images} view images of {cfg.data.spatial_size} px")
    print(f"GPU: {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}")
    modes = [
        ("cpu float32", "cpu", False, False),
        ("gpu float32", "cuda", False, False),
        ("gpu amp", "cuda", True, False),
    ]
    modes += [] if args.no_compile else [("gpu amp+compile", "cuda", True, True)]
    cpu_step = None
    print(f"{'mode':<17} {'ms/step':>9} {'cases/s':>8} {'images/s':>9} {'vs cpu':>7} {'peak GPU MiB':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, device, amp, compile_ in modes:
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            trainer = build_trainer(cfg, device, amp, compile_, Path(tmp))
            steps, warmup = (args.cpu_steps, 1) if device == "cpu" else (args.steps, 5 if compile_ else 2)
            step = time_steps(trainer, batch, steps, warmup)
            cpu_step = step if device == "cpu" else cpu_step
            peak = f"{torch.cuda.max_memory_allocated() / 2**20:13.0f}" if device == "cuda" else f"{'-':>13}"
            ratio = f"{cpu_step / step:6.1f}x" if cpu_step else f"{'-':>7}"
            print(f"{name:<17} {1000 * step:9.1f} {cases / step:8.1f} {images / step:9.1f} {ratio} {peak}", flush=True)
            del trainer
    return 0


if __name__ == "__main__":
    sys.exit(main())
