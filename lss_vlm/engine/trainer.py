"""The training loop of the multi-task objective, with checkpoints, early stopping and exact resume.

Objective per batch::

    L = λ_seg · L_seg(seg_logits of the views with a mask [N, C, H, W], masks [N, 1, H, W])
        (a batch with partial labels — a case whose ``labelled`` row is not all True, or ignored pixels — goes through
        :class:`losses.marginal.MarginalLoss` around the same loss object: Shi et al. 2021)
      + λ_cls · CE(grade_logits [B·L, 4], grades [B·L], ignore_index=-1)
      + λ_txt · report_loss (token cross-entropy of one reference report per case)
      + λ_con · InfoNCE(pooled level features, text embedding of that level's sentence in the same reference)
        (only when λ_con > 0: :mod:`lss_vlm.models.contrastive`; history column ``train/con_loss``)

A model with clinical fusion gets the batch's ``clinical`` values (:func:`~lss_vlm.engine.batches.model_inputs`).

The trainer receives the model, the loss object and the loaders; it never looks anything up by name.
Every epoch starts from generators re-seeded with ``derive_seed(seed, epoch)`` (global RNGs, the loader's shuffle
generator and the MONAI transforms), so resuming from the last checkpoint reproduces an uninterrupted run exactly.

Data-parallel (``torchrun``, :mod:`lss_vlm.engine.distributed`): when a process group is initialised, the training
loader is sharded (one :class:`~lss_vlm.engine.distributed.SeededDistributedSampler` per rank, same permutation), the
forward of the training step goes through :class:`~torch.nn.parallel.DistributedDataParallel`, every rank validates
the whole validation split (same metrics, same early-stopping decision) and only rank 0 writes checkpoints. After each
epoch the ranks check that their loss state (e.g. the PID controller) agrees, and stop with an error if not.

Weight averaging (``ema_decay``, off when ``None``): an exponential moving average of the weights and BatchNorm
buffers, ``θ_ema ← d · θ_ema + (1 − d) · θ`` after every optimizer step (Polyak & Juditsky 1992; timm's ``ModelEmaV3``),
kept by :class:`torch.optim.swa_utils.AveragedModel`. Averaged weights sit in flatter minima and transfer better across
domains (SWAD, Cha et al., NeurIPS 2021; Arpit et al., NeurIPS 2022). When it is on, validation, the best checkpoint's
choice and :meth:`Trainer.load_for_evaluation` use the average; the raw weights keep training and are what
``model.safetensors`` of a checkpoint holds, the average is saved in its ``state.pt`` and restored on resume.

``state.timing`` accumulates wall seconds per stage (``train_steps``, ``data``, ``validation``, ``checkpoints``),
saved in the checkpoint so a resumed run reports its whole training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.utils import set_rnd
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..constants import IGNORE_LABEL, LABELS, MISSING_GRADE, NUM_GRADES
from ..errors import ConfigError
from . import distributed
from .batches import (
    level_references,
    model_inputs,
    move_batch,
    pick_references,
    valid_view_labelled,
    valid_view_pairs,
)
from .checkpoints import WEIGHTS_FILE, checkpoint_exists, load_checkpoint, load_weights, save_checkpoint
from .instruction import instruction_term
from .seeding import derive_seed, seed_everything
from .validation import amp_dtype, autocast_context, validate

SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "constant")


@dataclass(kw_only=True)
class TrainerSettings:
    """Everything the loop needs; the defaults live in the caller's config schema, not here."""

    epochs: int
    lr: float
    weight_decay: float
    schedule: str
    grad_clip: float | None
    lambda_seg: float
    lambda_cls: float
    lambda_txt: float
    seed: int
    deterministic: bool
    device: str
    amp: bool
    monitor: str
    monitor_mode: str
    patience: int
    quiet: bool = False
    compile: bool = False  # torch.compile the training forward on CUDA (a no-op on CPU)
    lambda_cause: float = 0.0  # weight of the cause BCE; acts only when the model has a cause head
    lambda_con: float = 0.0  # image-text InfoNCE weight; 0 = the term is not computed
    ema_decay: float | None = None  # weight-average decay d in (0, 1); None = no averaging


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`: one history row per epoch, the best epoch and why training stopped."""

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    stop_reason: str  # "completed" (all epochs) or "early_stopping"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message says where and which term."""


@dataclass
class _State:
    epoch: int = 0  # number of finished epochs
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.nan
    bad_epochs: int = 0
    stop_reason: str | None = None
    controller_log: list[dict[str, float]] = field(default_factory=list)  # one row per controller update
    timing: dict[str, float] = field(default_factory=dict)  # wall seconds per stage, summed over epochs


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def _weight_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An EMA copy of ``model`` (parameters and buffers) with decay ``decay``; ``None`` when ``decay`` is ``None``.

    Raises :class:`ConfigError` when ``decay`` is not in (0, 1)."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"train.ema_decay: {decay} is not in (0, 1); e.g. 0.999, or null for no weight averaging")
    ema = AveragedModel(model, multi_avg_fn=_ema_of_floats(decay), use_buffers=True)
    ema.eval()
    return ema


def _ema_of_floats(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """torch's EMA update (:func:`get_ema_multi_avg_fn`) for floating-point tensors; other buffers (BatchNorm's
    ``num_batches_tracked``, boolean masks) are copied, not averaged and truncated."""
    ema_update = get_ema_multi_avg_fn(decay)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: Any) -> None:
        if averaged and averaged[0].is_floating_point():  # AveragedModel groups the tensors by device and dtype
            ema_update(averaged, current, n_averaged)
        else:
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    return update


def _constant(_: int) -> float:
    return 1.0


class Trainer:
    """Trains ``model`` with ``loss`` (+ grade and report terms), keeping ``checkpoint_dir/{last,best}``."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        train_loader: DataLoader,
        val_loader: DataLoader,
        settings: TrainerSettings,
        checkpoint_dir: str | Path,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        if settings.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule: unknown schedule {settings.schedule!r}; choose one of {SCHEDULES}")
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.model = model.to(self.device)
        self.loss = loss.to(self.device)
        from losses.marginal import MarginalLoss

        self.marginal_loss = MarginalLoss(self.loss, ignore_index=IGNORE_LABEL)
        self.train_loader = distributed.shard_loader(train_loader, settings.seed)
        self.val_loader = val_loader
        self.forward_model = self._data_parallel(self.model)
        if settings.compile and self.device.type == "cuda":  # on CPU the compile time outweighs the gain here
            self.forward_model = torch.compile(self.forward_model)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.on_epoch = on_epoch
        self.use_amp = settings.amp and self.device.type == "cuda"
        params = [p for p in model.parameters() if p.requires_grad]
        if not settings.quiet:
            from ..models.lora import describe_parameters

            tqdm.write(describe_parameters(model))  # e.g. "parameters: 6,493,572 total, 5,495,556 trainable (84.6 %)"
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.steps_per_epoch = max(1, len(self.train_loader))
        self.scheduler = self._build_scheduler()
        # loss scaling only for float16; bfloat16 has float32's exponent range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and amp_dtype(self.device) == torch.float16)
        self.ema = _weight_average(self.model, settings.ema_decay)
        self.state = _State()

    # ------------------------------------------------------------------------------------------------------ public
    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best"

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and evaluated: the weight average when ``ema_decay`` is set, else
        :attr:`model`."""
        return self.ema.module if self.ema is not None else self.model

    def load_for_evaluation(self, folder: Path) -> None:
        """Load checkpoint ``folder`` and put the weights it evaluates (the average when ``ema_decay`` is set) into
        :attr:`model`, ready for :func:`save_weights` and the final evaluation."""
        if self.ema is None:  # the weights file alone; state.pt (optimizer, RNG) is not needed to evaluate
            load_weights(self.model, folder / WEIGHTS_FILE)
            return
        load_checkpoint(folder, self.model, ema=self.ema, restore_rng=False)
        self.model.load_state_dict(self.ema.module.state_dict())

    def fit(self, resume: bool = True) -> FitResult:
        """Train for ``settings.epochs`` (or until early stopping); resume from ``last`` when it exists.

        Raises :class:`TrainingDiverged` on a NaN/Inf loss; exceptions raised by ``on_epoch`` propagate.
        """
        if resume and checkpoint_exists(self.last_checkpoint):
            self._restore(self.last_checkpoint)
        s = self.settings
        with tqdm(
            total=s.epochs,
            initial=self.state.epoch,
            desc="epochs",
            unit="ep",
            disable=s.quiet or not distributed.is_main_process(),
            dynamic_ncols=True,
        ) as bar:
            while self.state.stop_reason is None and self.state.epoch < s.epochs:
                row = self._run_epoch(self.state.epoch + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{row['train/loss']:.4f}", **{s.monitor: f"{row.get('val/' + s.monitor, 0):.4f}"})
        if self.state.stop_reason is None:
            self.state.stop_reason = "completed"
        return FitResult(
            history=list(self.state.history),
            best_epoch=self.state.best_epoch,
            best_score=self.state.best_score,
            stop_reason=self.state.stop_reason,
        )

    # ------------------------------------------------------------------------------------------------------ epochs
    def _data_parallel(self, model: nn.Module) -> nn.Module:
        """``model`` itself in one process; a :class:`DistributedDataParallel` wrapper of it under ``torchrun``
        (BatchNorm synchronised across ranks on CUDA; on CPU each rank normalises with its own batch statistics)."""
        if distributed.world_size() == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            model = self.model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()], find_unused_parameters=True)
        return DistributedDataParallel(model, find_unused_parameters=True)

    def _timed(self, stage: str, started: float) -> None:
        """Add the seconds since ``started`` (``time.perf_counter()``) to ``state.timing[stage]``."""
        self.state.timing[stage] = self.state.timing.get(stage, 0.0) + time.perf_counter() - started

    def _check_ranks_in_sync(self, epoch: int) -> None:
        """Under ``torchrun``: stop when the ranks' loss states (controller α/β, counts) differ after an epoch."""
        if distributed.world_size() == 1:
            return
        buffers = [t for t in self.loss.state_dict().values() if isinstance(t, torch.Tensor)]
        if not distributed.ranks_agree(distributed.tensor_checksum(buffers)):
            raise RuntimeError(f"epoch {epoch}: the loss state (e.g. the PID controller) differs between ranks")

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        start = time.perf_counter()
        self._reseed(epoch)
        row: dict[str, float] = {"epoch": float(epoch), "lr": float(self.optimizer.param_groups[0]["lr"])}
        if hasattr(self.model, "set_training_progress"):  # scheduled sampling of the report decoder's grade input
            self.model.set_training_progress((epoch - 1) / max(self.settings.epochs, 1))
        row.update(self._train_one_epoch(epoch))
        self._call_hook("on_epoch_end")
        started = time.perf_counter()
        val = validate(self.eval_model, self.val_loader, self.device, self.use_amp)
        self._timed("validation", started)
        self._call_hook("on_validation", self._per_class(val, "area_ratio"))  # controllers reading held-out masks
        self._check_ranks_in_sync(epoch)
        self._log_controller(epoch, step=0)
        row.update(self._controller_row())
        row.update({f"val/{k}": v for k, v in val.items()})
        row["time_s"] = time.perf_counter() - start
        self.state.epoch = epoch
        self.state.history.append(row)
        self._track_best(epoch, val)
        self._save(self.last_checkpoint)
        if self.on_epoch is not None:
            self.on_epoch(epoch, dict(val))
        return row

    def _train_one_epoch(self, epoch: int) -> dict[str, float]:
        s = self.settings
        self.model.train()
        self.loss.train()
        totals = {f"train/{k}": 0.0 for k in ("loss", "seg_loss", "cls_loss", "txt_loss", "cause_loss")}
        if s.lambda_con > 0:
            totals["train/con_loss"] = 0.0
        n = 0
        quiet = s.quiet or not distributed.is_main_process()
        steps = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False, disable=quiet, dynamic_ncols=True)
        fetched = time.perf_counter()
        for step, batch in enumerate(steps, start=1):
            self._timed("data", fetched)
            started = time.perf_counter()
            terms = self._train_step(move_batch(batch, self.device), epoch, step)
            self._timed("train_steps", started)
            for key, value in terms.items():
                totals[key] += value
            n += 1
            steps.set_postfix(loss=f"{terms['train/loss']:.4f}")
            fetched = time.perf_counter()
        return {k: v / max(n, 1) for k, v in totals.items()}

    def _train_step(self, batch: dict[str, Any], epoch: int, step: int) -> dict[str, float]:
        s = self.settings
        with autocast_context(self.device, self.use_amp):
            seg, cls, txt, cause, con = self._objective_terms(batch, epoch)
            total = s.lambda_seg * seg + s.lambda_cls * cls + s.lambda_txt * txt + s.lambda_cause * cause
            if s.lambda_con > 0:
                total = total + s.lambda_con * con
        values = {"loss": total, "seg_loss": seg, "cls_loss": cls, "txt_loss": txt, "cause_loss": cause}
        if s.lambda_con > 0:
            values["con_loss"] = con
        if not bool(torch.isfinite(total)):
            terms = ", ".join(f"{k.removesuffix('_loss')}={float(v.detach())}" for k, v in list(values.items())[1:])
            raise TrainingDiverged(
                f"non-finite loss at epoch {epoch}, step {step}: total={float(total.detach())}, {terms}"
            )
        if not total.requires_grad:  # nothing to learn from this batch (no mask, no grade, no report): no step
            return {f"train/{name}": float(value.detach()) for name, value in values.items()}
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if s.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], s.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self._call_hook("on_step_end")
        self._log_controller(epoch, step)
        return {f"train/{name}": float(value.detach()) for name, value in values.items()}

    def _objective_terms(self, batch: dict[str, Any], epoch: int) -> tuple[torch.Tensor, ...]:
        """The five (unweighted) terms: segmentation, grade CE, report CE, cause BCE, image-text InfoNCE; a term whose
        weight is 0 or that has no target is 0."""
        s = self.settings
        zero = torch.zeros((), device=self.device)
        report_ids = report_mask = None
        if s.lambda_txt > 0 and any(batch["reports"]):
            texts, has_ref = pick_references(batch["reports"], epoch)
            report_ids, report_mask = (t.to(self.device) for t in self.model.tokenize_reports(texts))
            report_mask = report_mask.bool() & has_ref.to(self.device)[:, None]
        extra = {}
        if report_ids is not None and hasattr(self.model, "set_training_progress"):
            extra["report_grades"] = batch["grades"]  # true grades for the decoder's scheduled sampling
        extra.update(model_inputs(self.model, batch))
        if s.lambda_con > 0 and any(batch["reports"]):
            extra["contrastive_sentences"] = level_references(batch["reports"], epoch)
        out = self.forward_model(
            batch["views"], report_ids=report_ids, report_mask=report_mask, view_valid=batch.get("view_valid"), **extra
        )
        seg = zero
        if s.lambda_seg > 0 and bool(batch["mask_valid"].any()):
            logits, target = valid_view_pairs(out["seg_logits"], batch["masks"], batch["mask_valid"])
            labelled = valid_view_labelled(batch.get("labelled"), batch["mask_valid"], logits.shape[1])
            if bool((target == IGNORE_LABEL).any()) or not bool(labelled.all()):
                seg = self.marginal_loss(logits.float(), target, labelled)
            else:
                seg = self.loss(logits.float(), target)
            seg = seg + instruction_term(self.model, out, batch)  # 0 unless model.params.instruct_film
        cls = zero
        grades = batch["grades"].reshape(-1)
        if s.lambda_cls > 0 and bool((grades != MISSING_GRADE).any()):
            logits = out["grade_logits"].float().reshape(-1, NUM_GRADES)
            cls = F.cross_entropy(logits, grades, ignore_index=MISSING_GRADE)
        txt = out["report_loss"].float() if report_ids is not None and "report_loss" in out else zero
        cause = zero
        if s.lambda_cause > 0 and "cause_logits" in out and "causes" in batch:
            known = torch.isfinite(batch["causes"])  # stenotic levels with known causes; NaN elsewhere
            if bool(known.any()):
                cause = F.binary_cross_entropy_with_logits(out["cause_logits"].float()[known], batch["causes"][known])
        con = out["contrastive_loss"].float() if "contrastive_loss" in out else zero
        return seg, cls, txt, cause, con

    # --------------------------------------------------------------------------------------------------- bookkeeping
    def _call_hook(self, name: str, *args: Any) -> None:
        """``loss.<name>(*args)`` when the loss has that hook: any ``nn.Module`` called as ``loss(logits, target)``
        is a loss; the hooks of :class:`losses.base.SegLoss` (``on_step_end``, ``on_epoch_end``, ``on_validation``,
        ``controller_state``) are optional."""
        hook = getattr(self.loss, name, None)
        if callable(hook):
            hook(*args)

    def _controller_row(self) -> dict[str, float]:
        """``loss.controller_state()`` flattened to ``<quantity>/<class name>`` columns."""
        state = self.loss.controller_state() if hasattr(self.loss, "controller_state") else {}
        return {
            f"{quantity}/{LABELS[int(c)] if int(c) < len(LABELS) else c}": float(v)
            for quantity, per_class in state.items()
            for c, v in per_class.items()
        }

    @staticmethod
    def _per_class(metrics: dict[str, float], name: str) -> torch.Tensor:
        """``metrics["<name>/<class>"]`` as a ``[NUM_LABELS]`` tensor in label order (NaN where absent)."""
        return torch.tensor([metrics.get(f"{name}/{label}", math.nan) for label in LABELS], dtype=torch.float64)

    def _log_controller(self, epoch: int, step: int) -> None:
        """Append the controller state to ``state.controller_log`` when an update happened since the last row
        (step 0 = the end-of-epoch hook), so that every controller output is kept, whatever the cadence."""
        row = self._controller_row()
        updates = sum(v for k, v in row.items() if k.startswith("updates/"))
        log = self.state.controller_log
        if row and updates > (log[-1]["updates_total"] if log else 0):
            log.append({"epoch": float(epoch), "step": float(step), "updates_total": updates, **row})

    def _track_best(self, epoch: int, val: dict[str, float]) -> None:
        s = self.settings
        if s.monitor not in val:
            raise ConfigError(
                f"train.early_stopping.metric: {s.monitor!r} is not a validation metric; "
                f"choose one of: {', '.join(sorted(val))}"
            )
        score = float(val[s.monitor])
        best = self.state.best_score
        improved = math.isfinite(score) and (
            not math.isfinite(best) or (score > best if s.monitor_mode == "max" else score < best)
        )
        if improved or self.state.best_epoch == 0:
            self.state.best_epoch, self.state.best_score, self.state.bad_epochs = epoch, score, 0
            self._save(self.best_checkpoint)
        else:
            self.state.bad_epochs += 1
            if s.patience and self.state.bad_epochs >= s.patience:
                self.state.stop_reason = "early_stopping"

    def _reseed(self, epoch: int) -> None:
        """Re-seed every generator the epoch uses from ``(seed, epoch)``: resume-exact by construction."""
        seed = derive_seed(self.settings.seed, epoch)
        sampler_generator = getattr(getattr(self.train_loader, "sampler", None), "generator", None)
        if isinstance(sampler_generator, torch.Generator):
            sampler_generator.manual_seed(seed)  # the same permutation on every rank
        rank = distributed.rank()
        own = seed if rank == 0 else derive_seed(self.settings.seed, epoch, rank)  # dropout, augmentation per rank
        seed_everything(own, self.settings.deterministic)
        set_rnd(self.train_loader.dataset, own)

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        total = self.settings.epochs * self.steps_per_epoch
        if self.settings.schedule == "cosine":
            eta_min = self.settings.lr / 100
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total, eta_min=eta_min)
        if self.settings.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=self.settings.lr, total_steps=total)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, _constant)

    def _save(self, folder: Path) -> None:
        """Write a checkpoint (rank 0 only under ``torchrun``: every rank holds the same weights and state)."""
        if not distributed.is_main_process():
            return
        started = time.perf_counter()
        state = self.state.__dict__.copy()
        save_checkpoint(folder, self.model, self.optimizer, self.scheduler, self.loss, state, self.scaler, self.ema)
        self._timed("checkpoints", started)

    def _restore(self, folder: Path) -> None:
        saved = load_checkpoint(
            folder, self.model, self.optimizer, self.scheduler, self.loss, self.scaler, ema=self.ema
        )
        self.state = _State(**{"timing": {}, **saved})  # checkpoints written before stage timers have none
