"""Parameter-efficient training: frozen image encoder, LoRA on the text encoder and the report decoder."""

from __future__ import annotations

import pytest
import torch

from benchmarks.metric_names import metric_names
from lss_vlm.constants import NUM_VIEWS
from lss_vlm.engine.checkpoints import load_weights, save_weights
from lss_vlm.errors import ConfigError
from lss_vlm.models import build_model
from lss_vlm.models.checkpoint import load_checkpoint, save_checkpoint
from lss_vlm.models.lora import describe_parameters, parameter_report

TINY = {"text_encoder": "tiny-bert", "embed_dim": 32, "num_heads": 4, "report_width": 32, "report_heads": 2}
PEFT = {"freeze_encoder": True, "text_lora_rank": 4, "report_lora_rank": 4}
REPORTS = ["L4-L5: moderate central stenosis.", "L5-S1: severe spinal canal stenosis."]


def _views(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, NUM_VIEWS, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _build(**extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("spca_vlm", **TINY, **extra)


def _step(model: torch.nn.Module) -> None:
    """One AdamW step on seg + grade + report terms."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = model.tokenize_reports(REPORTS[:1])
    out = model(_views(), ids, mask)
    loss = out["seg_logits"].logsumexp(2).mean() + out["grade_logits"].logsumexp(-1).mean() + out["report_loss"]
    loss.backward()
    optimizer.step()


@pytest.fixture(scope="module")
def default_model() -> torch.nn.Module:
    return _build()


def test_lora_and_a_frozen_encoder_cut_the_trainable_fraction(default_model) -> None:
    full = parameter_report(_build(freeze_text=False))
    default = parameter_report(default_model)
    peft = parameter_report(_build(**PEFT))
    assert full["params_trainable_fraction"] == 1.0
    assert peft["params_trainable_fraction"] < default["params_trainable_fraction"] < 1.0
    assert peft["params_trainable"] < 0.5 * default["params_trainable"]
    line = describe_parameters(default_model)
    assert f"{int(default['params_trainable']):,} trainable" in line and "%" in line
    assert {"params_total", "params_trainable", "params_trainable_fraction"} <= metric_names()


def test_only_adapters_and_heads_train_one_step_and_round_trip(tmp_path) -> None:
    model = _build(**PEFT)
    text_trainable = [n for n, p in model.text.named_parameters() if p.requires_grad]
    assert text_trainable and all("lora_" in n for n in text_trainable)
    decoder_lm = [n for n, p in model.report_decoder.lm.named_parameters() if p.requires_grad]
    assert decoder_lm and all("lora_" in n for n in decoder_lm)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert all(float(v.abs().sum()) == 0 for v in lora_b.values())  # B = 0 at init: the adapted model = the base
    _step(model)
    assert not model.encoder.training  # a frozen encoder keeps its BatchNorm statistics
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen_before.items())
    moved = [n for n in lora_b if float(after[n].detach().abs().sum()) > 0]
    assert any(n.startswith("text.") for n in moved) and any(n.startswith("report_decoder.") for n in moved)
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    loaded = load_checkpoint(path).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_views(1))["seg_logits"], model(_views(1))["seg_logits"])
        assert loaded.generate_reports(_views(1), max_length=12) == model.generate_reports(_views(1), max_length=12)
    saved_text = [k for k in model.state_dict() if k.startswith("text.")]
    assert saved_text and all("lora_" in k for k in saved_text)  # frozen text weights are rebuilt, not saved


def test_plain_weights_load_into_an_adapted_model(tmp_path, default_model) -> None:
    plain = default_model.eval()
    with torch.no_grad():  # weights unlike a fresh build's, so that loading them is visible
        for param in plain.parameters():
            param.add_(0.05 * torch.randn_like(param))
    save_weights(plain, tmp_path / "plain.safetensors")
    adapted = _build(text_lora_rank=4, report_lora_rank=4).eval()
    load_weights(adapted, tmp_path / "plain.safetensors")  # strict: base weights renamed, fresh adapters kept
    with torch.no_grad():
        torch.testing.assert_close(adapted(_views(2))["grade_logits"], plain(_views(2))["grade_logits"])
        ids, mask = plain.tokenize_reports(REPORTS[:1])
        torch.testing.assert_close(
            adapted(_views(2), ids, mask)["report_loss"], plain(_views(2), ids, mask)["report_loss"]
        )


def test_bad_lora_rank_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.report_lora_rank"):
        _build(report_lora_rank=-1)
    with pytest.raises(ConfigError, match="model.text_lora_rank"):
        _build(text_lora_rank=1.5)
