"""Word-level report vocabulary with typed measurement slots (R2Gen / R2GenCMN practice for small report corpora).

The report decoder predicts words, not MiniLM word pieces: the phantom's reports use ~50 distinct words, MiniLM has
30,522 pieces. As in R2Gen (Chen et al., EMNLP 2020) and R2GenCMN (Chen et al., ACL 2021), the vocabulary is built
from the **training split's** reference reports, keeping tokens seen at least ``min_freq`` times; others map to
``<unk>``. It is saved in the run directory (``report_vocab.json``) and in the checkpoint's model config, so it is
loaded with the weights.

**Tokens** (:func:`tokenize`, case kept): level names (``L4-L5``, ``L5-S1``) and units (``mm2``) are single tokens;
words keep inner hyphens (``cross-sectional``); numbers are one token; each punctuation mark is a token.
:func:`detokenize` undoes it (no space before ``. , ; : )``), so ``detokenize(tokenize(t)) == t`` for writer text.

**Measurement slots** (:func:`to_slots`, :func:`fill_slots`). A number followed by ``mm2`` is the dural-sac area, a
number followed by ``mm`` the AP diameter, of the level named last in its sentence. Such numbers become typed slot
tokens, ``<area_L4-L5>`` and ``<ap_L4-L5>`` (10 in all), before training. At decoding the decoder writes the slot, and
:func:`fill_slots` puts in the value the composer (:mod:`lss_vlm.reports.composer`) measured on the *predicted* mask
of that level: every number in a generated report traces to a mask. A slot whose level cannot be measured is
dropped with its phrase, as the reference writer leaves out an unknown measurement.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import LEVELS
from ..errors import DataError
from ..io import atomic_write_json

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
#: Slot kinds: (name, unit token that follows the number in the text, number format).
SLOT_KINDS: dict[str, tuple[str, str]] = {"area": ("mm2", "{:.0f}"), "ap": ("mm", "{:.1f}")}
#: Composer measurement of each slot kind.
SLOT_MEASUREMENT: dict[str, str] = {"area": "area_mm2", "ap": "ap_mm"}
SLOTS: tuple[str, ...] = tuple(f"<{kind}_{level}>" for level in LEVELS for kind in SLOT_KINDS)
VOCAB_FILE = "report_vocab.json"
#: Decoder length limit = ``LENGTH_MARGIN`` × the longest training reference (tokens, + <bos>/<eos>).
LENGTH_MARGIN = 1.25
#: Minimum count of a word in the training references to enter the vocabulary (rarer words become ``<unk>``).
DEFAULT_MIN_FREQ = 2

_TOKEN_RE = re.compile(
    r"<[a-z]+_[LS]\d-[LS]\d>"  # slot
    r"|\b[LTSC]\d-[LS]\d\b"  # level name
    r"|\d+(?:\.\d+)?"  # number
    r"|[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*"  # word (mm2, cross-sectional)
    r"|[^\sA-Za-z0-9]"  # punctuation
)
_LEVEL_TOKEN_RE = re.compile(r"^[LTSC]\d-[LS]\d$")
_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?$")
_SLOT_RE = re.compile(r"^<([a-z]+)_([LS]\d-[LS]\d)>$")
_CLOSERS = frozenset(".,;:)")
_SEPARATORS = frozenset(".,;")


def tokenize(text: str) -> list[str]:
    """Split a report into word-level tokens (case kept; see the module docstring)."""
    return _TOKEN_RE.findall(text.replace("\u2013", "-").replace("\u2014", "-"))


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens into text: one space between tokens, none before ``. , ; : )`` nor after ``(``."""
    out = ""
    for token in tokens:
        if out and token not in _CLOSERS and not out.endswith("("):
            out += " "
        out += token
    return out


def is_level_token(token: str) -> bool:
    return bool(_LEVEL_TOKEN_RE.match(token))


def to_slots(tokens: Sequence[str]) -> list[str]:
    """Replace each measurement number (followed by ``mm2`` or ``mm``) by the slot of the last level of its sentence."""
    units = {unit: kind for kind, (unit, _) in SLOT_KINDS.items()}
    out, level = [], None
    for i, token in enumerate(tokens):
        if is_level_token(token):
            level = token.upper()
        elif token == ".":
            level = None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if level in LEVELS and _NUMBER_RE.match(token) and nxt in units:
            out.append(f"<{units[nxt]}_{level}>")
        else:
            out.append(token)
    return out


def remeasure(report: str, measurements: Mapping[str, Mapping[str, object]]) -> str:
    """``report`` (writer template) with every measurement number replaced by ``measurements`` of its level.

    :func:`to_slots` then :func:`fill_slots`: each ``<n> mm2`` / ``<x.x> mm`` of a level sentence becomes that level's
    measured area / AP diameter (a level without a finite measurement loses the phrase, as the writer omits it). The
    evaluation rewrites each reference with the numbers measured on the true masks: the measurement ceiling.
    """
    return fill_slots(detokenize(to_slots(tokenize(report))), measurements)


def quoted_numbers(report: str) -> dict[str, str]:
    """The measurement numbers a writer-template report quotes, by slot: ``{"<area_L4-L5>": "63", "<ap_L4-L5>":
    "8.1", ...}`` (:func:`to_slots` decides which number is which; a slot quoted twice keeps its first number)."""
    tokens = tokenize(report)
    out: dict[str, str] = {}
    for token, slot in zip(tokens, to_slots(tokens)):
        if slot != token:
            out.setdefault(slot, token)
    return out


def slot_text(slot: str, measurements: Mapping[str, Mapping[str, object]]) -> str | None:
    """The number a slot token (``<area_L4-L5>``) is filled with: the level's measurement formatted as the writer
    formats it (area ``"{:.0f}"``, AP ``"{:.1f}"``), or None when the level has no finite measurement of that kind."""
    m = _SLOT_RE.match(slot)
    if m is None or m.group(1) not in SLOT_KINDS:
        return None
    kind, level = m.group(1), m.group(2)
    raw = (measurements.get(level) or {}).get(SLOT_MEASUREMENT[kind], math.nan)
    value = float(raw) if isinstance(raw, numbers.Real) and not isinstance(raw, bool) else math.nan  # numpy too
    return SLOT_KINDS[kind][1].format(value) if math.isfinite(value) else None


def exact_numbers(report: str, measurements: Mapping[str, Mapping[str, object]]) -> dict[str, tuple[int, int]]:
    """Per slot kind, ``(exact, quoted)``: how many of the numbers ``report`` quotes (:func:`quoted_numbers`) the
    ``measurements`` reproduce to the printed digit (:func:`slot_text`). CIDEr-D gives a number credit only when its
    token is identical, so this is the share of the numbers' n-grams a report filled from ``measurements`` can earn.
    """
    counts = {kind: [0, 0] for kind in SLOT_KINDS}
    for slot, number in quoted_numbers(report).items():
        kind = _SLOT_RE.match(slot).group(1)  # type: ignore[union-attr]
        if kind in counts:
            counts[kind][0] += slot_text(slot, measurements) == number
            counts[kind][1] += 1
    return {kind: (exact, quoted) for kind, (exact, quoted) in counts.items()}


def fill_slots(text: str, measurements: Mapping[str, Mapping[str, object]]) -> str:
    """Put the composer's measurement of each level into its slot tokens, or drop an unmeasurable slot's phrase.

    Args:
        text: a decoded report that may contain slot tokens (``<area_L4-L5>``, ``<ap_L4-L5>``).
        measurements: :attr:`lss_vlm.reports.composer.ComposedReport.measurements` of the same case
            (``{level: {"area_mm2": float, "ap_mm": float, ...}}``, NaN = not measurable).

    Returns:
        The text with numbers (area ``"{:.0f}"``, AP ``"{:.1f}"``); a slot without a finite measurement is removed with
        the phrase around it (from the previous ``;``/``,`` to the next ``;``/``,``/``.``), as the writer omits it.
    """
    tokens = tokenize(text)
    if not any(_SLOT_RE.match(t) for t in tokens):
        return text
    out: list[str] = []
    i = 0
    while i < len(tokens):
        m = _SLOT_RE.match(tokens[i])
        if not m:
            out.append(tokens[i])
            i += 1
            continue
        number = slot_text(tokens[i], measurements)
        if number is not None:
            out.append(number)
            i += 1
            continue
        # drop the phrase: back to the previous separator, forward to the next one
        start = len(out)
        while start > 0 and out[start - 1] not in _SEPARATORS and out[start - 1] != ":":
            start -= 1
        end = i + 1
        while end < len(tokens) and tokens[end] not in _SEPARATORS:
            end += 1
        previous = out[start - 1] if start > 0 else None
        del out[start:]
        following = tokens[end] if end < len(tokens) else None
        if previous in (";", ",") and following in (",", ";"):
            i = end + 1  # "; <gone>, AP ..." -> "; AP ..."
        elif previous in (";", ",") and following == ".":
            out.pop()  # "..., <gone>." -> "...."
            i = end
        else:
            i = end + 1 if following == "," else end
    return detokenize(out)


@dataclass
class ReportVocabulary:
    """Token list (index = id) with ``<pad>=0, <bos>=1, <eos>=2, <unk>=3`` first, then the slots, then words.

    ``max_length`` is the decoder's length limit in tokens (``<bos>``/``<eos>`` included); ``length_p95`` the 95th
    percentile of the training references' lengths (same unit), kept to check that the limit truncates nothing.
    """

    tokens: list[str]
    max_length: int
    min_freq: int = 1
    length_p95: float = math.nan
    n_reports: int = 0

    def __post_init__(self) -> None:
        if list(self.tokens[: len(SPECIALS)]) != list(SPECIALS):
            raise DataError(f"report vocabulary must start with {', '.join(SPECIALS)}")
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError("report vocabulary has duplicate tokens")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(
        cls, reports: Iterable[str], min_freq: int = DEFAULT_MIN_FREQ, length_margin: float = LENGTH_MARGIN
    ) -> ReportVocabulary:
        """Vocabulary of ``reports`` (the training split): tokens seen ≥ ``min_freq`` times, slots always included.

        Raises:
            DataError: no non-empty report.
        """
        sequences = [to_slots(tokenize(r)) for r in reports if r and r.strip()]
        if not sequences:
            raise DataError("cannot build a report vocabulary: the training split has no reference report")
        counts = Counter(t for seq in sequences for t in seq)
        kept = [t for t, c in counts.items() if c >= min_freq and t not in SLOTS and t not in SPECIALS]
        words = sorted(kept, key=lambda t: (-counts[t], t))
        lengths = np.array([len(seq) + 2 for seq in sequences])
        return cls(
            tokens=[*SPECIALS, *SLOTS, *words],
            max_length=int(math.ceil(length_margin * lengths.max())),
            min_freq=min_freq,
            length_p95=float(np.percentile(lengths, 95)),
            n_reports=len(sequences),
        )

    def encode(self, text: str) -> list[int]:
        """``[<bos>, tokens (numbers → slots, unknown → <unk>), <eos>]`` ids, cut to ``max_length``."""
        ids = [self.index.get(t, self.unk_id) for t in to_slots(tokenize(text))]
        return [self.bos_id, *ids[: self.max_length - 2], self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids up to the first ``<eos>`` (``<bos>``/``<pad>`` skipped; slots kept as slot tokens)."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.bos_id, self.pad_id):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return detokenize(words)

    def to_dict(self) -> dict[str, object]:
        return {
            "tokens": list(self.tokens),
            "max_length": self.max_length,
            "min_freq": self.min_freq,
            "length_p95": self.length_p95,
            "n_reports": self.n_reports,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ReportVocabulary:
        try:
            return cls(
                tokens=list(data["tokens"]),  # type: ignore[arg-type]
                max_length=int(data["max_length"]),  # type: ignore[arg-type]
                min_freq=int(data.get("min_freq", 1)),  # type: ignore[arg-type]
                length_p95=float(data.get("length_p95", math.nan)),  # type: ignore[arg-type]
                n_reports=int(data.get("n_reports", 0)),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"report vocabulary: missing or bad field ({exc})") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``report_vocab.json`` atomically; returns the path."""
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReportVocabulary:
        """Read a vocabulary saved by :meth:`save` (``DataError`` naming the file when unreadable)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a readable report vocabulary ({exc})") from None
        try:
            return cls.from_dict(data)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None


def default_vocabulary(n_cases: int = 64, seed: int = 0) -> ReportVocabulary:
    """The vocabulary of the reference writer's own reports (random grades, causes and measurements).

    For models built without a training split (unit tests, direct API use); a run always builds its own from the
    training split.
    """
    from .writer import CAUSE_PHRASES, write_reports

    rng = np.random.default_rng(seed)
    causes = list(CAUSE_PHRASES)
    reports = []
    for _ in range(n_cases):
        grades = [int(g) for g in rng.integers(0, 4, len(LEVELS))]
        findings = {lv: [causes[int(k)] for k in rng.permutation(3)[: int(rng.integers(1, 4))]] for lv in LEVELS}
        areas = [float(rng.uniform(30, 180)) for _ in LEVELS]
        aps = [float(rng.uniform(4, 14)) for _ in LEVELS]
        reports += write_reports(grades, areas, rng, n=3, findings=findings, ap_diameters=aps)
    return ReportVocabulary.build(reports, min_freq=1)
