"""Adaptive PID-Tversky loss: a per-class PID controller steers the Tversky false-negative penalty β_c."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import SegLoss, check_label_target
from .errors import LossConfigError
from .registry import register_loss

CADENCES = ("epoch", "step")
ERROR_COUNTS = ("soft", "hard")
_STATE_BUFFERS = ("alpha", "beta", "error", "error_prev", "integral", "derivative", "n_updates")
_COUNT_BUFFERS = ("counts", "counts_ema", "ema_ready")


@register_loss(
    "pid_tversky",
    source="losses.pid_tversky.PIDTverskyLoss (this package)",
    search_space={
        "kp": {"type": "float", "low": 0.0, "high": 2.0},
        "ki": {"type": "float", "low": 0.0, "high": 0.5},
        "kd": {"type": "float", "low": 0.0, "high": 0.5},
        "beta": {"type": "float", "low": 0.3, "high": 0.7},
        "leak": {"type": "float", "low": 0.5, "high": 1.0},
        "integral_max": {"type": "float", "low": 0.5, "high": 5.0},
        "gamma": {"type": "float", "low": 0.75, "high": 2.0},
        "cadence": {"type": "categorical", "choices": ["epoch", "step"]},
    },
)
class PIDTverskyLoss(SegLoss):
    r"""Tversky loss whose per-class penalties are driven by a discrete PID controller on the segmentation error.

    **Loss.** For every class c the loss covers (all classes, or the foreground ones with
    ``include_background=False``), with p the softmax (or sigmoid) probabilities and g the one-hot target, summed
    over the batch and all spatial dimensions:

        TP_c = Σ p·g,   FP_c = Σ p·(1−g),   FN_c = Σ (1−p)·g
        T_c  = (TP_c + s_nr) / (TP_c + α_c·FP_c + β_c·FN_c + s_nr + s_dr)
        L    = Σ_c w_c · (1 − T_c)^γ / Σ_c w_c

    α weighs false positives and β false negatives, as in MONAI and smp. The form of T_c is MONAI's
    ``TverskyLoss(batch=True)``, so with zero gains the loss *is* the static Tversky(α₀, β₀) loss, and with
    α₀ = β₀ = 0.5 also the soft Dice loss.

    **Controller.** From detached counts (never from the graph) the signed under-segmentation error

        e_c = (FN_c − FP_c) / (TP_c + FN_c + FP_c + ε) ∈ [−1, 1]

    is positive when the class is under-segmented and negative when it is over-segmented. Each update runs

        I_c ← clip(λ·I_c + e_c, −I_max, I_max)        (leaky integral with clamp: anti-windup)
        D_c = e_c − e_c,prev                          (0 on a class's first update)
        u_c = Kp·e_c + Ki·I_c + Kd·D_c
        β_c = clip(β₀ + u_c, β_min, β_max)            (output clamp)
        α_c = max(α₀ + β₀ − β_c, 0)                  (= 1 − β_c for the default α₀ = 1 − β₀)

    so persistent under-segmentation raises β_c (missed pixels cost more) and over-segmentation lowers it.

    **Cadence.** ``forward`` adds the batch's detached TP/FP/FN to an accumulator when the module is in training mode
    and gradients are enabled (a validation pass under ``torch.no_grad()`` or after ``loss.eval()`` does not feed the
    controller), or explicitly through
    :meth:`observe` / :meth:`observe_counts`. :meth:`update` closes the loop:

    - ``"epoch"`` (default): ``on_epoch_end()`` calls ``update()``; e_c is computed from the whole epoch's counts.
    - ``"step"``: ``on_step_end()`` calls ``update()``; the counts are smoothed by an EMA over steps,
      C̄ ← μ·C̄ + (1 − μ)·C_step (μ = ``ema``), and e_c is computed from C̄.

    A class with no ground truth in the observed window (TP_c + FN_c = 0) is not updated, so an empty class never
    moves the controller; ε keeps every ratio finite. Never calling the hooks leaves the loss a static
    Tversky(α₀, β₀) loss. All controller state (α, β, e, e_prev, I, D, update counts, accumulated and EMA counts)
    lives in registered buffers, so ``state_dict()``/``load_state_dict()`` resume a run exactly.

    Args:
        kp: proportional gain Kp (default 0.5: a persistent error of 0.2 shifts β by 0.1).
        ki: integral gain Ki (default 0.1). With the leak, a constant error e drives I to e/(1−λ) = 20·e (clamped to
            ±I_max), so the steady-state gain of the controller is Kp + Ki/(1−λ) = 2.5.
        kd: derivative gain Kd (default 0.05: damps oscillation, small because e is noisy).
        beta: initial/neutral false-negative weight β₀ (default 0.5).
        alpha: initial false-positive weight α₀; ``None`` (default) means 1 − β₀, i.e. α_c = 1 − β_c.
        beta_min, beta_max: output clamp of β_c (default 0.3 and 0.9).
        leak: integral leak λ ∈ [0, 1] (default 0.95; 1 is a pure integrator, 0 disables the integral).
        integral_max: integral clamp I_max > 0 (default 2.0).
        gamma: focal exponent γ > 0 on (1 − T_c) (default 1.0: plain Tversky).
        weight: per-class weights w_c for the classes the loss covers (without background when
            ``include_background=False``, as MONAI's ``DiceLoss``); ``None`` = equal weights.
        cadence: ``"epoch"`` or ``"step"`` (see above).
        ema: EMA momentum μ ∈ [0, 1) of the counts for the ``"step"`` cadence (default 0.9).
        error_counts: which detached counts feed e_c: ``"soft"`` (default, DESIGN.md §6: the same soft TP/FP/FN
            as the loss) or ``"hard"`` (counts of the argmax segmentation, or p > 0.5 with ``sigmoid``, i.e. of the
            segmentation that Dice scores). They differ when probability mass and the argmax disagree, e.g. a class
            that holds ~1/C of every pixel's mass but never wins the argmax: soft counts call it over-segmented,
            hard counts under-segmented.
        include_background: whether class 0 is part of the loss and controlled (default False).
        sigmoid: multi-label mode: sigmoid probabilities per channel; the target may then also be a ``[N,C,...]``
            binary map. Default False: softmax over classes and ``[N,1,...]`` integer labels.
        smooth_nr, smooth_dr: MONAI's numerator/denominator smoothing s_nr, s_dr (default 1e-5 each).
        eps: ε of the error ratio (default 1e-6).
        num_classes: C, to create the controller buffers at construction; ``None`` creates them at the first call
            (and on ``load_state_dict``).
    """

    def __init__(
        self,
        kp: float = 0.5,
        ki: float = 0.1,
        kd: float = 0.05,
        beta: float = 0.5,
        alpha: float | None = None,
        beta_min: float = 0.3,
        beta_max: float = 0.9,
        leak: float = 0.95,
        integral_max: float = 2.0,
        gamma: float = 1.0,
        weight: Sequence[float] | None = None,
        cadence: str = "epoch",
        ema: float = 0.9,
        error_counts: str = "soft",
        include_background: bool = False,
        sigmoid: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        eps: float = 1e-6,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        alpha0 = 1.0 - beta if alpha is None else float(alpha)
        _validate(beta, alpha0, beta_min, beta_max, leak, integral_max, gamma, cadence, ema, weight)
        if error_counts not in ERROR_COUNTS:
            raise LossConfigError(
                f"pid_tversky: error_counts must be one of {', '.join(ERROR_COUNTS)}, got {error_counts!r}"
            )
        self.error_counts = error_counts
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.beta0, self.alpha0 = float(beta), alpha0
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.leak, self.integral_max = float(leak), float(integral_max)
        self.gamma = float(gamma)
        self.cadence, self.ema = cadence, float(ema)
        self.include_background, self.sigmoid = bool(include_background), bool(sigmoid)
        self.smooth_nr, self.smooth_dr, self.eps = float(smooth_nr), float(smooth_dr), float(eps)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.num_classes: int | None = None
        for name in _STATE_BUFFERS + _COUNT_BUFFERS:
            self.register_buffer(name, torch.zeros(0))
        if num_classes is not None:
            self._materialise(int(num_classes))

    # ----------------------------------------------------------------------------------------------- buffers
    def _materialise(self, num_classes: int) -> None:
        """Create the per-class controller buffers for ``num_classes`` classes (neutral state)."""
        first = 0 if self.include_background else 1
        if num_classes <= first:
            raise LossConfigError(f"pid_tversky needs at least {first + 1} classes, got {num_classes}")
        n_covered = num_classes - first
        if self.weight is not None and self.weight.numel() != n_covered:
            raise LossConfigError(
                f"pid_tversky weight has {self.weight.numel()} entries; expected {n_covered} "
                f"(one per class{' without background' if first else ''})"
            )
        device = self.beta.device
        self.num_classes = num_classes
        self.beta = torch.full((num_classes,), self.beta0, device=device)
        self.alpha = torch.full((num_classes,), self.alpha0, device=device)
        for name in ("error", "error_prev", "integral", "derivative"):
            setattr(self, name, torch.zeros(num_classes, device=device))
        self.n_updates = torch.zeros(num_classes, dtype=torch.long, device=device)
        self.counts = torch.zeros(3, num_classes, dtype=torch.float64, device=device)
        self.counts_ema = torch.zeros(3, num_classes, dtype=torch.float64, device=device)
        self.ema_ready = torch.zeros(num_classes, dtype=torch.bool, device=device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "beta")
        if saved is not None and saved.numel() and saved.numel() != self.beta.numel():
            self._materialise(saved.numel())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def _first_class(self) -> int:
        return 0 if self.include_background else 1

    # ----------------------------------------------------------------------------------------------- loss
    def soft_counts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Soft (TP, FP, FN) per class ``[C]``, summed over batch and space, differentiable w.r.t. ``logits``."""
        num_classes = logits.shape[1]
        if self.num_classes is None:
            self._materialise(num_classes)
        elif num_classes != self.num_classes:
            raise LossConfigError(
                f"pid_tversky was set up for {self.num_classes} classes, got logits with {num_classes}"
            )
        probs = torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, dim=1)
        reduce_dims = [0, *range(2, logits.ndim)]
        if self.sigmoid and target.shape == logits.shape:  # multi-label binary target
            onehot = target.to(probs.dtype)
            tp = (probs * onehot).sum(reduce_dims)
            truth = onehot.sum(reduce_dims)
        else:  # integer labels: TP_c = Σ_{pixels labelled c} p_c, no one-hot tensor needed
            target = check_label_target(logits, target)
            flat_labels = target.reshape(-1)
            tp = probs.new_zeros(num_classes).index_add(0, flat_labels, probs.gather(1, target).reshape(-1))
            truth = torch.bincount(flat_labels, minlength=num_classes).to(probs.dtype)
        predicted = probs.sum(reduce_dims)
        return tp, predicted - tp, truth - tp

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits [N,C,*spatial]``, ``target [N,1,*spatial]`` int64 labels (or ``[N,C,...]`` binary if sigmoid)."""
        tp, fp, fn = self.soft_counts(logits, target)
        if self.training and torch.is_grad_enabled():
            self.observe_counts(*((tp, fp, fn) if self.error_counts == "soft" else self.hard_counts(logits, target)))
        first = self._first_class
        tp, fp, fn = tp[first:], fp[first:], fn[first:]
        alpha = self.alpha[first:].to(tp.dtype)
        beta = self.beta[first:].to(tp.dtype)
        numerator = tp + self.smooth_nr
        tversky = numerator / (numerator + alpha * fp + beta * fn + self.smooth_dr)
        per_class = 1.0 - tversky
        if self.gamma != 1.0:
            per_class = per_class.clamp_min(1e-12) ** self.gamma
        if self.weight is None:
            return per_class.mean()
        weight = self.weight.to(per_class.dtype)
        return (weight * per_class).sum() / weight.sum()

    # ----------------------------------------------------------------------------------------------- controller
    @torch.no_grad()
    def observe(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add the detached counts of a batch (soft or hard, see ``error_counts``) to the controller's accumulator."""
        counts = self.soft_counts(logits, target) if self.error_counts == "soft" else self.hard_counts(logits, target)
        self.observe_counts(*counts)

    @torch.no_grad()
    def hard_counts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(TP, FP, FN) per class ``[C]`` of the hard segmentation: argmax (softmax) or p > 0.5 (sigmoid)."""
        num_classes = logits.shape[1]
        reduce_dims = [0, *range(2, logits.ndim)]
        if self.sigmoid:
            predicted = (logits > 0).to(torch.float64)
            if target.shape == logits.shape:
                truth = target.to(torch.float64)
            else:
                labels = check_label_target(logits, target)
                truth = torch.zeros_like(predicted).scatter_(1, labels, 1.0)
            tp = (predicted * truth).sum(reduce_dims)
            return tp, predicted.sum(reduce_dims) - tp, truth.sum(reduce_dims) - tp
        labels = check_label_target(logits, target).reshape(-1)
        predicted = logits.argmax(dim=1).reshape(-1)
        tp = torch.bincount(labels[predicted == labels], minlength=num_classes)
        n_pred = torch.bincount(predicted, minlength=num_classes)
        n_true = torch.bincount(labels, minlength=num_classes)
        return tuple(x.to(torch.float64) for x in (tp, n_pred - tp, n_true - tp))

    @torch.no_grad()
    def observe_counts(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> None:
        """Add per-class counts ``[C]`` (TP, FP, FN) to the accumulator used by the next :meth:`update`."""
        if self.num_classes is None:
            self._materialise(int(tp.numel()))
        self.counts += torch.stack([tp, fp, fn]).detach().to(self.counts)

    @torch.no_grad()
    def update(self) -> dict[str, dict[int, float]]:
        """Run one controller update from the counts observed since the last update, reset them, return the state."""
        if self.num_classes is None:
            return {}
        observed = self.counts.clone()
        self.counts.zero_()
        has_truth = (observed[0] + observed[2]) > 0
        if self.cadence == "step":
            mu = self.ema
            blended = torch.where(self.ema_ready, mu * self.counts_ema + (1.0 - mu) * observed, observed)
            self.counts_ema.copy_(torch.where(has_truth, blended, self.counts_ema))
            self.ema_ready |= has_truth
            observed = self.counts_ema
        tp, fp, fn = observed
        active = has_truth.clone()
        active[: self._first_class] = False
        error = ((fn - fp) / (tp + fn + fp + self.eps)).to(self.error)
        integral = (self.leak * self.integral + error).clamp(-self.integral_max, self.integral_max)
        derivative = torch.where(self.n_updates > 0, error - self.error_prev, torch.zeros_like(error))
        control = self.kp * error + self.ki * integral + self.kd * derivative
        beta = (self.beta0 + control).clamp(self.beta_min, self.beta_max)
        for name, value in (
            ("error", error),
            ("integral", integral),
            ("derivative", derivative),
            ("beta", beta),
            ("alpha", (self.alpha0 + self.beta0 - beta).clamp_min(0.0)),
            ("error_prev", error),
        ):
            buffer = getattr(self, name)
            buffer.copy_(torch.where(active, value, buffer))
        self.n_updates += active.long()
        return self.controller_state()

    def on_step_end(self) -> None:
        """Update the controller after an optimizer step (``"step"`` cadence only)."""
        if self.cadence == "step":
            self.update()

    def on_epoch_end(self) -> None:
        """Update the controller after an epoch (``"epoch"`` cadence only)."""
        if self.cadence == "epoch":
            self.update()

    def controller_state(self) -> dict[str, dict[int, float]]:
        """``{"alpha", "beta", "error", "integral", "derivative": {class index: value}}`` for the controlled classes."""
        if self.num_classes is None:
            return {}
        classes = range(self._first_class, self.num_classes)
        return {
            name: {c: float(values[c]) for c in classes}
            for name, values in (
                ("alpha", self.alpha.tolist()),
                ("beta", self.beta.tolist()),
                ("error", self.error.tolist()),
                ("integral", self.integral.tolist()),
                ("derivative", self.derivative.tolist()),
            )
        }

    def extra_repr(self) -> str:
        return (
            f"kp={self.kp}, ki={self.ki}, kd={self.kd}, beta={self.beta0}, alpha={self.alpha0}, "
            f"beta_range=({self.beta_min}, {self.beta_max}), leak={self.leak}, integral_max={self.integral_max}, "
            f"gamma={self.gamma}, cadence={self.cadence!r}, error_counts={self.error_counts!r}, "
            f"include_background={self.include_background}, "
            f"sigmoid={self.sigmoid}"
        )


def _validate(
    beta: float,
    alpha0: float,
    beta_min: float,
    beta_max: float,
    leak: float,
    integral_max: float,
    gamma: float,
    cadence: str,
    ema: float,
    weight: Sequence[float] | None,
) -> None:
    checks = [
        (cadence in CADENCES, f"cadence must be one of {', '.join(CADENCES)}, got {cadence!r}"),
        (
            0.0 <= beta_min <= beta <= beta_max,
            f"need 0 <= beta_min <= beta <= beta_max, got {beta_min}, {beta}, {beta_max}",
        ),
        (alpha0 >= 0.0, f"alpha must be >= 0, got {alpha0}"),
        (0.0 <= leak <= 1.0, f"leak must be in [0, 1], got {leak}"),
        (integral_max > 0.0, f"integral_max must be > 0, got {integral_max}"),
        (gamma > 0.0, f"gamma must be > 0, got {gamma}"),
        (0.0 <= ema < 1.0, f"ema must be in [0, 1), got {ema}"),
        (
            weight is None or all(w >= 0 for w in weight) and sum(weight) > 0,
            f"weight must be >= 0, not all 0: {weight}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise LossConfigError(f"pid_tversky: {message}")
