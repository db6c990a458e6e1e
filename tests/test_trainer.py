"""Training engine: objective, checkpoints, early stopping, exact resume, NaN handling, controller logging.

The engine takes objects, so these tests feed it a tiny SPCA model (tiny-bert text encoder) and a small synthetic
in-memory dataset of the loader's batch contract; the phantom end to end is covered by tests/test_runner.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import losses
from lss_vlm.constants import LEVELS, NUM_LABELS, VIEWS
from lss_vlm.engine.checkpoints import load_checkpoint, save_checkpoint
from lss_vlm.engine.seeding import seed_everything
from lss_vlm.engine.trainer import Trainer, TrainerSettings, TrainingDiverged
from lss_vlm.models import build_model

SIZE = 32


class SquaresDataset(Dataset):
    """Cases whose views hold bright squares labelled by intensity band; grades follow the square size."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            views = torch.randn(len(VIEWS), 1, SIZE, SIZE, generator=g) * 0.1
            masks = torch.zeros(len(VIEWS), SIZE, SIZE, dtype=torch.int64)
            for v in range(len(VIEWS)):
                label = 1 + (i + v) % (NUM_LABELS - 1)
                r, c = torch.randint(0, SIZE - 12, (2,), generator=g).tolist()
                masks[v, r : r + 10, c : c + 10] = label
                views[v, 0, r : r + 10, c : c + 10] += label / NUM_LABELS
            grades = torch.randint(0, 4, (len(LEVELS),), generator=g)
            grades[i % len(LEVELS)] = -1
            self.items.append(
                {
                    "case_id": f"case{i:03d}",
                    "views": views,
                    "masks": masks,
                    "mask_valid": torch.arange(len(VIEWS)) != (i % len(VIEWS)),
                    "view_valid": torch.ones(len(VIEWS), dtype=torch.bool),
                    "grades": grades,
                    "spacing": torch.full((len(VIEWS), 2), 0.8),
                    "reports": [f"Case {i}: mild stenosis at L4-L5.", f"L4-L5 mild canal narrowing, case {i}."],
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def collate(items: list[dict]) -> dict:
    first = items[0]
    return {
        k: torch.stack([it[k] for it in items]) if isinstance(first[k], torch.Tensor) else [it[k] for it in items]
        for k in first
    }


def settings(**overrides) -> TrainerSettings:
    base = dict(
        epochs=3,
        lr=3e-3,
        weight_decay=1e-4,
        schedule="cosine",
        grad_clip=1.0,
        lambda_seg=1.0,
        lambda_cls=0.5,
        lambda_txt=0.2,
        seed=0,
        deterministic=True,
        device="cpu",
        amp=False,
        monitor="dice_macro",
        monitor_mode="max",
        patience=0,
        quiet=True,
    )
    return TrainerSettings(**{**base, **overrides})


def make_trainer(tmp: Path, loss_name: str = "dice", on_epoch=None, **overrides) -> Trainer:
    seed_everything(0)
    model = build_model(
        "spca_vlm",
        text_encoder="tiny-bert",
        image_size=SIZE,
        embed_dim=16,
        num_heads=2,
        decoder_channels=(16, 8, 8, 8),
        grade_hidden=16,
        report_width=16,
        report_layers=1,
        report_heads=2,
        report_max_length=24,
    )
    train = DataLoader(
        SquaresDataset(6, seed=1),
        batch_size=3,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(SquaresDataset(3, seed=2), batch_size=3, collate_fn=collate)
    return Trainer(model, losses.build_loss(loss_name), train, val, settings(**overrides), tmp / "ckpt", on_epoch)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def without_time(history: list[dict]) -> pd.DataFrame:
    """History without the wall-clock column (NaN-aware comparison via pandas)."""
    return pd.DataFrame(history).drop(columns="time_s")


def assert_same_history(a: list[dict], b: list[dict]) -> None:
    pd.testing.assert_frame_equal(without_time(a), without_time(b), check_exact=True)


def test_fit_logs_every_term_and_keeps_best_and_last(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "pid_tversky")
    result = trainer.fit()
    assert len(result.history) == 3 and result.stop_reason == "completed"
    row = result.history[-1]
    for key in (
        "epoch",
        "lr",
        "train/loss",
        "train/seg_loss",
        "train/cls_loss",
        "train/txt_loss",
        "val/dice_macro",
        "val/accuracy",
        "alpha/ligamentum_flavum",
        "beta/thecal_sac",
        "error/disc",
        "integral/vertebral_body",
    ):
        assert key in row, key
        assert math.isfinite(row[key]), key
    # λ-weighted sum of the averaged terms is the averaged total
    expected = row["train/seg_loss"] + 0.5 * row["train/cls_loss"] + 0.2 * row["train/txt_loss"]
    assert row["train/loss"] == pytest.approx(expected, rel=1e-5)
    assert row["train/txt_loss"] > 0 and row["train/cls_loss"] > 0
    assert result.history[0]["train/loss"] > result.history[-1]["train/loss"]
    assert (tmp_path / "ckpt" / "last" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "best" / "state.pt").is_file()
    assert 1 <= result.best_epoch <= 3
    assert result.best_score == max(r["val/dice_macro"] for r in result.history)
    # the step-cadence controller logs one row per update (2 steps an epoch x 3 epochs), not only the epoch's last
    log = pd.DataFrame(trainer.state.controller_log)
    assert len(log) == 6 and list(log["step"]) == [1, 2] * 3
    assert log["updates_total"].is_monotonic_increasing
    assert {"output/ligamentum_flavum", "output_min/disc", "output_max/disc", "clamp_fraction/disc"} <= set(log)


class Interrupt(Exception):
    """Raised by :func:`stop_after_two` to kill a run after its second epoch."""


def stop_after_two(epoch: int, val: dict) -> None:
    if epoch == 2:
        raise Interrupt


def killed_after_two_epochs(folder: Path, loss_name: str = "dice", **overrides) -> Trainer:
    """A trainer on ``folder`` whose previous run died after epoch 2 of 3 (its ``checkpoints/last`` holds epoch 2)."""
    with pytest.raises(Interrupt):
        make_trainer(folder, loss_name, on_epoch=stop_after_two, **overrides).fit()
    return make_trainer(folder, loss_name, **overrides)


def test_resume_from_last_checkpoint_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full", "pid_tversky")
    full_result = full.fit()
    resumed = killed_after_two_epochs(tmp_path / "split", "pid_tversky")
    assert resumed.state.epoch == 0  # state comes from the checkpoint inside fit()
    result = resumed.fit(resume=True)

    assert_same_history(result.history, full_result.history)
    for key, value in weights(full).items():
        assert torch.equal(value, weights(resumed)[key]), key
    assert resumed.loss.controller_state() == full.loss.controller_state()


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path: Path) -> None:
    a = make_trainer(tmp_path / "a", epochs=1).fit().history
    b = make_trainer(tmp_path / "b", epochs=1).fit().history
    c = make_trainer(tmp_path / "c", epochs=1, seed=1).fit().history
    assert_same_history(a, b)
    with pytest.raises(AssertionError):
        assert_same_history(a, c)


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    # a negligible learning rate: the metric plateaus, so training stops `patience` epochs after the best one
    result = make_trainer(tmp_path, epochs=8, lr=1e-12, patience=2, schedule="constant").fit()
    assert result.stop_reason == "early_stopping"
    scores = [row["val/dice_macro"] for row in result.history]
    assert len(scores) == result.best_epoch + 2 < 8
    assert result.best_score == max(scores) == scores[result.best_epoch - 1]


def test_non_finite_loss_stops_with_a_clear_reason(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)

    class NanLoss(torch.nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return logits.sum() * float("nan")

        def on_step_end(self) -> None: ...
        def on_epoch_end(self) -> None: ...
        def controller_state(self) -> dict:
            return {}

    trainer.loss = NanLoss()
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1, step 1: total=nan, seg=nan"):
        trainer.fit()


def test_unknown_monitor_metric_lists_the_metrics(tmp_path: Path) -> None:
    from lss_vlm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'dice_mean' is not a validation metric; choose one of: .*dice_macro"):
        make_trainer(tmp_path, epochs=1, monitor="dice_mean").fit()


def test_checkpoint_round_trip_restores_optimizer_and_loss_state(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "pid_tversky", epochs=1)
    trainer.fit()
    save_checkpoint(tmp_path / "copy", trainer.model, trainer.optimizer, trainer.scheduler, trainer.loss, {"x": 1})
    other = make_trainer(tmp_path / "other", "pid_tversky", epochs=1)
    state = load_checkpoint(tmp_path / "copy", other.model, other.optimizer, other.scheduler, other.loss)
    assert state == {"x": 1}
    assert other.loss.controller_state() == trainer.loss.controller_state()
    assert other.scheduler.state_dict()["last_epoch"] == trainer.scheduler.state_dict()["last_epoch"]
    for key, value in weights(trainer).items():
        assert torch.equal(value, weights(other)[key]), key


def ema_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.ema.module.state_dict().items()}


def test_weight_average_follows_the_ema_formula_and_is_what_is_validated(tmp_path: Path) -> None:
    from lss_vlm.engine.validation import validate

    trainer = make_trainer(tmp_path, epochs=2, ema_decay=0.6)
    seen: list[torch.Tensor] = []
    update = trainer.ema.update_parameters
    name = next(n for n, p in trainer.model.named_parameters() if p.requires_grad)  # the text encoder is frozen

    def trained(model: torch.nn.Module) -> torch.Tensor:
        return dict(model.named_parameters())[name].detach().clone()

    def recording(model: torch.nn.Module) -> None:
        seen.append(trained(model))
        update(model)

    trainer.ema.update_parameters = recording
    result = trainer.fit()
    assert len(seen) == 4  # 2 steps an epoch x 2 epochs
    expected = seen[0]  # the first update copies the weights, then θ_ema ← d·θ_ema + (1 − d)·θ
    for theta in seen[1:]:
        expected = 0.6 * expected + 0.4 * theta
    assert not torch.equal(seen[0], seen[-1])
    assert torch.allclose(trained(trainer.ema.module), expected, atol=1e-6)
    assert not torch.equal(trained(trainer.ema.module), trained(trainer.model))
    counters = {k: v for k, v in trainer.model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters and all(int(v) == 4 for v in counters.values())  # copied, not averaged and truncated
    assert all(torch.equal(trainer.ema.module.state_dict()[k], v) for k, v in counters.items())
    val = validate(trainer.ema.module, trainer.val_loader, trainer.device, False)
    logged = {k.removeprefix("val/"): v for k, v in result.history[-1].items() if k.startswith("val/")}
    assert logged == pytest.approx(val, abs=1e-9, nan_ok=True)
    raw = validate(trainer.model, trainer.val_loader, trainer.device, False)
    assert raw != pytest.approx(val, abs=1e-9, nan_ok=True)  # the raw model scores otherwise
    averaged = ema_weights(trainer)
    trainer.load_for_evaluation(trainer.last_checkpoint)  # what the run saves as model.safetensors: the average
    for key, value in weights(trainer).items():
        assert torch.equal(value, averaged[key]), key


def test_resume_with_weight_average_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full", ema_decay=0.9)
    full_result = full.fit()
    resumed = killed_after_two_epochs(tmp_path / "split", ema_decay=0.9)
    assert_same_history(resumed.fit(resume=True).history, full_result.history)
    for key, value in ema_weights(full).items():
        assert torch.equal(value, ema_weights(resumed)[key]), key


def test_weight_average_refuses_a_checkpoint_without_one_and_a_bad_decay(tmp_path: Path) -> None:
    from lss_vlm.errors import ConfigError, DataError

    make_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(DataError, match="no weight average"):
        make_trainer(tmp_path, epochs=2, ema_decay=0.9).fit(resume=True)
    for decay in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError, match="train.ema_decay"):
            make_trainer(tmp_path / "bad", ema_decay=decay)
