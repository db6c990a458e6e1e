"""Are the runs of a leaderboard comparable? Budget, data, model and package versions against the majority.

Every completed run is described by the fields that must be equal for its numbers to be ranked beside the others:
its resolved config (``config.yaml``: budget ``train.epochs``, ``data.batch_size``, early stopping, optimiser, the
whole ``model`` and ``data`` sections, ...) except the loss, ``train.seed`` and :data:`CONFIG_KEYS_IGNORED`; the
hash of its data manifest and its package versions (``provenance.json``). For each field the reference value is the
majority over the runs that record it (ties go to the first run in (loss, seed) order); a run that differs from a
reference is incomparable. A field a run does not record (no config.yaml, no provenance.json) is not checked for it.

``mismatch="refuse"`` (default) raises one :class:`ConfigError` line listing the runs and their differing fields;
``mismatch="flag"`` ranks them anyway and returns one footnote per run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmarks.run_records import CONFIG_KEYS_IGNORED, RunRecord, flatten
from lss_vlm.errors import ConfigError

MISMATCH_MODES: tuple[str, ...] = ("refuse", "flag")
#: Config keys that may differ between runs of one leaderboard: what is compared, and which seed.
VARYING_KEYS: tuple[str, ...] = ("loss", "train.seed", *CONFIG_KEYS_IGNORED)
#: provenance.json fields that are compared (package versions are compared one by one as ``packages.<name>``).
PROVENANCE_KEYS: tuple[str, ...] = ("data_manifest_hash",)
_SHOWN_KEYS = 4


def run_fields(run: RunRecord) -> dict[str, Any]:
    """The comparable fields of one run (flat, dotted keys); empty for a run that records nothing."""
    config = run.config() or {}
    fields = {
        k: v for k, v in flatten(config).items() if not any(k == s or k.startswith(f"{s}.") for s in VARYING_KEYS)
    }
    provenance = run.provenance()
    for key in PROVENANCE_KEYS:
        if provenance.get(key) is not None:
            fields[key] = provenance[key]
    packages = provenance.get("packages")
    if isinstance(packages, dict):
        fields.update({f"packages.{name}": version for name, version in packages.items() if version is not None})
    return fields


def find_mismatches(runs: Sequence[RunRecord]) -> dict[str, dict[str, tuple[Any, Any]]]:
    """``{run name: {field: (its value, reference value)}}`` for the completed runs that differ from the majority."""
    done = [r for r in runs if r.completed]
    fields = {r.name: run_fields(r) for r in done}
    counts: dict[str, Counter] = {}
    values: dict[str, dict[str, Any]] = {}
    for per_run in fields.values():
        for key, value in per_run.items():
            canon = json.dumps(value, sort_keys=True, default=str)
            counts.setdefault(key, Counter())[canon] += 1
            values.setdefault(key, {}).setdefault(canon, value)
    reference = {key: values[key][c.most_common(1)[0][0]] for key, c in counts.items()}
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for name, per_run in fields.items():
        diff = {k: (v, reference[k]) for k, v in sorted(per_run.items()) if v != reference[k]}
        if diff:
            out[name] = diff
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 16 else f"{text[:12]}…"


def describe(diff: dict[str, tuple[Any, Any]]) -> str:
    """``train.epochs 99 vs 6, data_manifest_hash 1a2b… vs 3c4d…`` (at most 4 fields, then ``+N more``)."""
    parts = [f"{k} {_short(v)} vs {_short(ref)}" for k, (v, ref) in list(diff.items())[:_SHOWN_KEYS]]
    more = len(diff) - _SHOWN_KEYS
    return ", ".join(parts) + (f", +{more} more" if more > 0 else "")


def check_comparable(runs: Sequence[RunRecord], mismatch: str = "refuse") -> tuple[dict, list[str]]:
    """Check the completed ``runs`` against the majority; returns (mismatches, footnotes).

    Raises:
        ConfigError: ``mismatch`` is not one of :data:`MISMATCH_MODES`, or it is ``"refuse"`` and some run differs
            (one line: each run with its differing fields, its value vs the majority's).
    """
    if mismatch not in MISMATCH_MODES:
        raise ConfigError(f"--mismatch {mismatch!r}: expected one of {', '.join(MISMATCH_MODES)}")
    found = find_mismatches(runs)
    if not found:
        return {}, []
    n = sum(r.completed for r in runs)
    if mismatch == "refuse":
        listed = "; ".join(f"{name} ({describe(diff)})" for name, diff in found.items())
        raise ConfigError(
            f"runs not comparable with the majority of the {n} completed runs: {listed}; "
            "rank them anyway with --mismatch flag (footnoted), or leave those runs out"
        )
    notes = [
        f"INCOMPARABLE run {name}: {describe(diff)} (its value vs the majority of the {n} completed runs); "
        "ranked anyway (--mismatch flag)."
        for name, diff in found.items()
    ]
    return found, notes
