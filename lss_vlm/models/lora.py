"""Parameter-efficient training: LoRA adapters (``peft``) and trainable-parameter accounting.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") replaces the update of a frozen weight
``W [out, in]`` by a low-rank product: ``h = W x + (α / r) · B A x`` with ``A [r, in]`` (random init) and ``B [out, r]``
(zero init, so training starts from the frozen model), ``r`` the rank and ``α`` the scaling. Only ``A`` and ``B`` are
trained. The adapters are injected in place by ``peft.inject_adapter_in_model``; every other weight of the adapted
module is frozen. Causal-SAM-LLM reports training under 9 % of its parameters this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from ..errors import ConfigError

LORA_MARK = "lora_"
BASE_MARK = ".base_layer."


def check_rank(rank: Any, key: str) -> int:
    """``rank`` as an int ≥ 0 (0 = no adapter); :class:`ConfigError` naming ``key`` otherwise."""
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= 4096:
        raise ConfigError(f"{key}: expected a LoRA rank from 0 (off) to 4096, got {rank!r}")
    return rank


def add_lora(
    module: nn.Module,
    rank: int,
    alpha: float,
    target_modules: Sequence[str] | None = None,
    fan_in_fan_out: bool = False,
) -> nn.Module:
    """Inject LoRA adapters of ``rank`` into ``module`` (in place) and freeze its other weights.

    ``target_modules`` names the linear layers to adapt (``None``: peft's default for the module's Hugging Face
    ``model_type``, e.g. BERT ``query``/``value``); ``fan_in_fan_out`` is True for GPT-2's ``Conv1D`` layers.
    Pre-LoRA weights still load into the adapted module (:func:`accept_plain_weights`).
    """
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules) if target_modules is not None else None,
        fan_in_fan_out=fan_in_fan_out,
    )
    try:
        module = inject_adapter_in_model(config, module)
    except ValueError as err:  # peft cannot infer the target layers of an unknown architecture
        raise ConfigError(f"cannot put LoRA adapters on {type(module).__name__}: {err}") from None
    for name, param in module.named_parameters():
        param.requires_grad_(LORA_MARK in name)
    accept_plain_weights(module)
    return module


def accept_plain_weights(module: nn.Module) -> None:
    """Let a state dict saved *without* adapters load into ``module`` *with* them.

    peft moves an adapted layer's weight ``x.weight`` to ``x.base_layer.weight``; a pre-hook renames the plain keys,
    and when the state dict carries no adapter of this module at all (a checkpoint trained without LoRA, e.g. a
    phantom run used as ``train.init_weights``) the adapters keep their fresh initialisation (``B = 0``: the loaded
    model computes exactly what the checkpoint did).
    """

    def rename(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        own = module.state_dict(prefix=prefix, keep_vars=True)
        has_adapters = any(k.startswith(prefix) and LORA_MARK in k for k in state_dict)
        for key, value in own.items():
            plain = key.replace(BASE_MARK, ".")
            if BASE_MARK in key and key not in state_dict and plain in state_dict:
                state_dict[key] = state_dict.pop(plain)
            if LORA_MARK in key and not has_adapters and key not in state_dict:
                state_dict[key] = value.detach()

    module._register_load_state_dict_pre_hook(rename)


def parameter_report(model: nn.Module) -> dict[str, float]:
    """``params_total``, ``params_trainable`` (``requires_grad``) and ``params_trainable_fraction`` of ``model``
    (parameters counted once even when shared, e.g. tied embeddings; frozen text weights count in the total)."""
    params = list(model.parameters())  # nn.Module.parameters() already yields a shared tensor once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {
        "params_total": float(total),
        "params_trainable": float(trainable),
        "params_trainable_fraction": float(trainable / total) if total else float("nan"),
    }


def describe_parameters(model: nn.Module) -> str:
    """One line for the log: ``parameters: 1,234,567 total, 98,765 trainable (8.00 %)``."""
    r = parameter_report(model)
    return (
        f"parameters: {int(r['params_total']):,} total, {int(r['params_trainable']):,} trainable "
        f"({100 * r['params_trainable_fraction']:.2f} %)"
    )
