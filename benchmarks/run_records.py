"""Reading the run directories of suite folders: status, metrics, resolved config and provenance of each run.

A suite directory (made by ``lss-bench compare``) holds ``runs/<loss>/seed<k>/`` run directories. Only final
directories count (``seed<k>.partial/`` is a run in progress). A run counts as completed when its ``status.json``
says so. This module sits below the leaderboard, its figures and its export formats; it imports none of them.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks import stats
from lss_vlm.errors import DataError

RUN_DIR_PATTERN = re.compile(r"^seed(\d+)$")
#: Keys of a run's resolved config that neither change its numbers nor identify it: the run name (it carries the
#: suite name), the progress switch and the phantom cache location. Ignored when configs are compared.
CONFIG_KEYS_IGNORED: tuple[str, ...] = ("name", "train.quiet", "data.cache_dir")


@dataclass
class RunRecord:
    """One finished run directory of a suite: ``loss`` label, ``seed``, status, metrics; config and provenance on
    demand (:meth:`config`, :meth:`provenance`)."""

    loss: str
    seed: int
    path: Path
    status: str
    reason: str | None = None
    wall_time_s: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def name(self) -> str:
        """``<loss> seed<k>``, how messages name the run."""
        return f"{self.loss} seed{self.seed}"

    def per_case(self) -> pd.DataFrame | None:
        """This run's ``per_case.csv`` (None when absent)."""
        path = self.path / "per_case.csv"
        return pd.read_csv(path) if path.is_file() else None

    def history(self) -> pd.DataFrame | None:
        """This run's ``history.csv`` (None when absent, empty or unreadable)."""
        path = self.path / "history.csv"
        if not path.is_file() or path.stat().st_size == 0:
            return None
        try:
            return pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, OSError):  # pandas' ParserError/EmptyDataError are ValueErrors
            return None

    @functools.cached_property
    def _config(self) -> dict[str, Any] | None:
        return read_run_config(self.path)

    def config(self) -> dict[str, Any] | None:
        """The run's resolved config (``config.yaml``, defaults filled in by the current schema); None if absent."""
        return self._config

    @functools.cached_property
    def _provenance(self) -> dict[str, Any]:
        path = self.path / "provenance.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return {}
        return data if isinstance(data, dict) else {}

    def provenance(self) -> dict[str, Any]:
        """The run's ``provenance.json`` ({} when absent or unreadable): package versions, data manifest hash, ..."""
        return self._provenance


class DamagedRun(Exception):
    """A file of a run directory cannot be read as what the toolkit wrote; the message says which and why."""


def read_run(path: Path, loss: str, seed: int) -> RunRecord:
    """Read ``status.json`` and ``metrics.json`` of a run directory; a run without status.json counts as failed.

    A damaged run (truncated or non-object ``status.json``/``metrics.json``, unreadable ``per_case.csv``) counts as
    failed, with the reason ("damaged: ..."), so the rest of the suite is still ranked.
    """
    try:
        return _read_run(path, loss, seed)
    except DamagedRun as exc:
        return RunRecord(loss, seed, path, "failed", f"damaged: {exc}")


def _read_run(path: Path, loss: str, seed: int) -> RunRecord:
    status_path = path / "status.json"
    if not status_path.is_file():
        return RunRecord(loss, seed, path, "failed", f"no status.json in {path}")
    status = _json_object(status_path)
    try:
        wall = float(status.get("wall_time_s") or math.nan)
    except (TypeError, ValueError):
        raise DamagedRun(f"{status_path}: wall_time_s {status.get('wall_time_s')!r} is not a number") from None
    reason = status.get("reason")
    record = RunRecord(loss, seed, path, str(status.get("status", "failed")), None if reason is None else str(reason))
    record.wall_time_s = wall
    metrics_path = path / "metrics.json"
    if record.completed and metrics_path.is_file():
        raw = _json_object(metrics_path)
        record.metrics = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and v is not None}
        _check_per_case(path / "per_case.csv")
    elif record.completed:
        record.status, record.reason = "failed", f"no metrics.json in {path}"
    return record


def _json_object(path: Path) -> dict:
    """A JSON file holding an object, or :class:`DamagedRun` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DamagedRun(f"{path.name} is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise DamagedRun(f"{path.name} holds a {type(data).__name__}, expected a JSON object")
    return data


def _check_per_case(path: Path) -> None:
    """An existing ``per_case.csv`` must parse and have a ``case_id`` column (else :class:`DamagedRun`)."""
    if not path.is_file():
        return
    try:
        columns = pd.read_csv(path).columns
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DamagedRun(f"{path.name} is unreadable ({' '.join(str(exc).split())[:120]})") from None
    if "case_id" not in columns:
        raise DamagedRun(f"{path.name} has no case_id column")


def read_suite_yaml(suite_dir: Path, problems: list[str] | None = None) -> dict:
    """The resolved ``suite.yaml`` of a suite directory ({} when absent).

    A damaged ``suite.yaml`` (not YAML, not a mapping) also gives {}: the leaderboard falls back to its defaults and the
    problem is appended to ``problems`` for a footnote.
    """
    path = suite_dir / "suite.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        data, why = {}, f"unreadable ({' '.join(str(exc).split())[:120]})"
    else:
        why = None if isinstance(data, dict) else f"holds a {type(data).__name__}, expected a mapping"
    if why is None:
        data, why = _typed_suite_keys(data)
    if why is not None and problems is not None:
        problems.append(f"{path} is damaged: {why}; the leaderboard uses its defaults there.")
    return data if isinstance(data, dict) else {}


#: Keys of suite.yaml the leaderboard reads, with the type each must have.
_SUITE_KEY_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "rank_by": (str,), "baseline": (str,)}


def _typed_suite_keys(data: dict) -> tuple[dict, str | None]:
    """``data`` without the keys the leaderboard reads whose type is wrong, and what was dropped (None if nothing)."""
    bad = [k for k, types in _SUITE_KEY_TYPES.items() if data.get(k) is not None and not isinstance(data[k], types)]
    columns = data.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        bad.append("columns")
    if not isinstance(data.get("losses", []), list):
        bad.append("losses")
    kept = {k: v for k, v in data.items() if k not in bad}
    return kept, (f"bad value(s) for {', '.join(bad)}" if bad else None)


def collect_runs(suite_dirs: str | Path | Sequence[str | Path]) -> list[RunRecord]:
    """Every finished run of ``<dir>/runs/<loss>/seed<k>/`` over one or more suite directories (partial runs
    skipped), ordered by loss, seed.

    Raises:
        DataError: a directory has no ``runs/`` folder, no finished run was found, or the same (loss, seed) is in two
            of the directories (a pooled leaderboard could not tell them apart).
    """
    dirs = [suite_dirs] if isinstance(suite_dirs, (str, Path)) else list(suite_dirs)
    records: list[RunRecord] = []
    seen: dict[tuple[str, int], Path] = {}
    for suite_dir in dirs:
        root = Path(suite_dir) / "runs"
        if not root.is_dir():
            raise DataError(
                f"{suite_dir}: no runs/ directory (expected a suite directory written by 'lss-bench compare')"
            )
        for record in _runs_of(root):
            key = (record.loss, record.seed)
            if key in seen:
                raise DataError(
                    f"run {record.name} is in both {seen[key]} and {record.path}; pool suite folders whose "
                    "(loss, seed) runs differ (e.g. other seeds), or rank them one at a time"
                )
            seen[key] = record.path
            records.append(record)
    if not records:
        where = ", ".join(str(Path(d) / "runs") for d in dirs)
        raise DataError(f"{where}: no finished runs yet (runs/<loss>/seed<k>/)")
    return sorted(records, key=lambda r: (r.loss, r.seed))


def _runs_of(root: Path) -> list[RunRecord]:
    records = []
    for loss_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run_dir in sorted(loss_dir.iterdir()):
            match = RUN_DIR_PATTERN.match(run_dir.name)
            if run_dir.is_dir() and match:
                records.append(read_run(run_dir, loss_dir.name, int(match.group(1))))
    return records


def pooled_case_values(runs: Sequence[RunRecord], metric: str) -> pd.Series:
    """Case-level values of ``metric`` (mean over views and the completed seeds' per_case.csv), by case_id."""
    frames = [df for r in runs if r.completed and (df := r.per_case()) is not None and "case_id" in df.columns]
    if not frames:
        return pd.Series(dtype=float)
    return stats.case_level_values(pd.concat(frames, ignore_index=True), metric)


# ------------------------------------------------------------------------------------------------- resolved configs
def read_run_config(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``config.yaml`` as a JSON-like dict, re-resolved by the current schema when it still validates (so a
    field added to the schema later, with its default, does not make an old run look different); None if absent or
    not a YAML mapping. A config that no longer validates (e.g. a plug-in loss not imported) is returned as stored."""
    import yaml

    from benchmarks.config import config_from_dict
    from lss_vlm.errors import LssError

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return config_from_dict(raw, source=str(path)).model_dump(mode="json")
    except (LssError, ValueError, TypeError):
        return json.loads(json.dumps(raw, default=str))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 6}}`` -> ``{"train.epochs": 6}`` (lists and scalars are leaves)."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_differences(
    old: dict[str, Any], new: dict[str, Any], ignored: Sequence[str] = CONFIG_KEYS_IGNORED
) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (keys under ``ignored`` left out), sorted."""
    a, b = flatten(old), flatten(new)
    skip = tuple(ignored)
    return sorted(
        k for k in set(a) | set(b) if a.get(k) != b.get(k) and not any(k == s or k.startswith(f"{s}.") for s in skip)
    )
