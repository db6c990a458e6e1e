"""Which code produced a result: the git sha of the checkout and installed package versions."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path


def git_sha() -> str | None:
    """``git rev-parse HEAD`` of the checkout this code runs from, ``<sha>-dirty`` with uncommitted changes to tracked
    files; None outside a git checkout or without git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (None when not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
