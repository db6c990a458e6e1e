"""The loss zoo: every segmentation loss of the toolkit, built by name with ``build_loss``.

Every loss takes ``loss(logits [N,C,*spatial], target [N,1,*spatial] int64) -> scalar`` and has the hooks of
:class:`losses.base.SegLoss`. ``losses`` never imports ``lss_vlm`` or ``benchmarks``.
"""

from . import (  # noqa: F401  (importing a module registers its losses)
    ce,
    dice,
    dice_ce,
    dice_focal,
    focal,
    focal_tversky,
    generalized_dice,
    jaccard,
    lovasz,
    pid_tversky,
    tversky,
)
from .base import SegLoss
from .errors import LossConfigError, UnknownLossError
from .pid_tversky import PIDTverskyLoss
from .registry import available_losses, build_loss, loss_spec, register_loss

__all__ = [
    "LossConfigError",
    "PIDTverskyLoss",
    "SegLoss",
    "UnknownLossError",
    "available_losses",
    "build_loss",
    "loss_spec",
    "register_loss",
]
