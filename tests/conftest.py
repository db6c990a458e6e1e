"""Shared fixtures. Tests are CPU-only, seeded, and fast by default (``-m slow`` for the long ones)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-case, 64² phantom (seed 0) shared by the whole test session. Returns the manifest path."""
    from lss_vlm.data.phantom import synthesize

    out = tmp_path_factory.mktemp("tiny_phantom")
    return synthesize(out, n_cases=12, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1-layer, 32-wide GPT-2 with MiniLM's offline tokenizer, saved like any local checkpoint."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from lss_vlm.models.text import minilm_path

    folder = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=256,  # shorter than a phantom prompt + reference: the truncation is exercised
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def java_available() -> bool:
    return shutil.which("java") is not None


def requires_java() -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime (pycocoevalcap PTB tokenizer)")
