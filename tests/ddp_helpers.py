"""Helpers of tests/test_ddp.py: a gloo worker for the controller all-reduce, and a plug-in loss that kills its
process after the first epoch (``--import tests/ddp_helpers.py``; the interrupted-run case of exact resume)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

import losses
from losses.pid_tversky import PIDTverskyLoss

#: Set to a number of epochs: a process training with the ``ddp_test_pid`` loss exits (code 9) at the first step
#: after that many epochs, as if killed; the last checkpoint is then that of the epoch before.
KILL_ENV = "LSS_TEST_KILL_AFTER_EPOCHS"
#: Soft sensor and small gains: the counts differ between ranks and α/β move without reaching a clamp.
PID_PARAMS = {"sensor": "soft", "kp": 0.05, "ki": 0.02, "cadence": "step"}


class KillableLoss(PIDTverskyLoss):
    """PID-Tversky (:data:`PID_PARAMS`) that exits its process where :data:`KILL_ENV` says (test only)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**{**PID_PARAMS, **kwargs})
        self.epochs_seen = 0

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self.epochs_seen += 1

    def on_step_end(self) -> None:
        limit = os.environ.get(KILL_ENV)
        if limit is not None and self.epochs_seen >= int(limit):
            os._exit(9)
        super().on_step_end()


if "ddp_test_pid" not in losses.available_losses():
    losses.register_loss("ddp_test_pid")(KillableLoss)


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
