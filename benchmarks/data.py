"""The dataset of an experiment: a prepared manifest, or the phantom synthesised once and cached by its settings."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from lss_vlm.errors import DataError

from .config import DEFAULT_CACHE_DIR, DataConfig, PhantomConfig

_COMPLETE = ".complete"


def resolve_manifest(data: DataConfig) -> Path:
    """The manifest path of ``data``: ``data.manifest`` when set, else the cached phantom (synthesised if needed)."""
    if data.manifest is not None:
        if not Path(data.manifest).is_file():
            raise DataError(f"data.manifest: {data.manifest} not found")
        return Path(data.manifest)
    return cached_phantom(data.phantom, data.cache_dir or DEFAULT_CACHE_DIR)


def phantom_key(phantom: PhantomConfig) -> str:
    """Cache key of a phantom: its settings plus the source of the generator (a code change invalidates it)."""
    from lss_vlm.data import phantom as generator

    digest = hashlib.sha256(json.dumps(phantom.model_dump(mode="json"), sort_keys=True).encode())
    for source in sorted(Path(generator.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def cached_phantom(phantom: PhantomConfig, cache_dir: str | Path) -> Path:
    """Synthesise the phantom into ``cache_dir/phantom-<key>/`` once (process-safe) and return its manifest path.

    A large phantom (>= 200 cases, e.g. the GPU 'paper' budget's 400) is drawn by up to 8 processes; the cases do not
    depend on the number of processes."""
    from lss_vlm.data.phantom import synthesize

    cache_dir = Path(cache_dir).expanduser()
    folder = cache_dir / f"phantom-{phantom_key(phantom)}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = folder / _COMPLETE
        if marker.is_file():
            return folder / marker.read_text().strip()
        shutil.rmtree(folder, ignore_errors=True)  # a half-written phantom from a killed process
        manifest = Path(
            synthesize(
                folder,
                n_cases=phantom.n_cases,
                size=phantom.size,
                seed=phantom.seed,
                shift=phantom.shift,
                workers=min(8, os.cpu_count() or 1) if phantom.n_cases >= 200 else 1,
                **phantom.options,
            )
        )
        marker.write_text(str(manifest.resolve().relative_to(folder.resolve())))
        return manifest
