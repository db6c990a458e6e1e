"""Model contract: shapes, attention maps, gradients, text dependence, generation, checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lss_vlm.constants import LEVELS, NUM_GRADES, NUM_LABELS, NUM_VIEWS
from lss_vlm.errors import ConfigError
from lss_vlm.models import available_models, build_model, count_parameters
from lss_vlm.models.checkpoint import load_checkpoint, save_checkpoint
from lss_vlm.reports.vocabulary import tokenize

TINY = {"text_encoder": "tiny-bert"}
REPORTS = [
    "L1-L2: no central stenosis. L4-L5: moderate central stenosis; dural sac area 60 mm2.",
    "At L5-S1 there is severe spinal canal stenosis.",
]


def _views(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, NUM_VIEWS, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def spca() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("spca_vlm", **TINY).eval()


def test_registry_lists_the_three_models_and_rejects_unknown_names() -> None:
    assert {"spca_vlm", "unet_image_only", "global_pool_fusion"} <= set(available_models())
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("no_such_model")
    with pytest.raises(ConfigError, match="not_an_option"):
        build_model("spca_vlm", text_encoder="tiny-bert", not_an_option=1)


@pytest.mark.parametrize("name", ["spca_vlm", "global_pool_fusion", "unet_image_only"])
@pytest.mark.parametrize("size", [96, 128])
def test_output_shapes(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, **TINY).eval()
    ids, mask = model.tokenize_reports(REPORTS)
    with torch.no_grad():
        out = model(_views(2, size), ids, mask)
    assert out["seg_logits"].shape == (2, NUM_VIEWS, NUM_LABELS, size, size)
    assert out["grade_logits"].shape == (2, len(LEVELS), NUM_GRADES)
    for maps in out["attention"].values():
        assert maps.shape[:2] == (2, NUM_VIEWS) and maps.shape[-2:] == (size // 16, size // 16)
    if name != "unet_image_only":
        assert out["report_logits"].shape == (2, ids.shape[1], len(model.report_vocab))  # word-level vocabulary
        assert out["report_loss"].ndim == 0 and torch.isfinite(out["report_loss"])


def test_report_loss_ignores_cases_without_a_reference(spca: torch.nn.Module) -> None:
    ids, mask = spca.tokenize_reports(REPORTS)
    views = _views(2, 32)
    partial = mask.clone()
    partial[1] = False  # case 2 has no reference report
    with torch.no_grad():
        alone = spca(views[:1], ids[:1, : int(mask[0].sum())], mask[:1, : int(mask[0].sum())])["report_loss"]
        both = spca(views, ids, partial)["report_loss"]
        none = spca(views, ids, torch.zeros_like(mask))["report_loss"]
    torch.testing.assert_close(both, alone)
    assert none == 0


def test_attention_maps_are_distributions_over_patches(spca: torch.nn.Module) -> None:
    with torch.no_grad():
        attention = spca(_views(2, 96))["attention"]
    assert attention["spca/s16"].shape == (2, NUM_VIEWS, len(spca.prompt_names), 6, 6)
    assert attention["grade"].shape == (2, NUM_VIEWS, len(LEVELS), 6, 6)
    for maps in attention.values():
        assert (maps >= 0).all()
        torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(maps.shape[:3]))


def test_multi_scale_spca_keeps_each_grid_layout() -> None:
    torch.manual_seed(0)
    model = build_model("spca_vlm", spca_strides=(8, 16), **TINY).eval()
    with torch.no_grad():
        attention = model(_views(1, 64))["attention"]
    assert attention["spca/s8"].shape[-2:] == (8, 8) and attention["spca/s16"].shape[-2:] == (4, 4)


def test_gradients_reach_spca_and_decoders_but_not_the_frozen_text_encoder() -> None:
    torch.manual_seed(0)
    model = build_model("spca_vlm", **TINY).train()
    ids, mask = model.tokenize_reports(REPORTS)
    out = model(_views(2, 64), ids, mask)
    loss = out["seg_logits"].logsumexp(2).mean() + out["grade_logits"].logsumexp(-1).mean() + out["report_loss"]
    loss.backward()
    for part in ("fusion", "seg_decoder", "grade_head", "report_decoder", "encoder"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    spca_block = model.fusion.blocks["16"]
    assert spca_block.attn.in_proj_weight.grad.abs().sum() > 0 and spca_block.gate_attn.grad != 0
    assert all(not p.requires_grad and p.grad is None for p in model.text.parameters())
    assert not model.text.backbone.training  # frozen encoder stays in eval mode under model.train()


def test_a_trainable_text_encoder_gets_gradients_through_the_prompts() -> None:
    torch.manual_seed(0)
    model = build_model("spca_vlm", freeze_text=False, **TINY).train()
    model(_views(1, 32))["seg_logits"].logsumexp(2).mean().backward()
    assert model.text.backbone.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text.parameters())


def test_changing_a_prompt_changes_segmentation_and_attention(spca: torch.nn.Module) -> None:
    views = _views(1, 64)
    with torch.no_grad():
        before = spca(views)
        original = spca.prompts.prompts["label/thecal_sac"]
        spca.set_prompts({"label/thecal_sac": "a bright round artefact in the abdomen"})
        try:
            after = spca(views)
        finally:
            spca.set_prompts({"label/thecal_sac": original})
        restored = spca(views)
    assert not torch.allclose(before["seg_logits"], after["seg_logits"])
    assert not torch.allclose(before["attention"]["spca/s16"], after["attention"]["spca/s16"])
    torch.testing.assert_close(before["seg_logits"], restored["seg_logits"])


def test_prompts_are_encoded_once_not_per_step(spca: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(spca.text, "forward", lambda *a, **k: calls.append(1))
    with torch.no_grad():
        spca(_views(1, 64))
    assert calls == []


def test_generate_returns_text_greedy_and_beam(spca: torch.nn.Module) -> None:
    for beams in (1, 2):
        reports = spca.generate_reports(_views(2, 64), num_beams=beams, max_length=12)
        assert len(reports) == 2 and all(isinstance(r, str) and r.strip() for r in reports)
        assert all(len(tokenize(r)) <= 12 - 1 for r in reports)  # the cap counts <bos> (and <eos>)


def test_image_only_baseline_writes_template_reports() -> None:
    model = build_model("unet_image_only", **TINY)
    reports = model.generate_reports(_views(2, 64))
    assert all(all(level in r for level in LEVELS) for r in reports)


@pytest.mark.parametrize("name", ["spca_vlm", "unet_image_only"])
def test_safetensors_round_trip_is_exact(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    model = build_model(name, **TINY).eval()
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    assert not any(key.startswith("text.backbone") for key in load_file(str(path)))  # frozen weights not saved
    torch.manual_seed(2)  # a different initialisation, overwritten by the checkpoint
    clone = load_checkpoint(path).eval()
    views = _views(1, 64)
    ids, mask = model.tokenize_reports(REPORTS[:1])
    with torch.no_grad():
        a, b = model(views, ids, mask), clone(views, ids, mask)
    assert torch.equal(a["seg_logits"], b["seg_logits"]) and torch.equal(a["grade_logits"], b["grade_logits"])
    if "report_logits" in a:
        assert torch.equal(a["report_logits"], b["report_logits"])
    clone.load_state_dict(model.state_dict())  # a plain strict state-dict load works too (frozen keys not missing)


def test_same_seed_builds_the_same_model() -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        with torch.no_grad():
            outputs.append(build_model("spca_vlm", **TINY).eval()(_views(1, 32))["seg_logits"])
    assert torch.equal(outputs[0], outputs[1])


def test_parameter_counts_separate_frozen_text_weights(spca: torch.nn.Module) -> None:
    total, trainable = count_parameters(spca)
    frozen = sum(p.numel() for p in spca.text.parameters())
    assert frozen > 0 and total == trainable + frozen


def test_bad_inputs_raise_one_line_config_errors(spca: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match="multiple of 16"):
        spca(torch.zeros(1, NUM_VIEWS, 1, 60, 60))
    with pytest.raises(ConfigError, match=r"\[B, 7, 1, H, W\]"):
        spca(torch.zeros(1, 3, 1, 64, 64))
    with pytest.raises(ConfigError, match="not available offline"):
        build_model("spca_vlm", text_encoder="/nonexistent/checkpoint")
    with pytest.raises(ConfigError, match="unknown prompt"):
        spca.set_prompts({"label/not_a_label": "x"})


def test_default_text_encoder_is_the_offline_minilm_frozen() -> None:
    torch.manual_seed(0)
    model = build_model("spca_vlm").eval()  # default text_encoder="minilm", loaded with local_files_only=True
    assert model.text.hidden_size == 384 and not any(p.requires_grad for p in model.text.parameters())
    assert model.prompts.tokens.shape[1] == 384 and len(model.prompts.pooled) == len(model.prompt_names)
    # a pretrained encoder places related prompts closer than unrelated ones
    pooled = torch.nn.functional.normalize(model.prompts.pooled, dim=1)
    names = model.prompt_names
    same = pooled[names.index("level/L4-L5")] @ pooled[names.index("level/L5-S1")]
    other = pooled[names.index("level/L4-L5")] @ pooled[names.index("label/background")]
    assert same > other
    with torch.no_grad():
        out = model(_views(1, 64))
    assert out["seg_logits"].shape == (1, NUM_VIEWS, NUM_LABELS, 64, 64)


def test_missing_views_do_not_influence_grades_or_reports(spca: torch.nn.Module) -> None:
    views = _views(1, 64)
    valid = torch.ones(1, NUM_VIEWS, dtype=torch.bool)
    valid[0, 2] = False  # ax_l1_l2 missing, as in RSNA series without L1-L2
    changed = views.clone()
    changed[0, 2] = torch.randn(1, 64, 64)
    ids, mask = spca.tokenize_reports(REPORTS[:1])
    with torch.no_grad():
        a, b = spca(views, ids, mask, view_valid=valid), spca(changed, ids, mask, view_valid=valid)
        c = spca(changed, ids, mask)
    torch.testing.assert_close(a["grade_logits"], b["grade_logits"])
    torch.testing.assert_close(a["report_logits"], b["report_logits"])
    assert not torch.allclose(a["grade_logits"][0, 0], c["grade_logits"][0, 0])  # the view matters when valid


@pytest.mark.parametrize("name", ["spca_vlm", "global_pool_fusion"])
def test_views_no_case_has_are_not_encoded_and_the_present_ones_do_not_change(name: str) -> None:
    """A one-view dataset used to encode 7 views (6 blank): now only the present columns run; in eval mode their
    outputs equal those of the full computation, and absent views get zero logits, grid and maps."""
    torch.manual_seed(0)
    model = build_model(name, **TINY).eval()
    views = _views(2, 32)
    valid = torch.zeros(2, NUM_VIEWS, dtype=torch.bool)
    valid[:, 1] = True  # sag_t2 only
    valid[0, 4] = True  # one case also has an axial view
    seen = []
    hook = model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        fast = model(views, view_valid=valid)
        model.present_views = lambda view_valid: None  # the full computation, as before
        full = model(views, view_valid=valid)
    hook.remove()
    assert seen == [2 * 2, 2 * NUM_VIEWS]  # 2 cases x the 2 present columns, then every view
    present = [1, 4]
    assert torch.allclose(fast["seg_logits"][:, present], full["seg_logits"][:, present], atol=1e-5)
    assert torch.allclose(fast["grade_logits"], full["grade_logits"], atol=1e-5)
    absent = [i for i in range(NUM_VIEWS) if i not in present]
    assert not fast["seg_logits"][:, absent].any()
    for key, maps in fast["attention"].items():
        assert maps.shape[:2] == (2, NUM_VIEWS)
        if key != "grade":
            assert not maps[:, absent].any() and torch.allclose(maps[:, present], full["attention"][key][:, present])


@pytest.mark.parametrize("skip", [True, False])
def test_full_resolution_skip_lets_a_logit_see_its_own_input_pixel(skip: bool) -> None:
    """smp's U-Net decoder drops the stride-1 pyramid entry; the skip gives the head the image at full resolution."""
    from lss_vlm.models.decoders import SegmentationDecoder

    torch.manual_seed(0)
    channels, size = (1, 8, 8, 8, 8), 32
    decoder = SegmentationDecoder(channels, (8, 8, 8, 8), NUM_LABELS, full_resolution_skip=skip).eval()
    features = [torch.randn(1, c, size >> i, size >> i, requires_grad=True) for i, c in enumerate(channels)]
    decoder(features)[0, :, 10, 10].sum().backward()
    grad = features[0].grad
    if skip:
        assert grad is not None and float(grad[0, 0, 10, 10].abs()) > 0
        # four 3x3 convs from the input to the logit (stem x 2, merge, head): a receptive field of radius 4
        assert float(grad.abs().sum()) == pytest.approx(float(grad[0, 0, 6:15, 6:15].abs().sum()))
    else:
        assert grad is None  # the input pixels never reach the logits
    assert (decoder.stem is not None) is skip


def test_spca_models_build_the_full_resolution_skip_when_asked() -> None:
    model = build_model("spca_vlm", embed_dim=32, image_size=64, full_resolution_skip=True)
    legacy = build_model("spca_vlm", embed_dim=32, image_size=64)
    assert model.seg_decoder.stem is not None and legacy.seg_decoder.stem is None
    assert count_parameters(model)[1] > count_parameters(legacy)[1]
