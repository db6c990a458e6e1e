"""The loss zoo: every segmentation loss of the toolkit, built by name with ``build_loss``.

Every loss takes ``loss(logits [N,C,*spatial], target [N,1,*spatial] int64) -> scalar``; the hooks of
:class:`losses.base.SegLoss` are optional (any ``torch.nn.Module`` with that call is a loss). Losses from outside the
zoo: ``@register_loss`` in a module given to ``lss-bench --import``, a ``"package.module:factory"`` name, or the
``lss_vlm.losses`` entry-point group (see :mod:`losses.registry`).
``losses`` never imports ``lss_vlm`` or ``benchmarks``.
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
from .registry import (
    ENTRY_POINT_GROUP,
    available_losses,
    build_loss,
    check_loss,
    load_plugins,
    loss_origin,
    loss_spec,
    register_loss,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "LossConfigError",
    "PIDTverskyLoss",
    "SegLoss",
    "UnknownLossError",
    "available_losses",
    "build_loss",
    "check_loss",
    "load_plugins",
    "loss_origin",
    "loss_spec",
    "register_loss",
]
