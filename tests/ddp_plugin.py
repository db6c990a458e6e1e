"""A plug-in loss for tests/test_ddp.py (``--import tests/ddp_plugin.py``): PID-Tversky that exits its process after
a given number of epochs, the interrupted-run case of exact resume. Imported only by the processes it trains in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import losses
from losses.pid_tversky import PIDTverskyLoss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_helpers import PID_PARAMS  # noqa: E402

#: Set to a number of epochs: a process training with the ``ddp_test_pid`` loss exits (code 9) at the first step
#: after that many epochs, as if killed; the last checkpoint is then that of the epoch before.
KILL_ENV = "LSS_TEST_KILL_AFTER_EPOCHS"


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
