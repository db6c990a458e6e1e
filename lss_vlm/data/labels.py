"""Mapping a source dataset's mask values onto our labels (:data:`~lss_vlm.constants.LABELS`).

The text form is ``'NAME=VALUES,NAME=VALUES,...'`` where NAME is one of our label names or an alias
(:data:`LABEL_ALIASES`, e.g. ``canal`` → ``thecal_sac``) and VALUES is a source value ``7`` or an inclusive range
``201-225``. A name may appear several times. Source values that are not listed become background (0).
Example: ``--labels 'disc=2,canal=3'`` maps source value 2 to ``disc`` and 3 to ``thecal_sac``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..constants import LABEL_INDEX, LABELS
from ..errors import ConfigError, DataError

#: Accepted synonyms of our label names in a label mapping.
LABEL_ALIASES: dict[str, str] = {
    "bg": "background",
    "body": "vertebral_body",
    "vertebra": "vertebral_body",
    "vertebrae": "vertebral_body",
    "ivd": "disc",
    "canal": "thecal_sac",
    "spinal_canal": "thecal_sac",
    "dural_sac": "thecal_sac",
    "csf": "thecal_sac",
    "ts": "thecal_sac",
    "posterior": "posterior_elements",
    "pe": "posterior_elements",
    "lf": "ligamentum_flavum",
    "flavum": "ligamentum_flavum",
}


#: Source mask values a label mapping may name: the range of the int16/uint16 masks label images are stored in.
#: Bounding it keeps a range like ``disc=0-999999999`` from being expanded into a billion-entry table.
MASK_VALUE_MIN, MASK_VALUE_MAX = -(2**15), 2**16 - 1


def label_index(name: str) -> int:
    """Index of one of our labels given its name or an alias."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    key = LABEL_ALIASES.get(key, key)
    if key not in LABEL_INDEX:
        raise ConfigError(
            f"unknown label {name!r} in the label mapping; expected one of {', '.join(LABELS)} "
            f"(or an alias: {', '.join(sorted(LABEL_ALIASES))})"
        )
    return LABEL_INDEX[key]


def parse_label_mapping(text: str) -> dict[int, int]:
    """Parse ``'disc=2,canal=3,vertebra=1-25'`` into ``{source value: our label index}``."""
    mapping: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, values = item.partition("=")
        if not sep or not values.strip() or not name.strip():
            raise ConfigError(f"label mapping item {item!r} must look like NAME=VALUE or NAME=LOW-HIGH (e.g. disc=2)")
        target = label_index(name)
        low, dash, high = values.strip().partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ConfigError(f"label mapping item {item!r}: {values.strip()!r} is not an integer or a range") from None
        if last < first:
            raise ConfigError(f"label mapping item {item!r}: empty range {first}-{last}")
        if first < MASK_VALUE_MIN or last > MASK_VALUE_MAX:
            raise ConfigError(
                f"label mapping item {item!r}: source values must lie in {MASK_VALUE_MIN}-{MASK_VALUE_MAX} "
                "(the range of a 16-bit mask)"
            )
        for value in range(first, last + 1):
            if value in mapping and mapping[value] != target:
                raise ConfigError(
                    f"label mapping maps source value {value} twice ({LABELS[mapping[value]]} and {LABELS[target]})"
                )
            mapping[value] = target
    if not mapping:
        raise ConfigError(f"label mapping {text!r} is empty; expected e.g. 'disc=2,canal=3'")
    return mapping


def apply_label_mapping(mask: np.ndarray, mapping: Mapping[int, int] | None, where: str = "mask") -> np.ndarray:
    """Our labels (uint8) of a source mask. ``None`` = the mask already uses our values (checked: 0-5 only).

    With a mapping, unlisted source values become background.
    """
    values = np.unique(mask)
    if np.any(values != np.round(values)):
        raise DataError(
            f"{where}: mask has non-integer values (e.g. {values[values != np.round(values)][0]}); "
            "expected integer labels"
        )
    mask = mask.astype(np.int64)
    if mapping is None:
        bad = [int(v) for v in values if not 0 <= v < len(LABELS)]
        if bad:
            raise DataError(
                f"{where}: mask value(s) {bad[:5]} are not labels 0-{len(LABELS) - 1}; "
                "pass --labels (e.g. 'disc=2,canal=3') to map the source values"
            )
        return mask.astype(np.uint8)
    out = np.zeros(mask.shape, dtype=np.uint8)
    for source in values:
        target = mapping.get(int(source), 0)
        if target:
            out[mask == source] = target
    return out
