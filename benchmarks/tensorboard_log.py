"""TensorBoard event files of a run: the scalars of ``history.csv``, one point per epoch, under ``<run>/tb/``.

Uses :class:`torch.utils.tensorboard.SummaryWriter`. Without the ``tensorboard`` package the run goes on without
event files and one warning says so (``history.csv`` holds the same numbers). View with
``tensorboard --logdir <suite or run dir>``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

#: Folder of the event files inside a run directory.
TB_DIR = "tb"
_warned = False


class ScalarLog:
    """Writes history rows (``{column: value}``) as TensorBoard scalars, tagged by column, step = ``epoch``.

    A no-op (after one warning per process) when ``tensorboard`` is not installed.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.log_dir = Path(run_dir) / TB_DIR
        self._writer = _summary_writer(self.log_dir)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def add_row(self, row: dict[str, Any]) -> None:
        """Every finite number of ``row`` except ``epoch`` as scalar ``tag = column``, ``global_step = epoch``."""
        if self._writer is None:
            return
        step = int(row.get("epoch", 0))
        for tag, value in row.items():
            if tag != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(tag, float(value), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _summary_writer(log_dir: Path) -> Any:
    global _warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises ImportError when the tensorboard package is missing
        if not _warned:
            _warned = True
            warnings.warn(
                f"no TensorBoard event files: {exc} (pip install tensorboard); history.csv holds the same scalars",
                stacklevel=3,
            )
        return None
    return SummaryWriter(log_dir=str(log_dir))
