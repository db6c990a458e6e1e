"""Loss zoo: registry, library parity of PID-Tversky, the common call and gradients of every registered loss."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from monai.losses import DiceLoss, TverskyLoss

import losses
from losses import LossConfigError, UnknownLossError, available_losses, build_loss, loss_spec

EXPECTED = {
    "ce",
    "dice",
    "dice_ce",
    "dice_focal",
    "dice_nobg",
    "focal",
    "focal_tversky",
    "generalized_dice",
    "jaccard",
    "lovasz",
    "pid_tversky",
    "pid_tversky_nobg",
    "tversky",
    "tversky_nobg",
}
NOBG = {name for name in EXPECTED if name.endswith("_nobg")}


def _batch(shape: tuple[int, ...], num_classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], num_classes, *shape[1:], generator=generator, dtype=torch.float64)
    target = torch.randint(0, num_classes, (shape[0], 1, *shape[1:]), generator=generator)
    return logits, target


def test_registry_lists_every_baseline_and_pid() -> None:
    assert set(available_losses()) == EXPECTED
    assert available_losses() == sorted(available_losses())


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(UnknownLossError, match="choose one of: ce, dice") as info:
        build_loss("dcie")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("unknown loss 'dcie'")


def test_bad_kwarg_lists_valid_arguments() -> None:
    with pytest.raises(LossConfigError, match=r"unknown argument\(s\) kP; valid: .*kp"):
        build_loss("pid_tversky", kP=1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cadence": "batch"}, "cadence must be one of epoch, step"),
        ({"beta_min": 0.6}, "beta_min <= beta"),
        ({"leak": 1.5}, "leak must be in"),
        ({"gamma": 0.0}, "gamma must be > 0"),
        ({"sensor": "dice"}, "sensor must be one of volume, val_volume, recall, soft, got 'dice'"),
        ({"actuator": "beta"}, "actuator must be one of pixel_weight, tversky, lagrange, got 'beta'"),
        ({"kp": -0.1}, "kp must be a finite number >= 0, got -0.1"),
        ({"ki": float("nan")}, "ki must be a finite number >= 0, got nan"),
        ({"kd": float("inf")}, "kd must be a finite number >= 0, got inf"),
        ({"integral_max": 0.0}, "integral_max must be > 0"),
        ({"sensor": "recall", "setpoint": 1.5}, r"setpoint for sensor 'recall' must be a recall in \(0, 1\], got 1.5"),
        ({"sensor": "volume", "setpoint": -1.0}, "setpoint for sensor 'volume' must be a finite ratio > 0, got -1.0"),
        ({"setpoint": 0.0}, r"setpoint for sensor 'recall' must be a recall in \(0, 1\], got 0.0"),
        ({"sensor": "soft", "setpoint": 0.5}, "setpoint for sensor 'soft' must be none"),
        ({"weight_min": 2.0}, "need 0 <= weight_min <= 1 <= weight_max"),
        ({"multiplier_max": float("inf")}, "multiplier_max must be a finite number > 0"),
        ({"lambda_ce": 0.0, "actuator": "pixel_weight"}, "lambda_ce must be > 0 with actuator 'pixel_weight'"),
        ({"beta": float("nan")}, "beta_min <= beta <= beta_max"),
    ],
)
def test_bad_pid_values_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(LossConfigError, match=match):
        build_loss("pid_tversky", **kwargs)


def test_bad_target_is_one_clear_error() -> None:
    logits, target = _batch((2, 8, 8))
    with pytest.raises(LossConfigError, match=r"target labels must be in \[0, 3\], got values in \[1, 7\]"):
        build_loss("dice")(logits, target * 2 + 1)
    with pytest.raises(LossConfigError, match="expected \\(2, 1, 8, 8\\), got \\(2, 1, 4, 4\\)"):
        build_loss("pid_tversky")(logits, target[..., :4, :4])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_defaults_build_and_search_space_is_optuna_shaped(name: str) -> None:
    spec = loss_spec(name)
    assert spec["name"] == name and spec["source"]
    assert spec["search_space"], f"{name} declares no tunable hyperparameter"
    for param, space in spec["search_space"].items():
        assert param in spec["defaults"]
        if space["type"] == "categorical":
            assert spec["defaults"][param] in space["choices"]
        else:
            assert space["type"] in ("float", "int") and space["low"] <= spec["defaults"][param] <= space["high"]
    spec["defaults"]["mutated"] = 1  # a copy: the registry is not changed
    assert "mutated" not in loss_spec(name)["defaults"]
    assert isinstance(build_loss(name), losses.SegLoss)


def test_register_loss_rejects_bad_search_space() -> None:
    with pytest.raises(LossConfigError, match="not an argument of the loss"):
        losses.register_loss("bogus_loss", search_space={"nope": {"type": "float", "low": 0, "high": 1}})(
            lambda alpha=0.5: None
        )
    with pytest.raises(LossConfigError, match="type must be one of"):
        losses.register_loss("bogus_loss", search_space={"alpha": {"type": "uniform", "low": 0, "high": 1}})(
            lambda alpha=0.5: None
        )
    assert "bogus_loss" not in available_losses()


@pytest.mark.parametrize("shape", [(2, 9, 7), (2, 5, 6, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.7, 0.3), (0.2, 0.4)])
@pytest.mark.parametrize("actuator", ["tversky", "lagrange"])
def test_pid_with_zero_gains_equals_monai_tversky(shape, include_background, alpha, beta, actuator) -> None:
    logits, target = _batch(shape)
    pid = build_loss(
        "pid_tversky",
        kp=0,
        ki=0,
        kd=0,
        alpha=alpha,
        beta=beta,
        include_background=include_background,
        actuator=actuator,
    )
    monai = TverskyLoss(
        include_background=include_background, to_onehot_y=True, softmax=True, alpha=alpha, beta=beta, batch=True
    )
    for step in range(3):  # the controller runs but, with zero gains, never moves α, β
        logits_step = logits + step
        assert torch.allclose(pid(logits_step, target), monai(logits_step, target), rtol=0, atol=1e-6)
        pid.on_step_end()
        pid.on_epoch_end()


@pytest.mark.parametrize("shape", [(2, 9, 7), (2, 5, 6, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("include_background", [True, False])
def test_pid_with_zero_gains_and_half_weights_equals_monai_dice(shape, include_background) -> None:
    logits, target = _batch(shape, seed=1)
    pid = build_loss(
        "pid_tversky", kp=0, ki=0, kd=0, beta=0.5, include_background=include_background, actuator="tversky"
    )
    # T = (TP+s)/(TP + FP/2 + FN/2 + 2s) = (2TP+2s)/(ΣP + ΣG + 4s): MONAI Dice with smooth_nr=2s, smooth_dr=4s
    dice = DiceLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=2e-5,
        smooth_dr=4e-5,
    )
    assert torch.allclose(pid(logits, target), dice(logits, target), rtol=0, atol=1e-6)


def test_pid_sigmoid_equals_monai_sigmoid_tversky_for_labels_and_multilabel_maps() -> None:
    logits, target = _batch((2, 8, 8))
    pid = build_loss(
        "pid_tversky", kp=0, ki=0, kd=0, alpha=0.4, beta=0.6, sigmoid=True, include_background=True, actuator="tversky"
    )
    monai = TverskyLoss(to_onehot_y=True, sigmoid=True, alpha=0.4, beta=0.6, batch=True)
    assert torch.allclose(pid(logits, target), monai(logits, target), rtol=0, atol=1e-6)
    multilabel = (torch.rand(logits.shape, generator=torch.Generator().manual_seed(3)) > 0.7).double()
    monai_ml = TverskyLoss(sigmoid=True, alpha=0.4, beta=0.6, batch=True)
    assert torch.allclose(pid(logits, multilabel), monai_ml(logits, multilabel), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 9, 7), (2, 5, 6, 4)], ids=["2d", "3d"])
def test_pid_pixel_weight_with_zero_gains_is_tversky_plus_cross_entropy(shape) -> None:
    """The pixel-weight actuator's static baseline: MONAI Tversky(α₀, β₀, background included) + λ_ce · torch CE."""
    logits, target = _batch(shape, seed=4)
    pid = build_loss("pid_tversky", kp=0, ki=0, kd=0, lambda_ce=0.7, alpha=0.4, beta=0.6, actuator="pixel_weight")
    tversky = TverskyLoss(to_onehot_y=True, softmax=True, alpha=0.4, beta=0.6, batch=True)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    for _ in range(3):
        assert torch.allclose(pid(logits, target), tversky(logits, target) + 0.7 * ce, rtol=0, atol=1e-6)
        pid.on_step_end()


def test_pid_static_in_float32_matches_monai() -> None:
    logits, target = _batch((4, 32, 32), num_classes=6)
    logits = logits.float()
    pid = build_loss("pid_tversky", kp=0, ki=0, kd=0, actuator="tversky")
    monai = TverskyLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)
    assert torch.allclose(pid(logits, target), monai(logits, target), rtol=0, atol=1e-6)


def test_tversky_baseline_alpha_weighs_false_positives() -> None:
    """Over-segmentation (all FP, no FN) is punished by α only, under-segmentation by β only, in every Tversky."""
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[..., 2:4, 2:4] = 1
    over = torch.full((1, 2, 8, 8), -20.0)
    over[:, 1, 1:5, 1:5] = 20.0  # predicts a 4x4 square around the true 2x2: FP only
    over[:, 0] = -over[:, 1]
    for name, extra in (
        ("tversky", {"include_background": False}),  # class 1's terms only: the background's FN would mix in
        ("focal_tversky", {"classes": [1], "gamma": 1.0}),
        ("pid_tversky", {"beta_min": 0.1, "actuator": "tversky", "include_background": False}),
    ):
        low_alpha = build_loss(name, alpha=0.1, beta=0.9, **extra)(over, target)
        high_alpha = build_loss(name, alpha=0.9, beta=0.1, **extra)(over, target)
        assert high_alpha > 2 * low_alpha, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("shape", [(2, 12, 12), (1, 6, 6, 5)], ids=["2d", "3d"])
def test_every_loss_has_finite_nonzero_gradients_with_an_empty_class(name: str, shape) -> None:
    num_classes = 4
    logits, target = _batch(shape, num_classes=num_classes, seed=2)
    target[target == 2] = 1  # class 2 is absent from the whole batch
    logits = logits.float().requires_grad_(True)
    loss_fn = build_loss(name)
    value = loss_fn(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    loss_fn.on_step_end()
    loss_fn.on_epoch_end()
    state = loss_fn.controller_state()
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in state.values())


def _collapsed_onto_smallest_class() -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel predicts class 3 (confidently); the truth is 90 % background with a few pixels of classes 1-3."""
    target = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    target[:, :, 8:11, 8:11] = 2
    target[:, :, 13, 13] = 3
    logits = torch.zeros(2, 4, 16, 16)
    logits[:, 3] = 6.0
    return logits.requires_grad_(True), target


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_default_loss_pulls_a_collapsed_background_back(name: str) -> None:
    """The collapse mechanism (issue 12): a softmax model whose background drifted into the smallest class.

    A loss in its default configuration must push the background logit up on background pixels (descent raises it:
    the gradient is clearly negative). The explicit ``*_nobg`` variants keep the pitfall: their overlap term gives
    the background channel almost nothing, since a class with TP ≈ 0 has no gradient on its FP. (Generalized
    Dice keeps background excluded by default: its pooled ratio, weighted by 1/|G_c|², still pulls, 0.073 here.)
    """
    logits, target = _collapsed_onto_smallest_class()
    build_loss(name)(logits, target).backward()
    background = (target[:, 0] == 0).unsqueeze(1)
    pull = -logits.grad[:, :1][background].sum() / logits.grad.abs().sum()
    if name in NOBG:
        assert pull < 0.02, pull
    else:
        assert pull > 0.05, pull


@pytest.mark.parametrize("name", ["dice", "tversky"])
def test_nobg_variants_are_the_default_loss_without_background(name: str) -> None:
    logits, target = _batch((2, 9, 7))
    assert loss_spec(name)["defaults"]["include_background"] is True
    excluded = build_loss(f"{name}_nobg")(logits, target)
    assert torch.equal(excluded, build_loss(name, include_background=False)(logits, target))
    assert not torch.equal(excluded, build_loss(name)(logits, target))


def test_losses_package_never_imports_lss_vlm_or_benchmarks() -> None:
    code = (
        "import sys, losses; bad = [m for m in sys.modules if m.split('.')[0] in ('lss_vlm', 'benchmarks')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------- checking without building
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dice", {"smooth": 1.0}),  # misspelt smooth_nr
        ("tversky_nobg", {"gama": 1.0}),
        ("focal", {"alpha": 0.25}),  # a MONAI FocalLoss argument our factory does not expose
        ("dice_ce", {"lambda_dice": -1.0}),
        ("dice_ce", {"lambda_ce": -0.5}),
        ("generalized_dice", {"w_type": "sqaure"}),
        ("dice_focal", {"include_background": True, "lambda": 1.0}),
        ("jaccard", {"classes": [1.5]}),  # smp accepts any value and indexes wrongly at the first step
        ("focal_tversky", {"classes": "1,2"}),
        ("focal_tversky", {"classes": [2, 2]}),
        ("lovasz", {"per_imag": True}),
    ],
)
def test_check_without_building_refuses_what_building_refuses(name: str, params: dict) -> None:
    import re

    with pytest.raises((LossConfigError, ValueError, TypeError)) as built:
        build_loss(name, **params)
    with pytest.raises(type(built.value), match=re.escape(str(built.value))):
        losses.check_loss(name, params, build=False)


@pytest.mark.parametrize("name", available_losses())
def test_a_loss_declares_the_slow_library_it_builds_and_its_defaults_pass_unbuilt(name: str) -> None:
    import inspect

    from losses.registry import _entry

    entry = _entry(name)
    source = inspect.getsource(sys.modules[entry.factory.__module__])
    assert ("monai" in entry.requires) == ("from monai" in source or "import monai" in source)
    smp = "segmentation_models_pytorch"
    assert (smp in entry.requires) == (f"from {smp}" in source or f"import {smp}" in source)
    losses.check_loss(name, {}, build=False)
    losses.check_loss(name, {}, build=True)


def test_generalized_dice_defaults_to_simple_weights_that_pull_a_lost_large_class_back() -> None:
    """Square GDL weights 1/|G_c|² lost the disc (the largest foreground class) into the vertebral body in 2 of 3
    `standard` seeds and 3 of 3 `minority` seeds; 1/|G_c| ("simple", the default) kept every class (docs/losses.md).
    Mechanism: with the disc painted as body, the share of the gradient that raises the disc logit on disc pixels is
    measured 0.21 % under square weights and 0.84 % under simple ones (4×)."""
    assert losses.loss_spec("generalized_dice")["defaults"]["w_type"] == "simple"
    h = w = 64
    target = torch.zeros(1, h, w, dtype=torch.long)
    target[:, 5:30, 10:50], target[:, 30:42, 10:50], target[:, 50:52, 20:40] = 1, 2, 5  # body, disc, flavum
    logits = torch.zeros(1, 6, h, w)
    logits[:, 0] = 2.0
    logits[:, 1][(target == 1) | (target == 2)] = 4.0  # the disc painted as vertebral body
    logits[:, 5][target == 5] = 1.0
    share = {}
    for w_type in ("square", "simple"):
        x = logits.clone().requires_grad_(True)
        losses.build_loss("generalized_dice", w_type=w_type)(x, target).backward()
        share[w_type] = float((-x.grad[0, 2][target[0] == 2]).clamp(min=0).sum() / x.grad.abs().sum())
    assert share["simple"] > 3 * share["square"], share
