"""Output folders and files of the CLI: an inter-process lock per output folder, and checks made before any work.

* :func:`locked_folder` takes an exclusive lock (``filelock``) on an output folder for the whole command, so two
  ``compare``/``train``/``tune`` processes never write into the same folder: the second one is refused with one line.
  A folder the command created and left empty (it failed before writing anything) is removed again.
* :func:`check_figure_path` checks an image path (format matplotlib can write, not a folder) before the work starts,
  so a bad ``--montage``/``--out`` fails at once, not after minutes of work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lss_vlm.errors import ConfigError, LssError

#: Name of the lock file inside a locked output folder.
LOCK_NAME = ".lss-bench.lock"
#: The one default output root of every command that writes runs: ``train`` -> ``lss_runs/train/<run>``,
#: ``compare`` -> ``lss_runs/<suite>``, ``tune`` -> ``lss_runs/tune/<study>``, ``demo`` -> ``lss_runs/demo``.
OUTPUT_ROOT = Path("lss_runs")


def default_run_dir(cfg: Any) -> Path:
    """``lss_runs/train/<config name>-<loss>-seed<seed>`` (a ``package.module:factory`` loss name made folder-safe)."""
    loss = cfg.loss.name.replace(":", "-").replace("/", "-")
    return OUTPUT_ROOT / "train" / f"{cfg.name}-{loss}-seed{cfg.train.seed}"


class FolderBusy(LssError):
    """Another process holds the lock of an output folder."""


@contextlib.contextmanager
def locked_folder(path: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Create ``path`` if needed and hold its inter-process lock while the body runs.

    Raises :class:`FolderBusy` at once (no waiting) when another process holds the lock. When this call created the
    folder and the body left nothing in it but the lock file, the folder is removed again on exit.
    """
    from filelock import FileLock, Timeout

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: exists and is not a folder; choose a folder for {command} --out")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusy(
            f"{folder}: another lss-bench process is writing into this folder ({command}); "
            "wait for it to finish or choose another --out"
        ) from None
    try:
        yield folder
    finally:
        lock.release()
        if created:
            _remove_if_only_lock(folder)


def _remove_if_only_lock(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but the lock file (a command that failed before writing)."""
    try:
        entries = list(folder.iterdir())
        if all(entry.name == LOCK_NAME for entry in entries):
            (folder / LOCK_NAME).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass


def figure_formats() -> dict[str, str]:
    """File extensions matplotlib can save (``png`` -> "Portable Network Graphics", ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


def check_figure_path(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` if matplotlib can write an image there; else :class:`ConfigError` naming ``option`` and the path."""
    target = Path(path)
    formats = figure_formats()
    suffix = target.suffix.lower().lstrip(".")
    if target.is_dir():
        raise ConfigError(f"{option} {target}: is a folder; give an image file name, e.g. {target / 'figure.png'}")
    if suffix not in formats:
        raise ConfigError(
            f"{option} {target}: unsupported image format {('.' + suffix) if suffix else '(no extension)'}; "
            f"use one of: {', '.join('.' + ext for ext in sorted(formats))}"
        )
    check_parent_writable(target, option)
    return target


def check_parent_writable(target: Path, option: str) -> None:
    """The nearest existing ancestor of ``target`` must be a writable folder (else :class:`ConfigError`)."""
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {target}: folder {parent} is not writable")
