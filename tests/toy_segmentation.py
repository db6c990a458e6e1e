"""A small imbalanced 2D toy segmentation problem and a tiny network, shared by the loss training-sanity tests."""

from __future__ import annotations

import torch
from torch import nn

SIZE = 32
STEPS_PER_EPOCH = 10


def toy_batch(generator: torch.Generator, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[B,1,32,32]`` and labels ``[B,1,32,32]``: background, a large bright box (class 1, ~15 % of pixels)
    and a small faint disc (class 2, ~1 % of pixels) in Gaussian noise. Class 2 is the minority under test."""
    rows = torch.arange(SIZE).view(-1, 1).float()
    cols = torch.arange(SIZE).view(1, -1).float()
    target = torch.zeros(batch_size, 1, SIZE, SIZE, dtype=torch.long)
    image = torch.zeros(batch_size, 1, SIZE, SIZE)
    for i in range(batch_size):
        top, left = torch.randint(0, SIZE - 14, (2,), generator=generator).tolist()
        height, width = torch.randint(9, 14, (2,), generator=generator).tolist()
        target[i, 0, top : top + height, left : left + width] = 1
        centre = torch.randint(3, SIZE - 3, (2,), generator=generator).float()
        radius = 1.2 + torch.rand(1, generator=generator).item()
        disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
        target[i, 0][disc] = 2
    image[target == 1] = 1.5
    image[target == 2] = 1.0
    image += 0.6 * torch.randn(image.shape, generator=generator)
    return image, target


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 3, 1),
    )


def train_toy(loss_fn: nn.Module, seed: int, steps: int = 300, lr: float = 1e-2) -> tuple[nn.Module, list[float]]:
    """Train ``tiny_net(seed)`` with ``loss_fn`` (hooks called like the trainer does); return it and the loss curve."""
    model = tiny_net(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        image, target = toy_batch(generator)
        optimizer.zero_grad()
        value = loss_fn(model(image), target)
        value.backward()
        optimizer.step()
        curve.append(value.item())
        loss_fn.on_step_end()
        if step % STEPS_PER_EPOCH == STEPS_PER_EPOCH - 1:
            loss_fn.on_epoch_end()
    return model, curve


@torch.no_grad()
def minority_recall_and_dice(model: nn.Module, n_images: int = 64) -> tuple[float, float]:
    """Recall TP/(TP+FN) and Dice of class 2 from argmax predictions on a fixed held-out set."""
    model.eval()
    image, target = toy_batch(torch.Generator().manual_seed(12345), n_images)
    prediction = model(image).argmax(1, keepdim=True)
    truth, predicted = target == 2, prediction == 2
    tp = (truth & predicted).sum().item()
    return tp / max(truth.sum().item(), 1), 2 * tp / max(truth.sum().item() + predicted.sum().item(), 1)
