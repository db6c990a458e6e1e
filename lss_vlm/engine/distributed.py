"""Data-parallel training helpers (``torchrun``): the process group, per-rank data shards and rank-0-only writes.

``torchrun --nproc-per-node N -m benchmarks.cli train CONFIG`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set (PyTorch, "torchrun (Elastic Launch)"). :func:`init_from_env`
joins them into one process group: gloo on CPU, NCCL on CUDA (one GPU per local rank). Outside ``torchrun`` every
helper here is a no-op for a single process (rank 0 of 1), so the trainer has one code path.

Semantics (docs/cluster.md): ``data.batch_size`` is the batch of ONE process, the effective batch is N x batch_size;
every rank runs the same number of steps on its own shard of the same per-epoch permutation; gradients are averaged
by :class:`torch.nn.parallel.DistributedDataParallel`; only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def world_size() -> int:
    """Number of processes of the initialised group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the initialised group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (``WORLD_SIZE`` > 1 and ``RANK``) is set."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "auto") -> bool:
    """Join the process group ``torchrun`` describes; returns False (nothing done) outside ``torchrun``.

    ``device``: the config's ``train.device``; ``cuda`` (or ``auto`` with a GPU) picks NCCL and binds this process to
    GPU ``LOCAL_RANK``, anything else picks gloo. Raises RuntimeError when ``cuda`` is asked for without a GPU.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return dist.is_initialized()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("train.device: 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if world_size() > 1:
        dist.barrier()


def broadcast_object(value: object) -> object:
    """Rank 0's ``value`` on every rank (the value itself without a group)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class SeededDistributedSampler(DistributedSampler):
    """:class:`DistributedSampler` that draws its permutation from ``generator`` exactly as :class:`RandomSampler`
    does (``torch.randperm(n, generator=generator)``), then gives rank r the positions r, r + N, r + 2N, ...

    So with the trainer's per-epoch re-seeding of ``generator`` (same seed on every rank), step k of N ranks with
    batch b covers the same N·b cases as step k of one process with batch N·b: the two runs see the same data.
    The permutation is padded with its first items to a multiple of N (as DistributedSampler does).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.dataset), generator=self.generator).tolist()  # type: ignore[arg-type]
        padding = self.total_size - len(order)
        order += (order * math.ceil(max(padding, 0) / max(len(order), 1)))[:padding]
        return iter(order[self.rank : self.total_size : self.num_replicas])


def shard_loader(loader: DataLoader, seed: int) -> DataLoader:
    """``loader`` with a :class:`SeededDistributedSampler` of this rank (the same loader in a single process).

    Keeps the dataset, per-process batch size, collate function and workers of ``loader``.
    """
    if world_size() == 1:
        return loader
    sampler = SeededDistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(), seed=seed)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )


def tensor_checksum(tensors: list[torch.Tensor]) -> float:
    """A float64 sum of sums and squared sums of ``tensors``: equal on every rank when their copies agree."""
    total = 0.0
    for t in tensors:
        if t.numel() and (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool)):
            v = t.detach().to(torch.float64)
            total += float(v.sum()) + float((v * v).sum())
    return total


def ranks_agree(value: float, rel_tol: float = 1e-9) -> bool:
    """True when ``value`` is (nearly) the same on every rank (always True in a single process)."""
    if world_size() == 1:
        return True
    gathered: list[object] = [None] * world_size()
    dist.all_gather_object(gathered, float(value))
    return all(math.isclose(float(v), gathered[0], rel_tol=rel_tol, abs_tol=1e-12) for v in gathered)  # type: ignore[arg-type]
