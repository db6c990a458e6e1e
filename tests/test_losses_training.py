"""Training sanity on a small imbalanced 2D toy: every loss trains; PID-Tversky finds more of the minority class."""

from __future__ import annotations

import pytest
import torch
from toy_segmentation import minority_recall_and_dice, train_toy

from losses import available_losses, build_loss


@pytest.mark.parametrize("name", available_losses())
def test_a_tiny_network_reduces_every_loss(name: str) -> None:
    torch.set_num_threads(1)
    _, curve = train_toy(build_loss(name), seed=0, steps=60)
    first, last = sum(curve[:10]) / 10, sum(curve[-10:]) / 10
    assert last < 0.95 * first, f"{name}: loss went from {first:.4f} to {last:.4f}"


@pytest.mark.slow
def test_pid_tversky_minority_recall_at_least_static_tversky() -> None:
    """Mean over 5 seeds of the minority-class recall: PID-Tversky (default gains) >= static Tversky(0.5, 0.5)."""
    torch.set_num_threads(1)
    seeds = range(5)
    recall = {}
    for name in ("tversky", "pid_tversky"):
        recall[name] = [minority_recall_and_dice(train_toy(build_loss(name), seed)[0])[0] for seed in seeds]
    print({name: [round(r, 3) for r in values] for name, values in recall.items()})
    assert sum(recall["pid_tversky"]) >= sum(recall["tversky"]), recall
