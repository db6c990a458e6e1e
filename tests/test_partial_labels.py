"""Partial labels end to end (issue 14): the marginal loss around every registered loss, ignored pixels, metrics that
score a class only where it is annotated, and the ``labelled`` batch key from the manifest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from losses import available_losses, build_loss, loss_spec
from losses.marginal import MarginalLoss
from lss_vlm.constants import IGNORE_LABEL, LABEL_INDEX, NUM_LABELS
from lss_vlm.metrics.segmentation import SegmentationMetrics

DISC, BODY = LABEL_INDEX["disc"], LABEL_INDEX["vertebral_body"]
FIXTURES = Path(__file__).parent / "fixtures" / "vertebrae"


def _loss(name: str):
    return build_loss(name, **loss_spec(name)["defaults"])


def _batch(seed: int = 0, n: int = 2, size: int = 8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, NUM_LABELS, size, size, generator=g)
    target = torch.randint(0, NUM_LABELS, (n, 1, size, size), generator=g)
    return logits, target


@pytest.mark.parametrize("name", available_losses())
def test_fully_labelled_batch_is_the_wrapped_loss_exactly(name) -> None:
    logits, target = _batch()
    base = _loss(name)
    expected = base(logits, target)
    got = MarginalLoss(_loss(name))(logits, target, torch.ones(2, NUM_LABELS, dtype=torch.bool))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", available_losses())
def test_ignored_pixels_get_no_gradient_and_unlabelled_classes_merge(name) -> None:
    logits, target = _batch(1)
    target[:, :, :3] = IGNORE_LABEL
    target[target == BODY] = 0  # case annotates no vertebral body: its vertebrae are drawn as background
    labelled = torch.ones(2, NUM_LABELS, dtype=torch.bool)
    labelled[:, BODY] = False
    logits.requires_grad_(True)
    value = MarginalLoss(_loss(name))(logits, target, labelled)
    assert torch.isfinite(value)
    value.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert float(grad[:, :, :3].abs().max()) == 0.0  # ignored rows: exactly no gradient
    assert float(grad[:, :, 3:].abs().sum()) > 0


def test_merged_probability_is_the_sum_of_background_and_unlabelled() -> None:
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, logits, target):
            seen["p"], seen["t"] = logits.softmax(1), target
            return logits.sum() * 0

    logits, target = _batch(2)
    labelled = torch.ones(2, NUM_LABELS, dtype=torch.bool)
    labelled[0, BODY] = False
    MarginalLoss(Probe())(logits, target, labelled)
    p = logits.softmax(1)
    assert torch.allclose(seen["p"][0, 0], p[0, 0] + p[0, BODY])
    assert float(seen["p"][0, BODY].max()) == 0.0
    assert torch.allclose(seen["p"][1], p[1])  # the fully labelled case is untouched
    assert not bool((seen["t"][0] == BODY).any())


def test_correct_prediction_of_an_unlabelled_structure_is_not_penalised() -> None:
    """Issue 14: unlabelled vertebrae were taught as background (plain CE large); the marginal CE is ~0."""
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[..., 0, :] = DISC
    truth = target.clone()
    truth[..., 2:, :] = BODY  # the vertebrae are there, but this case does not label them
    logits = F.one_hot(truth[:, 0], NUM_LABELS).permute(0, 3, 1, 2).double() * 20.0
    labelled = torch.tensor([[True, False, True, False, False, False]])
    ce = build_loss("ce")
    plain = float(ce(logits, target))
    marginal = float(MarginalLoss(ce)(logits, target, labelled))
    assert plain > 5.0
    assert marginal < 1e-6


def test_metrics_score_a_class_only_where_it_is_annotated() -> None:
    """Issue 14: a model that segments disc and vertebra perfectly got dice/vertebral_body = 0 on disc-only cases, and
    dice_macro mixed in classes no case annotates. Right: vertebra not scored there, macro over the scored classes."""
    truth = torch.zeros(2, 8, 8, dtype=torch.long)
    truth[:, 1:3] = DISC
    truth[:, 4:7] = BODY
    pred = truth.clone()
    target = truth.clone()
    target[0][target[0] == BODY] = 0  # case a labels discs only
    labelled = torch.ones(2, NUM_LABELS, dtype=torch.bool)
    labelled[0, BODY] = False
    metrics = SegmentationMetrics(distances=True)
    metrics.update(pred, target, torch.ones(2, 2), ["a", "b"], ["sag_t2"] * 2, labelled)
    out = metrics.aggregate()
    assert out["dice/vertebral_body"] == 1.0 and out["n/vertebral_body"] == 1.0
    assert out["dice/disc"] == 1.0 and out["n/disc"] == 2.0
    assert out["dice_macro"] == 1.0
    assert math.isnan(out["dice/thecal_sac"]) and out["n/thecal_sac"] == 0.0
    assert out["hd95/vertebral_body"] == 0.0
    per_case = metrics.per_case()
    assert math.isnan(per_case.loc[0, "dice/vertebral_body"])


def test_ignored_pixels_are_not_scored() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 1:3] = DISC
    pred = target.clone()
    pred[0, 5:] = DISC  # wrong, but only where the target is not annotated
    target[0, 5:] = IGNORE_LABEL
    metrics = SegmentationMetrics(distances=True)
    metrics.update(pred, target, torch.ones(1, 2), ["a"], ["sag_t2"])
    out = metrics.aggregate()
    assert out["dice/disc"] == 1.0 and out["hd95/disc"] == 0.0


def test_labelled_batch_key_comes_from_the_manifest(tmp_path) -> None:
    from lss_vlm.data.adapters import prepare_dataset
    from lss_vlm.data.dataset import build_dataloader
    from lss_vlm.data.manifest import read_manifest

    result = prepare_dataset(
        "images",
        FIXTURES,
        tmp_path / "out",
        view="sag_t2",
        pixel_spacing=1.2,
        labels="disc=1,vertebra=2",
        labelled_classes="disc,vertebral_body",
        absent_means_unlabelled=True,
        val_frac=0.0,
        test_frac=0.0,
    )
    assert set(read_manifest(result.manifest)["split"]) == {"train"}
    batch = next(iter(build_dataloader(result.manifest, "train", spatial_size=64, batch_size=3)))
    rows = dict(zip(batch["case_id"], batch["labelled"].tolist()))
    assert rows["13"] == [True, False, True, False, False, False]
    assert rows["2"] == [True, True, True, False, False, False]
    assert batch["labelled"].shape == (3, NUM_LABELS)


def test_trainer_uses_the_marginal_loss_and_skips_batches_with_nothing_to_learn(tmp_path) -> None:
    """Segmentation-only data with the grade/report terms off: a batch without any mask used to crash ('element 0 of
    tensors does not require grad'); it is now skipped. Partially labelled batches train through MarginalLoss."""
    from test_trainer import make_trainer

    def weights(t):  # parameters only (BatchNorm running statistics move in any forward pass in train mode)
        return {k: v.detach().clone() for k, v in t.model.named_parameters()}

    trainer = make_trainer(tmp_path / "a", lambda_cls=0.0, lambda_txt=0.0, epochs=1)
    for item in trainer.train_loader.dataset.items:
        item["mask_valid"] = torch.zeros_like(item["mask_valid"])
    before = weights(trainer)
    result = trainer.fit()
    assert result.history[0]["train/loss"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in weights(trainer).items())

    trainer = make_trainer(tmp_path / "b", epochs=1)
    calls = []
    original = trainer.marginal_loss.forward
    trainer.marginal_loss.forward = lambda *a: calls.append(a[2].clone()) or original(*a)
    for item in trainer.train_loader.dataset.items:
        item["labelled"] = torch.tensor([True, True, True, False, False, False])
        item["masks"][:, :2] = IGNORE_LABEL
    result = trainer.fit()
    assert math.isfinite(result.history[0]["train/seg_loss"]) and calls
    assert not bool(calls[0][:, 3:].any())
