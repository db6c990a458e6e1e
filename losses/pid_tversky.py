"""Adaptive PID-Tversky loss (v2): a per-class PID controller, fed by the segmentation that Dice scores, steers a
term that still has a gradient when a class is missed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .base import SegLoss, check_label_target
from .errors import LossConfigError
from .pid_controller import PIDController
from .registry import register_loss

CADENCES = ("epoch", "step")
SENSORS = ("volume", "val_volume", "recall", "soft")
ACTUATORS = ("pixel_weight", "tversky", "lagrange")
DEFAULT_SETPOINTS = {"volume": 1.0, "val_volume": 1.0, "recall": 0.9, "soft": 0.0}
_COUNT_BUFFERS = ("counts", "counts_ema", "ema_ready")
GAIN_SPACE = {
    "kp": {"type": "float", "low": 0.0, "high": 2.0},
    "ki": {"type": "float", "low": 0.0, "high": 0.5},
    "kd": {"type": "float", "low": 0.0, "high": 0.5},
}


@register_loss(
    "pid_tversky",
    source="losses.pid_tversky.PIDTverskyLoss (this package)",
    search_space={
        **GAIN_SPACE,
        "leak": {"type": "float", "low": 0.5, "high": 1.0},
        "integral_max": {"type": "float", "low": 0.5, "high": 5.0},
        "cadence": {"type": "categorical", "choices": ["epoch", "step"]},
    },
)
class PIDTverskyLoss(SegLoss):
    r"""Tversky loss plus a controlled term whose per-class strength a discrete PID sets from the hard segmentation.

    **Loss.** With p the softmax (or sigmoid) probabilities and g the one-hot target, summed over the batch and all
    spatial dimensions, for every class c the Tversky term covers (all classes by default; foreground only with
    ``include_background=False``):

        TP_c = Σ p·g,   FP_c = Σ p·(1−g),   FN_c = Σ (1−p)·g
        T_c  = (TP_c + s_nr) / (TP_c + α_c·FP_c + β_c·FN_c + s_nr + s_dr)
        L    = Σ_c w_c·(1 − T_c)^γ / Σ_c w_c  +  A(y)

    where y_c is the controller output and A the *actuator* term:

    - ``"pixel_weight"``: A = λ_ce · CE_y, a per-pixel cross-entropy whose class weights are y_c
      (neutral 1, clamp [``weight_min``, ``weight_max``]); torch normalises it by Σ_pixels y_{g(x)}. Every pixel of
      class c pulls p_c up with weight y_c whatever TP_c is, so the actuator acts on a class the network misses.
      Idea: the recall loss of Tian et al. (2021), which weights CE per class by its running false-negative rate.
    - ``"tversky"`` (default, as in v1): y_c = β_c ∈ [β_min, β_max], α_c = max(α₀ + β₀ − β_c, 0), A = 0. Steers the
      same overlap term: it has no gradient on the FP of a class whose TP ≈ 0, which with the background in the
      loss (the default) no longer leaves a class unsupervised. It won the ablation with the recall sensor.
    - ``"lagrange"``: A = mean_c y_c·(1 − R_c), R_c = TP_c/(TP_c + FN_c + s_dr) the soft recall, y_c ∈
      [0, ``multiplier_max``] a Lagrange multiplier on the constraint "recall ≥ setpoint"; dA/dp_c = y_c/|g_c| on
      the pixels of c, never 0. The PID multiplier update is that of Stooke, Achiam & Abbeel (2020).

    **Sensor.** After each update window (an epoch, or a step with EMA-smoothed counts) the controller reads per
    foreground class c a signed error that is > 0 when c is under-segmented and 0 at the setpoint s:

    - ``"volume"``: e_c = (s·|G_c| − |P_c|)/(s·|G_c| + |P_c|) on the argmax segmentation (p > 0.5 with
      ``sigmoid``), i.e. on what Dice scores; s (default 1) is the wanted predicted/true area ratio. e ∈ [−1, 1].
    - ``"val_volume"``: the same volume error, read once an epoch from the *validation* split's argmax segmentation
      (the trainer calls :meth:`on_validation` with the per-class area ratio r_c = |P_c|/|G_c|):
      e_c = (s − r_c)/(s + r_c). Training batches can be segmented to the right volume while held-out cases are not
      (a generalisation gap the training-batch sensors cannot see); this sensor reads what the test scores.
    - ``"recall"`` (default): e_c = s − TP_c/(TP_c + FN_c) on the argmax segmentation; s is the recall target
      (default 0.9). The volume sensors converge to 0 on training batches while a thin class stays under-segmented on
      held-out cases; a recall target keeps pressure on it (ablation in docs/results.md).
    - ``"soft"`` (v1): e_c = (FN_c − FP_c)/(TP_c + FN_c + FP_c) on the soft counts. For a class under 1 % of the
      pixels these measure the probability mass leaking from the background (e ≈ −1 from the first epoch), which is
      why v2 reads hard counts.

    **Controller** (:class:`losses.pid_controller.PIDController`): I_c ← clip(λ·I_c + e_c, ±I_max),
    D_c = e_c − e_c,prev, u_c = Kp·e_c + Ki·I_c + Kd·D_c, y_c = clip(y₀ + u_c, y_min, y_max). The background is
    never controlled, a class with no ground truth in the window is not updated, and a non-finite error is skipped,
    so the controller can never put a NaN into the loss.

    **Static baselines.** With Kp = Ki = Kd = 0 the loss is exactly Tversky(α₀, β₀) (= MONAI
    ``TverskyLoss(batch=True)``; soft Dice at α₀ = β₀ = 0.5) for ``"tversky"`` (the default) and ``"lagrange"``, and
    Tversky(α₀, β₀) + λ_ce·CE for ``"pixel_weight"`` (with α₀ = β₀ = 0.5, the Dice+CE objective of nnU-Net).

    **Cadence.** ``forward`` adds the batch's detached counts to an accumulator in training mode with gradients on
    (or explicitly through :meth:`observe` / :meth:`observe_counts`); ``"epoch"`` updates in ``on_epoch_end()``,
    ``"step"`` (default) in ``on_step_end()`` from counts smoothed by C̄ ← μ·C̄ + (1 − μ)·C_step. All state lives in
    registered buffers: ``state_dict()`` / ``load_state_dict()`` resume exactly.

    Args:
        kp, ki, kd: PID gains (finite, ≥ 0; defaults 0.5, 0.1, 0.0). The defaults (recall sensor, β actuator, PI,
            step cadence) won the ablation on the quick budget (docs/results.md, "Losses re-examined").
        sensor: ``"recall"`` (default), ``"volume"``, ``"val_volume"`` or ``"soft"``.
        actuator: ``"tversky"`` (default), ``"pixel_weight"`` or ``"lagrange"``.
        setpoint: the sensor's setpoint (None: 1.0 for volume, 0.9 for recall; soft has none). Volume: > 0;
            recall: in (0, 1].
        beta: β₀ (default 0.5); alpha: α₀ (None: 1 − β₀). beta_min, beta_max: clamp of β for ``"tversky"``.
        lambda_ce: weight of the per-pixel term of ``"pixel_weight"`` (default 1.0, must be > 0 there).
        weight_min, weight_max: clamp of the class weights of ``"pixel_weight"`` (default 0.25, 4.0).
        multiplier_max: upper clamp of the multipliers of ``"lagrange"`` (default 2.0).
        leak: integral leak λ ∈ [0, 1] (default 0.95); integral_max: I_max > 0 (default 2.0).
        gamma: focal exponent γ > 0 on (1 − T_c) (default 1: plain Tversky).
        weight: static per-class weights w_c of the Tversky term (one per covered class), None = equal.
        cadence: ``"step"`` (default) or ``"epoch"``; ema: EMA momentum μ ∈ [0, 1) of the step cadence (0.9).
        include_background: whether class 0 is in the Tversky term (default True, MONAI's default: with a softmax
            and an overlap-only loss, excluding it leaves the background unsupervised, see docs/losses.md).
        sigmoid: multi-label mode (sigmoid per channel; target may be ``[N,C,...]`` binary).
        smooth_nr, smooth_dr: MONAI's smoothing (1e-5 each); eps: ε of the error ratios (1e-6).
        num_classes: C, to create the buffers at construction (else at the first call or ``load_state_dict``).

    Raises:
        LossConfigError: a value outside its domain or an unknown sensor/actuator/cadence; the message names the
            parameter and the allowed values.
    """

    def __init__(
        self,
        kp: float = 0.5,
        ki: float = 0.1,
        kd: float = 0.0,
        sensor: str = "recall",
        actuator: str = "tversky",
        setpoint: float | None = None,
        beta: float = 0.5,
        alpha: float | None = None,
        beta_min: float = 0.3,
        beta_max: float = 0.9,
        lambda_ce: float = 1.0,
        weight_min: float = 0.25,
        weight_max: float = 4.0,
        multiplier_max: float = 2.0,
        leak: float = 0.95,
        integral_max: float = 2.0,
        gamma: float = 1.0,
        weight: Sequence[float] | None = None,
        cadence: str = "step",
        ema: float = 0.9,
        include_background: bool = True,
        sigmoid: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        eps: float = 1e-6,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("sensor", sensor, SENSORS)
        _check_choice("actuator", actuator, ACTUATORS)
        _check_choice("cadence", cadence, CADENCES)
        alpha0 = 1.0 - beta if alpha is None else float(alpha)
        self.sensor, self.actuator, self.cadence = sensor, actuator, cadence
        self.setpoint = _setpoint(sensor, setpoint)
        _validate(
            beta,
            alpha0,
            beta_min,
            beta_max,
            gamma,
            ema,
            weight,
            lambda_ce,
            actuator,
            weight_min,
            weight_max,
            multiplier_max,
        )
        self.beta0, self.alpha0 = float(beta), alpha0
        self.lambda_ce, self.gamma, self.ema = float(lambda_ce), float(gamma), float(ema)
        self.include_background, self.sigmoid = bool(include_background), bool(sigmoid)
        self.smooth_nr, self.smooth_dr, self.eps = float(smooth_nr), float(smooth_dr), float(eps)
        neutral, low, high = {
            "pixel_weight": (1.0, weight_min, weight_max),
            "tversky": (float(beta), beta_min, beta_max),
            "lagrange": (0.0, 0.0, multiplier_max),
        }[actuator]
        self.controller = PIDController(kp, ki, kd, leak, integral_max, neutral, low, high, owner="pid_tversky")
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.num_classes: int | None = None
        for name in _COUNT_BUFFERS:
            self.register_buffer(name, torch.zeros(0))
        if num_classes is not None:
            self._materialise(int(num_classes))

    # ----------------------------------------------------------------------------------------------- buffers
    def _materialise(self, num_classes: int) -> None:
        """Create the per-class controller and count buffers for ``num_classes`` classes (neutral state)."""
        if num_classes < 2:
            raise LossConfigError(f"pid_tversky needs at least 2 classes, got {num_classes}")
        n_covered = num_classes - self._first_class
        if self.weight is not None and self.weight.numel() != n_covered:
            raise LossConfigError(
                f"pid_tversky weight has {self.weight.numel()} entries; expected {n_covered} "
                f"(one per class{' without background' if self._first_class else ''})"
            )
        device = self.counts.device
        self.num_classes = num_classes
        self.controller.materialise(num_classes, device)
        self.counts = torch.zeros(3, num_classes, dtype=torch.float64, device=device)
        self.counts_ema = torch.zeros(3, num_classes, dtype=torch.float64, device=device)
        self.ema_ready = torch.zeros(num_classes, dtype=torch.bool, device=device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "counts")
        if saved is not None and saved.numel() and saved.shape != self.counts.shape:
            self._materialise(saved.shape[1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def _first_class(self) -> int:
        return 0 if self.include_background else 1

    @property
    def beta(self) -> torch.Tensor:
        """β per class ``[C]`` (β₀ everywhere unless the actuator is ``"tversky"``)."""
        out = self.controller.output
        return out if self.actuator == "tversky" else torch.full_like(out, self.beta0)

    @property
    def alpha(self) -> torch.Tensor:
        """α per class ``[C]``: α₀ + β₀ − β_c, floored at 0."""
        return (self.alpha0 + self.beta0 - self.beta).clamp_min(0.0)

    # ----------------------------------------------------------------------------------------------- loss
    def _check_classes(self, logits: torch.Tensor) -> None:
        """Create the buffers at the first call; afterwards the number of classes must not change."""
        num_classes = logits.shape[1]
        if self.num_classes is None:
            self._materialise(num_classes)
        elif num_classes != self.num_classes:
            raise LossConfigError(
                f"pid_tversky was set up for {self.num_classes} classes, got logits with {num_classes}"
            )

    def soft_counts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Soft (TP, FP, FN) per class ``[C]``, summed over batch and space, differentiable w.r.t. ``logits``."""
        return self._soft_terms(logits, target)[:3]

    def _soft_terms(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(TP, FP, FN, log p of the true class per pixel ``[N,1,*spatial]`` or None), from one (log-)softmax."""
        self._check_classes(logits)
        probs = torch.sigmoid(logits) if self.sigmoid else None
        num_classes = logits.shape[1]
        reduce_dims = [0, *range(2, logits.ndim)]
        true_log_prob = None
        if self.sigmoid and target.shape == logits.shape:  # multi-label binary target
            onehot = target.to(probs.dtype)
            tp = (probs * onehot).sum(reduce_dims)
            truth = onehot.sum(reduce_dims)
        else:  # integer labels: TP_c = Σ_{pixels labelled c} p_c, no one-hot tensor needed
            target = check_label_target(logits, target)
            if probs is None:
                log_probs = torch.log_softmax(logits, dim=1)
                probs = log_probs.exp()
                true_log_prob = log_probs.gather(1, target)
                true_prob = true_log_prob.exp()
            else:
                true_prob = probs.gather(1, target)
            flat_labels = target.reshape(-1)
            tp = probs.new_zeros(num_classes).index_add(0, flat_labels, true_prob.reshape(-1))
            truth = torch.bincount(flat_labels, minlength=num_classes).to(probs.dtype)
        predicted = probs.sum(reduce_dims)
        return tp, predicted - tp, truth - tp, true_log_prob

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits [N,C,*spatial]``, ``target [N,1,*spatial]`` int64 labels (or ``[N,C,...]`` binary if sigmoid)."""
        tp, fp, fn, true_log_prob = self._soft_terms(logits, target)
        if self.training and torch.is_grad_enabled() and self.sensor != "val_volume":
            self.observe_counts(*((tp, fp, fn) if self.sensor == "soft" else self.hard_counts(logits, target)))
        loss = self._tversky(tp, fp, fn)
        if self.actuator == "pixel_weight":
            loss = loss + self.lambda_ce * self._weighted_ce(logits, target, true_log_prob)
        elif self.actuator == "lagrange":
            loss = loss + self._recall_penalty(tp, fn)
        return loss

    def _tversky(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        first = self._first_class
        tp, fp, fn = tp[first:], fp[first:], fn[first:]
        alpha, beta = self.alpha[first:].to(tp.dtype), self.beta[first:].to(tp.dtype)
        numerator = tp + self.smooth_nr
        per_class = 1.0 - numerator / (numerator + alpha * fp + beta * fn + self.smooth_dr)
        if self.gamma != 1.0:
            per_class = per_class.clamp_min(1e-12) ** self.gamma
        if self.weight is None:
            return per_class.mean()
        weight = self.weight.to(per_class.dtype)
        return (weight * per_class).sum() / weight.sum()

    def _weighted_ce(
        self, logits: torch.Tensor, target: torch.Tensor, true_log_prob: torch.Tensor | None
    ) -> torch.Tensor:
        """Σ_x y_{g(x)}·(−log p_{g(x)}(x)) / Σ_x y_{g(x)}: torch's class-weighted CE (softmax, from the log-softmax
        the Tversky term already computed), or a per-channel weighted BCE (sigmoid)."""
        weights = self.controller.output.to(logits.dtype)
        if true_log_prob is not None:
            pixel_weights = weights[check_label_target(logits, target)]
            return -(pixel_weights * true_log_prob).sum() / pixel_weights.sum()
        if target.shape != logits.shape:
            labels = check_label_target(logits, target)
            target = torch.zeros_like(logits).scatter_(1, labels, 1.0)
        shape = (1, -1) + (1,) * (logits.ndim - 2)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), weight=weights.view(shape))

    def _recall_penalty(self, tp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        """mean over foreground classes of y_c·(1 − soft recall_c); 0 for classes without ground truth."""
        multipliers = self.controller.output[1:].to(tp.dtype)
        truth = (tp + fn)[1:]
        recall = tp[1:] / (truth + self.smooth_dr)
        penalty = torch.where(truth > 0, multipliers * (1.0 - recall), torch.zeros_like(recall))
        return penalty.mean()

    # ----------------------------------------------------------------------------------------------- sensor
    @torch.no_grad()
    def observe(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add the detached counts of a batch (soft or hard, per ``sensor``) to the controller's accumulator."""
        counts = self.soft_counts(logits, target) if self.sensor == "soft" else self.hard_counts(logits, target)
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
        labels = check_label_target(logits, target)
        # argmax by comparison with the channel maximum: amax + a compare is ~2x cheaper on CPU than max(dim=1)'s
        # indices. A pixel where several classes tie for the maximum (possible only for degenerate logits, e.g. all
        # zero) would count once per tied class, so then the exact first-index argmax of torch is used instead.
        is_max = logits == logits.amax(dim=1, keepdim=True)
        predicted = is_max.sum(reduce_dims)
        flat_labels = labels.reshape(-1)
        if int(predicted.sum()) != flat_labels.numel():
            argmax = logits.max(dim=1).indices.reshape(-1)
            confusion = torch.bincount(flat_labels * num_classes + argmax, minlength=num_classes**2)
            confusion = confusion.view(num_classes, num_classes)  # rows: truth, columns: prediction
            tp = confusion.diagonal()
            return tuple(x.to(torch.float64) for x in (tp, confusion.sum(0) - tp, confusion.sum(1) - tp))
        correct = is_max.gather(1, labels).reshape(-1).to(torch.int64)
        by_truth = torch.bincount(flat_labels * 2 + correct, minlength=2 * num_classes).view(num_classes, 2)
        tp = by_truth[:, 1]
        return tuple(x.to(torch.float64) for x in (tp, predicted - tp, by_truth[:, 0]))

    @torch.no_grad()
    def observe_counts(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> None:
        """Add per-class counts ``[C]`` (TP, FP, FN) to the accumulator used by the next :meth:`update`."""
        if self.num_classes is None:
            self._materialise(int(tp.numel()))
        counts = torch.stack([tp, fp, fn]).detach().to(self.counts)
        self.counts += torch.nan_to_num(counts, nan=0.0, posinf=0.0, neginf=0.0)

    def sensor_error(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        """The signed error e ``[C]`` of the configured sensor (> 0: under-segmented; 0 at the setpoint)."""
        if self.sensor == "soft":
            return (fn - fp) / (tp + fn + fp + self.eps)
        truth, predicted = tp + fn, tp + fp
        if self.sensor == "volume":
            return (self.setpoint * truth - predicted) / (self.setpoint * truth + predicted + self.eps)
        return self.setpoint - tp / (truth + self.eps)

    @torch.no_grad()
    def update(self) -> dict[str, dict[int, float]]:
        """Run one controller update from the counts observed since the last update, reset them, return the state.

        Under data-parallel training (an initialised ``torch.distributed`` process group) the counts are first summed
        over the ranks (``all_reduce``), so every rank reads the same error and holds the same α/β: the controller of
        N processes with batch b sees what one process with batch N·b sees. Every rank must call it (a collective).
        """
        if self.num_classes is None:
            return {}
        observed = _sum_over_ranks(self.counts.clone())
        self.counts.zero_()
        has_truth = (observed[0] + observed[2]) > 0
        if self.cadence == "step":
            mu = self.ema
            blended = torch.where(self.ema_ready, mu * self.counts_ema + (1.0 - mu) * observed, observed)
            self.counts_ema.copy_(torch.where(has_truth, blended, self.counts_ema))
            self.ema_ready |= has_truth
            observed = self.counts_ema
        active = has_truth.clone()
        active[0] = False  # the background is never controlled
        self.controller.step(self.sensor_error(*observed).float(), active)
        return self.controller_state()

    def on_step_end(self) -> None:
        """Update the controller after an optimizer step (``"step"`` cadence only; not with ``"val_volume"``)."""
        if self.cadence == "step" and self.sensor != "val_volume":
            self.update()

    def on_epoch_end(self) -> None:
        """Update the controller after an epoch (``"epoch"`` cadence only; not with ``"val_volume"``)."""
        if self.cadence == "epoch" and self.sensor != "val_volume":
            self.update()

    @torch.no_grad()
    def on_validation(self, area_ratio: torch.Tensor) -> None:
        """The ``"val_volume"`` sensor's update: e_c = (s − r_c)/(s + r_c) from the validation area ratios ``[C]``
        (NaN = the class has no true pixel there: not updated). Other sensors ignore it."""
        if self.sensor != "val_volume" or self.num_classes is None:
            return
        ratio = torch.as_tensor(area_ratio, dtype=torch.float64, device=self.counts.device).reshape(-1)
        if ratio.numel() != self.num_classes:
            raise LossConfigError(
                f"pid_tversky: on_validation got {ratio.numel()} ratios for {self.num_classes} classes"
            )
        active = torch.isfinite(ratio) & (ratio >= 0)
        active[0] = False
        error = (self.setpoint - ratio) / (self.setpoint + ratio + self.eps)
        self.controller.step(error.float(), active)

    def controller_state(self) -> dict[str, dict[int, float]]:
        """Per foreground class: ``output`` (the actuator's value y_c), ``alpha``, ``beta``, ``error``,
        ``integral``, ``derivative``, ``updates``, ``clamp_fraction`` (share of updates that sat on a clamp) and the
        clamp limits ``output_min`` / ``output_max``."""
        if self.num_classes is None:
            return {}
        pid = self.controller
        quantities = {
            "output": pid.output,
            "alpha": self.alpha,
            "beta": self.beta,
            "error": pid.error,
            "integral": pid.integral,
            "derivative": pid.derivative,
            "updates": pid.n_updates,
            "clamp_fraction": pid.clamp_fraction(),
            "output_min": torch.full_like(pid.output, pid.output_min),
            "output_max": torch.full_like(pid.output, pid.output_max),
        }
        updated = pid.n_updates.tolist()
        return {  # clamp_fraction is left out for a class that was never updated (0 of 0 updates)
            name: {
                c: float(v)
                for c, v in enumerate(values.tolist())
                if c >= 1 and (name != "clamp_fraction" or updated[c] > 0)
            }
            for name, values in quantities.items()
        }

    def extra_repr(self) -> str:
        return (
            f"sensor={self.sensor!r}, setpoint={self.setpoint}, actuator={self.actuator!r}, cadence={self.cadence!r}, "
            f"beta={self.beta0}, alpha={self.alpha0}, lambda_ce={self.lambda_ce}, gamma={self.gamma}, "
            f"include_background={self.include_background}, sigmoid={self.sigmoid}"
        )


# PID-Tversky v1 exactly as it was (soft sensor, α/β actuator, background excluded, epoch cadence): the
# collapse-prone configuration, kept by name so that a benchmark can show the pitfall (docs/losses.md).
register_loss(
    "pid_tversky_nobg",
    defaults={
        "kp": 0.5,
        "ki": 0.1,
        "kd": 0.05,
        "sensor": "soft",
        "actuator": "tversky",
        "include_background": False,
        "cadence": "epoch",
    },
    search_space={**GAIN_SPACE, "beta": {"type": "float", "low": 0.3, "high": 0.7}},
    source="losses.pid_tversky.PIDTverskyLoss (v1 configuration: soft sensor, β actuator, no background)",
)(PIDTverskyLoss)


def _sum_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """``counts`` summed over the ranks of an initialised ``torch.distributed`` group (unchanged without one)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return counts


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise LossConfigError(f"pid_tversky: {name} must be one of {', '.join(allowed)}, got {value!r}")


def _setpoint(sensor: str, setpoint: float | None) -> float:
    if setpoint is None:
        return DEFAULT_SETPOINTS[sensor]
    value = float(setpoint)
    ratio_ok = math.isfinite(value) and value > 0
    ok = {"volume": ratio_ok, "val_volume": ratio_ok, "recall": 0.0 < value <= 1.0, "soft": value == 0.0}[sensor]
    if not ok:
        ratio = "a finite ratio > 0"
        allowed = {
            "volume": ratio,
            "val_volume": ratio,
            "recall": "a recall in (0, 1]",
            "soft": "none (leave it unset)",
        }
        raise LossConfigError(f"pid_tversky: setpoint for sensor {sensor!r} must be {allowed[sensor]}, got {setpoint}")
    return value


def _validate(
    beta: float,
    alpha0: float,
    beta_min: float,
    beta_max: float,
    gamma: float,
    ema: float,
    weight: Sequence[float] | None,
    lambda_ce: float,
    actuator: str,
    weight_min: float,
    weight_max: float,
    multiplier_max: float,
) -> None:
    checks = [
        (
            all(math.isfinite(v) for v in (beta_min, beta, beta_max)) and 0.0 <= beta_min <= beta <= beta_max <= 1.0,
            f"need 0 <= beta_min <= beta <= beta_max <= 1, got {beta_min}, {beta}, {beta_max}",
        ),
        (math.isfinite(alpha0) and alpha0 >= 0.0, f"alpha must be a finite number >= 0, got {alpha0}"),
        (math.isfinite(gamma) and gamma > 0.0, f"gamma must be > 0, got {gamma}"),
        (0.0 <= ema < 1.0, f"ema must be in [0, 1), got {ema}"),
        (math.isfinite(lambda_ce) and lambda_ce >= 0.0, f"lambda_ce must be a finite number >= 0, got {lambda_ce}"),
        (actuator != "pixel_weight" or lambda_ce > 0.0, "lambda_ce must be > 0 with actuator 'pixel_weight'"),
        (
            math.isfinite(weight_max) and 0.0 <= weight_min <= 1.0 <= weight_max,
            f"need 0 <= weight_min <= 1 <= weight_max (finite), got {weight_min}, {weight_max}",
        ),
        (
            math.isfinite(multiplier_max) and multiplier_max > 0.0,
            f"multiplier_max must be a finite number > 0, got {multiplier_max}",
        ),
        (
            weight is None or all(math.isfinite(w) and w >= 0 for w in weight) and sum(weight) > 0,
            f"weight must be finite and >= 0, not all 0: {weight}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise LossConfigError(f"pid_tversky: {message}")
