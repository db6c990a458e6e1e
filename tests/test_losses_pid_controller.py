"""PID-Tversky controller: scripted error sequences, clamps, anti-windup, saturation, cadences and state round-trip."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from losses import PIDTverskyLoss

V1 = {"sensor": "soft", "actuator": "tversky", "include_background": False, "kp": 0.5, "ki": 0.1, "kd": 0.05}


def beta_pid(**kwargs) -> PIDTverskyLoss:
    """The PID core behind the β actuator with the soft sensor (v1's loop), epoch cadence unless overridden."""
    return PIDTverskyLoss(**{**V1, "cadence": "epoch", **kwargs})


def _counts(tp: float, fp: float, fn: float, num_classes: int = 2) -> tuple[torch.Tensor, ...]:
    """Counts for class 1 (class 0 = background gets no ground truth and must never move)."""
    zeros = torch.zeros(num_classes)
    tp_t, fp_t, fn_t = zeros.clone(), zeros.clone(), zeros.clone()
    tp_t[1], fp_t[1], fn_t[1] = tp, fp, fn
    return tp_t, fp_t, fn_t


def _drive(loss: PIDTverskyLoss, sequence: list[tuple[float, float, float]]) -> list[dict]:
    states = []
    for tp, fp, fn in sequence:
        loss.observe_counts(*_counts(tp, fp, fn))
        states.append(copy.deepcopy(loss.update()))
    return states


def test_persistent_under_segmentation_raises_beta() -> None:
    loss = beta_pid(num_classes=2)
    betas = [s["beta"][1] for s in _drive(loss, [(60.0, 5.0, 35.0)] * 8)]  # e = 30/100 = 0.3
    assert betas[0] > 0.5
    assert all(b2 > b1 for b1, b2 in zip(betas, betas[1:]))
    assert loss.controller_state()["alpha"][1] == pytest.approx(1.0 - betas[-1])


def test_persistent_over_segmentation_lowers_beta() -> None:
    loss = beta_pid(num_classes=2)
    states = _drive(loss, [(60.0, 30.0, 10.0)] * 8)  # e = -0.2
    betas = [s["beta"][1] for s in states]
    assert betas[0] < 0.5
    assert all(b2 <= b1 for b1, b2 in zip(betas, betas[1:])) and betas[-1] < betas[0]
    assert betas[-1] >= 0.3  # held at β_min once the integral has built up
    assert states[0]["error"][1] == pytest.approx(-0.2, abs=1e-6)


def test_error_is_the_signed_normalised_difference() -> None:
    loss = beta_pid(num_classes=2, kp=1.0, ki=0.0, kd=0.0, beta_min=0.0, beta_max=1.0)
    state = _drive(loss, [(50.0, 10.0, 40.0)])[0]
    assert state["error"][1] == pytest.approx(0.3, abs=1e-6)
    assert state["beta"][1] == pytest.approx(0.8, abs=1e-6)
    assert state["alpha"][1] == pytest.approx(0.2, abs=1e-6)


def test_integral_is_leaky_and_clamped_and_beta_is_clamped() -> None:
    loss = beta_pid(num_classes=2, kp=0.5, ki=0.5, kd=0.0, leak=0.9, integral_max=2.0, beta_max=0.9)
    states = _drive(loss, [(0.0, 0.0, 100.0)] * 40)  # e = +1 (nothing found): maximal under-segmentation
    integrals = [s["integral"][1] for s in states]
    assert integrals[:3] == pytest.approx([1.0, 1.9, 2.0])  # λ·I + e, clamped at I_max = 2
    assert max(integrals) == pytest.approx(2.0)
    assert all(s["beta"][1] <= 0.9 + 1e-7 for s in states) and states[-1]["beta"][1] == pytest.approx(0.9)
    assert states[-1]["alpha"][1] == pytest.approx(0.1)


def test_anti_windup_lets_beta_recover_quickly_after_saturation() -> None:
    """After a long saturated phase the clamped integral lets β leave the clamp within a few updates."""
    loss = beta_pid(num_classes=2)
    _drive(loss, [(0.0, 0.0, 100.0)] * 200)
    recovery = _drive(loss, [(50.0, 40.0, 10.0)] * 10)  # now over-segmenting: e = -0.3
    betas = [s["beta"][1] for s in recovery]
    first_below_neutral = next(i for i, b in enumerate(betas) if b < 0.5)
    assert first_below_neutral <= 4
    unclamped = beta_pid(num_classes=2, integral_max=1e9, leak=1.0)
    _drive(unclamped, [(0.0, 0.0, 100.0)] * 200)
    windup_betas = [s["beta"][1] for s in _drive(unclamped, [(50.0, 40.0, 10.0)] * 10)]
    assert all(b == pytest.approx(0.9) for b in windup_betas)  # without anti-windup β stays stuck at the clamp


def test_derivative_reacts_to_a_step_in_the_error() -> None:
    loss = beta_pid(num_classes=2, kp=0.0, ki=0.0, kd=0.5, beta_min=0.0, beta_max=1.0)
    states = _drive(loss, [(50.0, 25.0, 25.0)] * 3 + [(50.0, 5.0, 45.0)] * 3)  # e: 0, 0, 0, 0.4, 0.4, 0.4
    derivatives = [s["derivative"][1] for s in states]
    assert derivatives == pytest.approx([0.0, 0.0, 0.0, 0.4, 0.0, 0.0], abs=1e-6)
    betas = [s["beta"][1] for s in states]
    assert betas == pytest.approx([0.5, 0.5, 0.5, 0.7, 0.5, 0.5], abs=1e-6)


def test_first_update_has_no_derivative_kick() -> None:
    state = _drive(beta_pid(num_classes=2), [(50.0, 5.0, 45.0)])[0]
    assert state["derivative"][1] == 0.0


def test_classes_without_ground_truth_are_not_updated() -> None:
    loss = beta_pid(num_classes=3)
    tp = torch.tensor([10.0, 30.0, 0.0])
    fp = torch.tensor([1.0, 1.0, 50.0])  # class 2: only false positives, no ground truth
    fn = torch.tensor([1.0, 20.0, 0.0])
    loss.observe_counts(tp, fp, fn)
    state = loss.update()
    assert set(state["beta"]) == {1, 2}  # background excluded
    assert state["beta"][1] > 0.5
    assert state["beta"][2] == 0.5 and state["error"][2] == 0.0 and state["integral"][2] == 0.0
    assert loss.update()["beta"] == state["beta"]  # nothing observed since: no change


def test_calling_forward_without_hooks_is_static_tversky() -> None:
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 1, 8, 8))
    adaptive = beta_pid()
    static = beta_pid(kp=0, ki=0, kd=0)
    for _ in range(5):
        assert torch.equal(adaptive(logits, target), static(logits, target))
    assert adaptive.controller_state()["beta"] == {1: 0.5, 2: 0.5}


def test_validation_under_no_grad_does_not_feed_the_controller() -> None:
    loss = beta_pid(cadence="step")
    logits, target = torch.randn(1, 2, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.long)
    with torch.no_grad():
        loss(logits, target)
    loss.on_step_end()
    assert loss.controller_state()["beta"] == {1: 0.5}
    loss(logits.requires_grad_(), target)
    loss.on_step_end()
    assert loss.controller_state()["beta"][1] > 0.5  # class 1 everywhere, predicted at ~50%: under-segmented


def test_cadences_update_only_at_their_hook() -> None:
    logits, target = torch.full((1, 2, 8, 8), 0.0, requires_grad=True), torch.ones(1, 1, 8, 8, dtype=torch.long)
    epoch = beta_pid(cadence="epoch")
    step = beta_pid(cadence="step")
    for loss in (epoch, step):
        loss(logits, target)
        loss.on_step_end()
    assert epoch.controller_state()["beta"][1] == 0.5 and step.controller_state()["beta"][1] > 0.5
    epoch.on_epoch_end()
    assert epoch.controller_state()["beta"][1] == pytest.approx(step.controller_state()["beta"][1])


def test_epoch_cadence_uses_the_whole_epochs_counts() -> None:
    loss = beta_pid(num_classes=2, kp=1.0, ki=0.0, kd=0.0)
    loss.observe_counts(*_counts(10.0, 0.0, 90.0))  # small batch, e = 0.9
    loss.observe_counts(*_counts(900.0, 100.0, 0.0))  # big batch, e = -0.1
    assert loss.update()["error"][1] == pytest.approx((90 - 100) / 1100, abs=1e-6)


def test_step_cadence_smooths_counts_with_an_ema() -> None:
    loss = beta_pid(num_classes=2, cadence="step", ema=0.5)
    loss.observe_counts(*_counts(50.0, 10.0, 40.0))
    assert loss.update()["error"][1] == pytest.approx(0.3, abs=1e-6)  # first step: the counts themselves
    loss.observe_counts(*_counts(50.0, 40.0, 10.0))
    assert loss.update()["error"][1] == pytest.approx(0.0, abs=1e-6)  # EMA counts (50, 25, 25)


@pytest.mark.parametrize("cadence", ["epoch", "step"])
def test_saturated_controller_keeps_loss_and_gradients_finite(cadence: str) -> None:
    """Drive every class to the clamp with extreme logits and empty classes; nothing may become non-finite."""
    loss = beta_pid(cadence=cadence, kp=50.0, ki=50.0, kd=50.0, gamma=0.5, include_background=True)
    target = torch.zeros(2, 1, 6, 6, dtype=torch.long)
    target[0, 0, :2, :2] = 1  # class 2 and 3 never appear
    for step in range(30):
        logits = torch.full((2, 4, 6, 6), -1e4)
        logits[:, 3] = 1e4 if step % 2 else -1e4  # alternately predict everything as class 3 or as nothing
        logits[:, 0] = 0.0
        logits.requires_grad_(True)
        value = loss(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        loss.on_step_end()
        loss.on_epoch_end()
    state = loss.controller_state()
    for quantity in state.values():
        assert all(torch.isfinite(torch.tensor(v)) for v in quantity.values())
    assert all(0.3 <= b <= 0.9 for b in state["beta"].values())
    assert max(state["beta"].values()) == pytest.approx(0.9) or min(state["beta"].values()) == pytest.approx(0.3)
    assert all(abs(i) <= 2.0 for i in state["integral"].values())


def test_state_dict_round_trip_including_lazy_buffers() -> None:
    loss = beta_pid(cadence="step")
    _drive(loss, [(60.0, 5.0, 35.0)] * 3)
    loss.observe_counts(*_counts(1.0, 2.0, 3.0))  # pending counts are part of the state too
    fresh = beta_pid(cadence="step")  # buffers not created yet: sized on load
    fresh.load_state_dict(loss.state_dict())
    assert fresh.controller_state() == loss.controller_state()
    assert fresh.update() == loss.update()
    for name, buffer in loss.state_dict().items():
        assert torch.equal(buffer, fresh.state_dict()[name]), name


def _toy_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    target = torch.zeros(4, 1, 16, 16, dtype=torch.long)
    for i in range(4):
        r, c = torch.randint(2, 12, (2,), generator=generator).tolist()
        target[i, 0, r : r + 3, c : c + 3] = 1
    image = target.float() + 0.8 * torch.randn(target.shape, generator=generator)
    return image, target


def _train(steps: range, model, optimizer, loss) -> None:
    for step in steps:
        image, target = _toy_batch(step)
        optimizer.zero_grad()
        loss(model(image), target).backward()
        optimizer.step()
        loss.on_step_end()
        if step % 5 == 4:
            loss.on_epoch_end()


@pytest.mark.parametrize("cadence", ["epoch", "step"])
def test_resume_from_checkpoint_equals_never_stopping(cadence: str, tmp_path) -> None:
    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
        return model, torch.optim.Adam(model.parameters(), lr=1e-2), beta_pid(cadence=cadence)

    model, optimizer, loss = fresh()
    _train(range(23), model, optimizer, loss)  # stop mid-epoch, with pending counts
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "loss": loss.state_dict()}, checkpoint)
    _train(range(23, 40), model, optimizer, loss)

    resumed_model, resumed_optimizer, resumed_loss = fresh()
    saved = torch.load(checkpoint)
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optim"])
    resumed_loss.load_state_dict(saved["loss"])
    _train(range(23, 40), resumed_model, resumed_optimizer, resumed_loss)

    assert resumed_loss.controller_state() == loss.controller_state()
    assert loss.controller_state()["beta"][1] != 0.5  # the controller did move
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name


def test_eval_mode_does_not_feed_the_controller() -> None:
    loss = beta_pid(cadence="step").eval()
    loss(torch.zeros(1, 2, 4, 4, requires_grad=True), torch.ones(1, 1, 4, 4, dtype=torch.long))
    loss.on_step_end()
    assert loss.controller_state()["beta"] == {1: 0.5}


def _missed_but_smeared() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 covers 10 of 100 pixels; every pixel predicts p = (0.4, 0.3, 0.3), so the argmax never says 1
    (hard: all 10 missed, under-segmentation) while the soft mass over-covers it (27 soft FP vs 7 soft FN)."""
    target = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    target[0, 0, 0] = 1
    probs = torch.tensor([0.4, 0.3, 0.3]).view(1, 3, 1, 1).expand(1, 3, 10, 10)
    return probs.log().clone().requires_grad_(True), target


@pytest.mark.parametrize(("sensor", "sign"), [("soft", -1), ("volume", +1)])
def test_the_sensor_chooses_what_the_controller_sees(sensor: str, sign: int) -> None:
    """Soft counts call a smeared, never-predicted class over-segmented; the hard volume sensor under-segmented."""
    logits, target = _missed_but_smeared()
    loss = beta_pid(kp=0.5, ki=0.0, kd=0.0, sensor=sensor).train()
    loss(logits, target).backward()
    state = loss.update()
    assert sign * state["error"][1] > 0.5
    assert sign * (state["beta"][1] - 0.5) > 0
    assert torch.isfinite(logits.grad).all()


def test_hard_counts_match_a_hand_count() -> None:
    logits, target = _missed_but_smeared()
    tp, fp, fn = PIDTverskyLoss().hard_counts(logits, target)
    assert tp.tolist() == [90.0, 0.0, 0.0] and fp.tolist() == [10.0, 0.0, 0.0] and fn.tolist() == [0.0, 10.0, 0.0]


@pytest.mark.parametrize("tied", [False, True])
def test_hard_counts_equal_the_argmax_confusion_matrix(tied: bool) -> None:
    """The amax-compare fast path and the tie fallback both give torch.argmax's counts (first index wins a tie)."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 9, 7, 2, generator=generator)
    if tied:
        logits[:, :, :4] = 0.0  # every class tied in part of the volume: argmax picks class 0 there
        logits[:, 3, 4:6] = logits[:, 1, 4:6] = 50.0  # classes 1 and 3 tied: argmax picks 1
    target = torch.randint(0, 5, (3, 1, 9, 7, 2), generator=generator)
    labels, predicted = target.reshape(-1), logits.argmax(dim=1).reshape(-1)
    confusion = torch.bincount(labels * 5 + predicted, minlength=25).view(5, 5).to(torch.float64)
    tp = confusion.diagonal()
    expected = (tp, confusion.sum(0) - tp, confusion.sum(1) - tp)
    for got, want in zip(PIDTverskyLoss().hard_counts(logits, target), expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("actuator", ["pixel_weight", "tversky", "lagrange"])
@pytest.mark.parametrize("sensor", ["volume", "recall", "soft"])
def test_no_nan_reaches_the_loss_from_a_saturated_controller_or_an_absent_class(sensor: str, actuator: str) -> None:
    """Huge gains slam every output onto a clamp; class 2 never appears in the whole run; nothing turns non-finite."""
    loss = PIDTverskyLoss(sensor=sensor, actuator=actuator, kp=1e6, ki=1e6, kd=1e6, cadence="step")
    target = torch.zeros(2, 1, 6, 6, dtype=torch.long)
    target[:, 0, :2, :2] = 1
    target[:, 0, 4:, 4:] = 3  # class 2 absent from every batch
    for step in range(20):
        logits = torch.full((2, 4, 6, 6), -1e4)
        logits[:, 3 if step % 2 else 1] = 1e4  # alternately everything class 3, or everything class 1
        logits.requires_grad_(True)
        value = loss(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), step
        loss.on_step_end()
    state = loss.controller_state()
    assert all(math.isfinite(v) for quantity in state.values() for v in quantity.values())
    assert state["updates"][2] == 0 and 2 not in state["clamp_fraction"]  # the absent class was never updated
    low, high = state["output_min"][1], state["output_max"][1]
    assert all(state["output"][c] in (pytest.approx(low), pytest.approx(high)) for c in (1, 3))
    assert state["clamp_fraction"][1] == pytest.approx(1.0)


def test_volume_sensor_crosses_zero_at_the_setpoint() -> None:
    loss = PIDTverskyLoss(  # no EMA: each window alone
        num_classes=2, sensor="volume", actuator="pixel_weight", kp=1.0, ki=0.0, kd=0.0, cadence="epoch"
    )
    loss.observe_counts(*_counts(tp=40.0, fp=20.0, fn=20.0))  # predicted area = true area = 60
    assert loss.update()["error"][1] == pytest.approx(0.0, abs=1e-6)
    loss.observe_counts(*_counts(tp=30.0, fp=0.0, fn=30.0))  # predicted 30 of 60: e = (60-30)/(60+30)
    state = loss.update()
    assert state["error"][1] == pytest.approx(1 / 3, abs=1e-6)
    assert state["output"][1] == pytest.approx(1 + 1 / 3, abs=1e-6)  # the pixel weight of class 1 rises
    half = PIDTverskyLoss(num_classes=2, sensor="volume", setpoint=0.5, kp=1.0, ki=0.0, kd=0.0, cadence="epoch")
    half.observe_counts(*_counts(tp=30.0, fp=0.0, fn=30.0))  # setpoint: predicted = 0.5 x true
    assert half.update()["error"][1] == pytest.approx(0.0, abs=1e-6)


def test_recall_sensor_and_lagrange_multiplier_rise_on_missed_pixels() -> None:
    loss = PIDTverskyLoss(num_classes=2, sensor="recall", actuator="lagrange", kp=1.0, ki=0.0, kd=0.0, cadence="epoch")
    loss.observe_counts(*_counts(tp=50.0, fp=0.0, fn=50.0))  # recall 0.5 against the 0.9 target
    state = loss.update()
    assert state["error"][1] == pytest.approx(0.4, abs=1e-6) and state["output"][1] == pytest.approx(0.4, abs=1e-6)
    loss.observe_counts(*_counts(tp=100.0, fp=0.0, fn=0.0))  # recall 1.0: the constraint holds, multiplier >= 0
    assert loss.update()["output"][1] == 0.0


@pytest.mark.parametrize("actuator", ["pixel_weight", "lagrange"])
def test_the_actuator_has_a_gradient_on_a_class_the_network_misses(actuator: str) -> None:
    """The v1 defect: with TP_c = 0 the Tversky term barely moves p_c; a raised output must push p_c up there."""
    target = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    target[0, 0, 4:6, 4:6] = 1  # 4 px of class 1, never predicted
    logits = torch.zeros(1, 2, 16, 16)
    logits[:, 0] = 8.0

    def pull(kp: float) -> float:
        leaf = logits.clone().requires_grad_(True)
        loss = PIDTverskyLoss(num_classes=2, sensor="volume", actuator=actuator, kp=kp, ki=0.0, kd=0.0)
        loss.observe_counts(*_counts(tp=0.0, fp=0.0, fn=4.0))
        loss.update()  # e = +1: the output moves to its upper clamp
        loss(leaf, target).backward()
        return float(-leaf.grad[0, 1, 4:6, 4:6].sum())

    assert pull(kp=10.0) > 2 * pull(kp=0.0) > 0


def test_validation_volume_sensor_reads_only_the_validation_area_ratio() -> None:
    """The held-out sensor: training batches never move it; on_validation's area ratio does, NaN classes excepted."""
    loss = PIDTverskyLoss(num_classes=4, sensor="val_volume", actuator="tversky", kp=1.0, ki=0.0, kd=0.0)
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    loss(logits, torch.ones(1, 1, 4, 4, dtype=torch.long)).backward()
    loss.on_step_end()
    loss.on_epoch_end()
    assert loss.controller_state()["updates"] == {1: 0.0, 2: 0.0, 3: 0.0}
    loss.on_validation(torch.tensor([1.0, 0.5, float("nan"), 3.0]))  # class 1 half its area, class 3 triple
    state = loss.controller_state()
    assert state["error"][1] == pytest.approx(0.5 / 1.5, abs=1e-6) and state["beta"][1] > 0.5
    assert state["error"][3] == pytest.approx(-2.0 / 4.0, abs=1e-6) and state["beta"][3] < 0.5
    assert state["updates"] == {1: 1.0, 2: 0.0, 3: 1.0}  # no validation truth for class 2: not updated
    with pytest.raises(ValueError, match="on_validation got 3 ratios for 4 classes"):
        loss.on_validation(torch.ones(3))
