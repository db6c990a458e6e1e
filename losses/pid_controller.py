"""A discrete, per-class PID controller with a leaky clamped integral (anti-windup) and a clamped output.

This is the control core of :class:`losses.pid_tversky.PIDTverskyLoss`; it knows nothing about losses. Its state
lives in registered buffers so that ``state_dict()`` / ``load_state_dict()`` resume a run exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .errors import LossConfigError

_BUFFERS = ("error", "error_prev", "integral", "derivative", "control", "output", "n_updates", "n_clamped")


class PIDController(nn.Module):
    r"""One PID loop per class on a signed error e_c (> 0: raise the output, < 0: lower it).

    Each :meth:`step` with errors ``e [C]`` and a mask of the classes to update runs, for the masked classes only::

        I_c ← clip(λ·I_c + e_c, −I_max, I_max)         leaky, clamped integral (anti-windup)
        D_c = e_c − e_c,prev                           0 on a class's first update (no derivative kick)
        u_c = Kp·e_c + Ki·I_c + Kd·D_c
        y_c = clip(y₀ + u_c, y_min, y_max)             clamped output

    An update whose unclipped y₀ + u_c lies outside [y_min, y_max] counts as *clamped* (``n_clamped``), so the
    fraction of saturated updates is ``n_clamped / n_updates``. A non-finite error never enters the state: that class
    is skipped for the update.

    Args:
        kp, ki, kd: gains (finite, ≥ 0).
        leak: integral leak λ ∈ [0, 1] (1 = pure integrator, 0 = no memory).
        integral_max: integral clamp I_max > 0.
        neutral: y₀, the output at zero error (and with zero gains, always).
        output_min, output_max: output clamp, y_min ≤ y₀ ≤ y_max.

    Raises:
        LossConfigError: a gain, leak, clamp or neutral value outside its domain (the message names it).
    """

    def __init__(
        self,
        kp: float,
        ki: float,
        kd: float,
        leak: float,
        integral_max: float,
        neutral: float,
        output_min: float,
        output_max: float,
        owner: str = "pid",
    ) -> None:
        super().__init__()
        _check_gains(owner, kp=kp, ki=ki, kd=kd, leak=leak, integral_max=integral_max)
        if not all(math.isfinite(v) for v in (neutral, output_min, output_max)) or not (
            output_min <= neutral <= output_max
        ):
            raise LossConfigError(
                f"{owner}: the output clamp needs finite min <= neutral <= max, got {output_min}, {neutral}, "
                f"{output_max}"
            )
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.leak, self.integral_max = float(leak), float(integral_max)
        self.neutral, self.output_min, self.output_max = float(neutral), float(output_min), float(output_max)
        for name in _BUFFERS:
            self.register_buffer(name, torch.zeros(0))

    @property
    def is_static(self) -> bool:
        """True when every gain is 0: the output is the neutral value forever."""
        return self.kp == self.ki == self.kd == 0.0

    def materialise(self, num_classes: int, device: torch.device | None = None) -> None:
        """Create the per-class buffers in their neutral state."""
        for name in _BUFFERS:
            dtype = torch.long if name.startswith("n_") else torch.float32
            setattr(self, name, torch.zeros(num_classes, dtype=dtype, device=device))
        self.output.fill_(self.neutral)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "output")
        if saved is not None and saved.numel() != self.output.numel():
            self.materialise(saved.numel(), saved.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def step(self, error: torch.Tensor, active: torch.Tensor) -> None:
        """One update of the classes where ``active [C]`` is True, from the errors ``error [C]``."""
        active = active & torch.isfinite(error)
        error = torch.nan_to_num(error.to(self.error), nan=0.0, posinf=0.0, neginf=0.0)
        integral = (self.leak * self.integral + error).clamp(-self.integral_max, self.integral_max)
        derivative = torch.where(self.n_updates > 0, error - self.error_prev, torch.zeros_like(error))
        control = self.kp * error + self.ki * integral + self.kd * derivative
        raw = self.neutral + control
        output = raw.clamp(self.output_min, self.output_max)
        clamped = (raw < self.output_min) | (raw > self.output_max)
        for name, value in (
            ("error", error),
            ("integral", integral),
            ("derivative", derivative),
            ("control", control),
            ("output", output),
            ("error_prev", error),
        ):
            buffer = getattr(self, name)
            buffer.copy_(torch.where(active, value, buffer))
        self.n_updates += active.long()
        self.n_clamped += (active & clamped).long()

    def clamp_fraction(self) -> torch.Tensor:
        """Per class, the fraction of its updates whose output sat on a clamp (NaN before the first update)."""
        return self.n_clamped.double() / self.n_updates.double().where(self.n_updates > 0, torch.nan)

    def extra_repr(self) -> str:
        return (
            f"kp={self.kp}, ki={self.ki}, kd={self.kd}, leak={self.leak}, integral_max={self.integral_max}, "
            f"output={self.neutral} in [{self.output_min}, {self.output_max}]"
        )


def _check_gains(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise LossConfigError(f"{owner}: {name} must be a finite number >= 0, got {value}")
    if values["leak"] > 1.0:
        raise LossConfigError(f"{owner}: leak must be in [0, 1], got {values['leak']}")
    if values["integral_max"] <= 0.0:
        raise LossConfigError(f"{owner}: integral_max must be > 0, got {values['integral_max']}")
