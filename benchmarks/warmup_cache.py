"""A cache of warmed-up report decoders: the text-only warm-up (issue 13) depends on the model, the data and the seed,
never on the loss, so the runs of a suite that share a seed (12 losses in 'standard') warm up once.

Cache entry: ``<cache_dir>/report_warmup/<key>.safetensors`` (the decoder's state after the warm-up) and
``<key>.json`` (what the warm-up returned). ``key`` hashes the resolved ``model`` and ``data`` sections, the manifest's
bytes, ``train.seed``/``deterministic``, the torch version and the sources of ``lss_vlm.models`` and
``lss_vlm.reports``: the model is built from the same seed and the warm-up is deterministic, so loading an entry gives
the weights a fresh warm-up would. Runs that fine-tune (``train.init_weights``) are not cached. Entries are written
atomically; delete the folder to drop them. A file lock per key (``<key>.lock``, filelock) makes runs that start
together, e.g. two Ray workers on the same seed, warm up once: the second waits and loads the first one's entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from lss_vlm.io import atomic_path, atomic_write_json

from .config import DEFAULT_CACHE_DIR, ExperimentConfig
from .data import resolve_manifest

FOLDER = "report_warmup"


def warmup_key(cfg: ExperimentConfig) -> str:
    """The cache key of ``cfg``'s warm-up (see the module docstring)."""
    import lss_vlm.models
    import lss_vlm.reports

    digest = hashlib.sha256()
    record = {
        "model": cfg.model.model_dump(mode="json"),
        "data": cfg.data.model_dump(mode="json", exclude={"cache_dir"}),
        "seed": cfg.train.seed,
        "deterministic": cfg.train.deterministic,
        "torch": torch.__version__,
    }
    digest.update(json.dumps(record, sort_keys=True).encode())
    digest.update(resolve_manifest(cfg.data).read_bytes())
    for package in (lss_vlm.models, lss_vlm.reports):
        for source in sorted(Path(package.__file__).parent.rglob("*.py")):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:20]


def cached_warm_up(
    model: torch.nn.Module, cfg: ExperimentConfig, warm_up: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """``warm_up()`` (which trains ``model.report_decoder`` in place), or the cached result of an identical one:
    the decoder's weights are loaded and the stored summary returned with ``report_warmup/cached = 1``."""
    decoder: Any = getattr(model, "report_decoder", None)
    if decoder is None or cfg.train.init_weights is not None:
        return warm_up()
    folder = Path(cfg.data.cache_dir or DEFAULT_CACHE_DIR).expanduser() / FOLDER
    key = warmup_key(cfg)
    weights, summary = folder / f"{key}.safetensors", folder / f"{key}.json"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / f"{key}.lock"):
        if weights.is_file() and summary.is_file():
            device = next(decoder.parameters()).device
            decoder.load_state_dict(load_file(str(weights), device=str(device)))
            return {**json.loads(summary.read_text(encoding="utf-8")), "report_warmup/cached": 1.0}
        result = warm_up()
        if result:
            state = {k: v.detach().clone().contiguous() for k, v in decoder.state_dict().items()}  # untie shared
            with atomic_path(weights) as tmp:
                save_file(state, str(tmp))
            atomic_write_json(summary, result)
        return result
