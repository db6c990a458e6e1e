"""Helpers of tests/test_ddp.py: a gloo worker for the controller all-reduce (the plug-in loss that kills its process
is in tests/ddp_plugin.py, imported only by the trained processes so the test session's registry stays as it is)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from losses.pid_tversky import PIDTverskyLoss

#: Soft sensor and small gains: the counts differ between ranks and α/β move without reaching a clamp.
PID_PARAMS = {"sensor": "soft", "kp": 0.05, "ki": 0.02, "cadence": "step"}


def controller_worker(rank: int, world: int, init: str, counts: list, out: str) -> None:
    """Rank ``rank`` of a gloo group: observe ``counts[rank]`` (TP, FP, FN per class), two updates, save the state."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        loss = PIDTverskyLoss(**PID_PARAMS, num_classes=len(counts[rank][0]))
        for _ in range(2):
            loss.observe_counts(*(torch.tensor(c, dtype=torch.float64) for c in counts[rank]))
            loss.update()
        state = {k: v.tolist() for k, v in loss.state_dict().items() if isinstance(v, torch.Tensor)}
        Path(out, f"rank{rank}.json").write_text(json.dumps(state))
    finally:
        dist.destroy_process_group()
