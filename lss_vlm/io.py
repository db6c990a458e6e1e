"""Atomic file output: write to a temporary sibling, then rename, so nothing half-written is left behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it.

    Works for anything that writes to a path (``df.to_csv``, ``nib.save``, ``plt.savefig``, ``save_file``).
    The temporary name keeps the suffix(es) of ``path`` so writers that dispatch on the extension still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the mode a plain open() would
            tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically. NaN is written as ``NaN``."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def pid_alive(pid: int) -> bool:
    """True when a process with id ``pid`` exists on this machine (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(folder: str | os.PathLike[str], pattern: str) -> list[Path]:
    """Delete the entries of ``folder`` whose name fully matches ``pattern`` and whose process is gone.

    ``pattern`` is a regular expression with a named group ``pid``: the staging folders a killed process left behind
    (e.g. ``.staging-(?P<pid>\\d+)``). Entries of a live process, and anything else, are left alone. Returns what was
    removed; errors are ignored (another process may be cleaning up too).
    """
    import re
    import shutil

    removed = []
    regex = re.compile(pattern)
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = regex.fullmatch(entry.name)
        if match is None or pid_alive(int(match.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
