"""Mapping a source dataset's mask values onto our labels (:data:`~lss_vlm.constants.LABELS`).

The text form is ``'NAME=VALUES,NAME=VALUES,...'`` where NAME is one of our label names or an alias
(:data:`LABEL_ALIASES`, e.g. ``canal`` → ``thecal_sac``) and VALUES is a source value ``7`` or an inclusive range
``201-225``. A name may appear several times. Source values that are not listed become background (0).
Example: ``--labels 'disc=2,canal=3'`` maps source value 2 to ``disc`` and 3 to ``thecal_sac``.

The name ``ignore`` marks source values of pixels that are not annotated (``ignore=255``); they become
:data:`~lss_vlm.constants.IGNORE_LABEL` in prepared masks, get no loss gradient and are never scored. The source value
:data:`DEFAULT_IGNORE_VALUE` (255) is an ignore value unless it is mapped to a label.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..constants import IGNORE_LABEL, LABEL_INDEX, LABELS
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

#: Source mask value read as "not annotated" when no other ignore value is given.
DEFAULT_IGNORE_VALUE = 255


def label_index(name: str, allow_ignore: bool = False) -> int:
    """Index of one of our labels given its name or an alias (``ignore`` → :data:`IGNORE_LABEL` if allowed)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    key = LABEL_ALIASES.get(key, key)
    if allow_ignore and key == "ignore":
        return IGNORE_LABEL
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
        target = label_index(name, allow_ignore=True)
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
                    f"label mapping maps source value {value} twice "
                    f"({_label_name(mapping[value])} and {_label_name(target)})"
                )
            mapping[value] = target
    if not mapping:
        raise ConfigError(f"label mapping {text!r} is empty; expected e.g. 'disc=2,canal=3'")
    return mapping


def _label_name(index: int) -> str:
    return "ignore" if index == IGNORE_LABEL else LABELS[index]


def apply_label_mapping(
    mask: np.ndarray,
    mapping: Mapping[int, int] | None,
    where: str = "mask",
    ignore_value: int | None = DEFAULT_IGNORE_VALUE,
    strict: bool = False,
) -> np.ndarray:
    """Our labels (uint8) of a source mask ``[...]`` (any shape; values must be integers).

    * ``mapping=None``: the mask already uses our values (checked: 0-5, or ``ignore_value``).
    * with a mapping: listed values become their label; ``ignore_value`` (unless mapped) becomes
      :data:`IGNORE_LABEL`; 0 is background; other values become background, or raise :class:`DataError` when
      ``strict`` (the ``images`` adapter: an unmapped value is almost always a forgotten ``--labels`` item).

    Raises :class:`DataError` naming ``where`` and the offending value.
    """
    values = np.unique(mask)
    if np.any(values != np.round(values)):
        raise DataError(
            f"{where}: mask has non-integer values (e.g. {values[values != np.round(values)][0]}); "
            "expected integer labels"
        )
    mask = mask.astype(np.int64)
    if mapping is None:
        bad = [int(v) for v in values if not 0 <= v < len(LABELS) and v != ignore_value]
        if bad:
            raise DataError(
                f"{where}: mask value(s) {bad[:5]} are not labels 0-{len(LABELS) - 1}"
                + (f" nor the ignore value {ignore_value}" if ignore_value is not None else "")
                + "; pass --labels (e.g. 'disc=2,canal=3') to map the source values"
            )
        out = mask.astype(np.uint8)
        if ignore_value is not None:
            out[mask == ignore_value] = IGNORE_LABEL
        return out
    out = np.zeros(mask.shape, dtype=np.uint8)
    for source in values:
        source = int(source)
        if source in mapping:
            target = mapping[source]
        elif source == ignore_value:
            target = IGNORE_LABEL
        elif source == 0 or not strict:
            target = 0
        else:
            listed = ", ".join(f"{_label_name(t)}={v}" for v, t in sorted(mapping.items())[:6])
            raise DataError(
                f"{where}: mask value {source} is neither mapped by --labels ({listed}) nor the ignore value "
                f"{ignore_value}; add it to --labels (e.g. 'disc={source}') or pass --ignore-label {source}"
            )
        if target:
            out[mask == source] = target
    return out
