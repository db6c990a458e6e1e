"""Seeding and determinism: the same seed on CPU gives the same numbers."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

#: Seeds handed to numpy must fit in 32 bits.
_MAX_SEED = 2**32 - 1


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, numpy and torch (CPU and CUDA); with ``deterministic`` also force deterministic kernels."""
    seed = int(seed) % _MAX_SEED
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for a sub-stream (e.g. one epoch): a deterministic mix of ``seed`` and ``parts``."""
    return int(np.random.SeedSequence([int(seed) % _MAX_SEED, *(int(p) for p in parts)]).generate_state(1)[0])


def rng_state() -> dict[str, Any]:
    """The state of every global random generator, for checkpoints."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    keys = numpy[1].numpy() if isinstance(numpy[1], torch.Tensor) else np.asarray(numpy[1])
    np.random.set_state((numpy[0], keys.astype(np.uint32), *numpy[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
