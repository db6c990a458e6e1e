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
def java_available() -> bool:
    return shutil.which("java") is not None


def requires_java() -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime (pycocoevalcap PTB tokenizer)")
