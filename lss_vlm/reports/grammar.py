"""Grammar-constrained decoding of a report: the reference writer's template as a token-level constraint.

The reference writer (:mod:`lss_vlm.reports.writer`) fills one structured-reporting template: a sentence per level in
the order of :data:`LEVELS`, ``<level>: <grade word> <finding>[ <link> <causes>][; <measurements>].``, then an
impression line. A learned decoder picks the *wording* (finding, area and AP phrases, cause link, header), but the
*facts* it writes must be the ones it was told. :meth:`ReportGrammar.constraint` returns, for a decoded prefix, the
tokens that may come next (``allowed``, ``None`` = any) and those that may not (``banned``), so that:

* levels come in order, each once, and the impression header only after the last level; ``<eos>`` only after the
  impression's full stop;
* the word after ``<level>:`` is the told grade's word (``no``/``mild``/``moderate``/``severe``), and no other grade
  word appears in that sentence;
* the contributing causes written for a level are exactly the ones it was given (``causes``), each once, joined as
  the writer joins them (``X, Y and Z``); a level told normal, or given no cause, gets no cause link and no cause
  (the writer writes causes for stenotic levels only); with ``causes=None`` a level may take any cause, never twice;
* a level sentence quotes only its own measurement slots (``<area_L4-L5>``, ``<ap_L4-L5>``), each once, each followed
  by its unit (which slots a sentence quotes is the decoder's: the writer omits an unknown measurement);
* no token follows itself in a level sentence (a decoder wrote "dural dural sac area"; the writer never does).

The impression line is constrained by :meth:`lss_vlm.models.decoders.ReportDecoder.summary_bans`. Constrained
decoding (lexically / grammar-constrained beam search, Hokamp & Liu 2017; Post & Vilar 2018) changes only which
tokens the decoder may choose, never the scores of the allowed ones. Tokens absent from the vocabulary impose
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..constants import LEVELS
from .vocabulary import SLOT_KINDS, tokenize
from .writer import CAUSE_LINKS, CAUSE_PHRASES, IMPRESSION_HEADERS

#: The word the reference writer uses for each grade in a level sentence ("L4-L5: no spinal canal stenosis").
GRADE_WORDS: tuple[str, ...] = ("no", "mild", "moderate", "severe")


@dataclass(frozen=True)
class Constraint:
    """What may follow a prefix: ``allowed`` (token ids; ``None`` = any) minus ``banned``."""

    allowed: frozenset[int] | None = None
    banned: frozenset[int] = frozenset()

    def ids(self, vocab_size: int) -> set[int]:
        """The banned ids as one set (everything outside ``allowed``, plus ``banned``)."""
        banned = set(self.banned)
        if self.allowed is not None:
            banned |= set(range(vocab_size)) - set(self.allowed)
        return banned


class ReportGrammar:
    """The reference template over a vocabulary's tokens (``tokens[i]`` = text of id ``i``); see the module doc."""

    def __init__(self, tokens: Sequence[str], eos_id: int) -> None:
        self.index = {t: i for i, t in enumerate(tokens)}
        self.eos_id = eos_id
        get = self.index.get
        self.level_ids = [get(level) for level in LEVELS]
        self.headers = {i for h in IMPRESSION_HEADERS if (i := get(h.rstrip(":"))) is not None}
        self.grade_ids = [get(w) for w in GRADE_WORDS]
        self.link_ids = {i for link in CAUSE_LINKS if (i := get(tokenize(link)[0])) is not None}
        self.to_id = get("to")
        self.causes = {key: [get(t) for t in tokenize(phrase)] for key, phrase in CAUSE_PHRASES.items()}
        self.causes = {k: ids for k, ids in self.causes.items() if None not in ids}
        self.cause_tokens = {i for ids in self.causes.values() for i in ids}
        self.and_id, self.comma_id, self.semi_id = get("and"), get(","), get(";")
        self.stop_id, self.colon_id = get("."), get(":")
        self.slots = {
            (kind, level): get(f"<{kind}_{level}>")
            for level in LEVELS
            for kind in SLOT_KINDS
            if get(f"<{kind}_{level}>") is not None
        }
        self.unit_of = {i: get(SLOT_KINDS[kind][0]) for (kind, _), i in self.slots.items()}

    # ------------------------------------------------------------------------------------------------ the prefix
    def _split(self, seq: Sequence[int]) -> tuple[int, int, list[int], bool]:
        """(number of levels named, index of the current level or -1, tokens after it, in the impression)."""
        named, current, start = 0, -1, 0
        for pos, token in enumerate(seq):
            if token in self.headers:
                return named, current, list(seq[pos + 1 :]), True
            if token in self.level_ids:
                named, current, start = named + 1, self.level_ids.index(token), pos + 1
        return named, current, list(seq[start:]), False

    def constraint(
        self, seq: Sequence[int], told: Sequence[int], causes: Mapping[str, Sequence[str]] | None
    ) -> Constraint:
        """What may follow ``seq`` (ids after ``<bos>``), given the told grade per level (``told``, ``-1`` unknown)
        and the causes per level name (``None``: any cause, each at most once per sentence)."""
        named, current, sentence, in_summary = self._split(seq)
        if in_summary:
            return Constraint(banned=frozenset() if sentence[-1:] == [self.stop_id] else frozenset({self.eos_id}))
        banned = {self.eos_id} | {i for i in self.level_ids if i is not None}
        if sentence[-1:] == [self.stop_id] or current < 0:  # between sentences: the next level, or the header
            nxt = self.level_ids[named] if named < len(LEVELS) else None
            if nxt is not None:
                return Constraint(allowed=frozenset({nxt}))
            return Constraint(allowed=frozenset(self.headers)) if self.headers else Constraint()
        banned |= self.headers
        if not sentence:
            return Constraint(allowed=frozenset({self.colon_id})) if self.colon_id is not None else Constraint()
        banned.add(sentence[-1])  # the writer never writes a token twice in a row ("dural dural sac area")
        grade = int(told[current]) if current < len(told) else -1
        if sentence == [self.colon_id] and 0 <= grade < len(self.grade_ids) and self.grade_ids[grade] is not None:
            return Constraint(allowed=frozenset({self.grade_ids[grade]}))
        if grade >= 0:
            banned |= {i for g, i in enumerate(self.grade_ids) if i is not None and g != grade}
        level = LEVELS[current]
        forced = self._measurement(sentence, level, banned)
        if forced is not None:
            return forced
        if grade == 0:
            wanted: Sequence[str] | None = ()
        elif causes is None:
            wanted = None
        else:
            wanted = [c for c in causes.get(level, ()) if c in self.causes]
        return self._causes(sentence, wanted, banned)

    # ---------------------------------------------------------------------------------------------- measurements
    def _measurement(self, sentence: list[int], level: str, banned: set[int]) -> Constraint | None:
        own = {i for (_, lv), i in self.slots.items() if lv == level}
        banned |= {i for i in self.slots.values() if i not in own} | (own & set(sentence))
        if sentence[-1] in self.unit_of and self.unit_of[sentence[-1]] is not None:
            return Constraint(allowed=frozenset({self.unit_of[sentence[-1]]}))
        return None

    # --------------------------------------------------------------------------------------------------- causes
    def _causes(self, sentence: list[int], wanted: Sequence[str] | None, banned: set[int]) -> Constraint:
        cause_words = self.cause_tokens | self.link_ids | {self.to_id, self.and_id} - {None}
        links = [p for p, t in enumerate(sentence) if t in self.link_ids]
        if wanted is not None and not wanted:  # no cause for this level
            return Constraint(banned=frozenset(banned | cause_words))
        if not links:
            if wanted:  # the sentence states its causes before it ends or quotes a measurement
                banned |= {self.semi_id, self.stop_id, self.comma_id}
            return Constraint(banned=frozenset(banned | (cause_words - self.link_ids)))
        banned |= self.link_ids  # one link per sentence
        after = sentence[links[0] + 1 :]
        if self.semi_id in after or self.stop_id in after:  # the cause list is closed: the measurements follow
            return Constraint(banned=frozenset(banned | cause_words))
        if not after:
            return Constraint(allowed=frozenset({self.to_id})) if self.to_id is not None else Constraint()
        written, partial = self._parse(after[1:])
        if partial is not None:
            return Constraint(allowed=frozenset({partial}))
        pool = set(self.causes) if wanted is None else set(wanted)
        remaining = [k for k in self.causes if k in pool and k not in written]
        at_start = not after[1:] or after[-1] in (self.comma_id, self.and_id, self.to_id)
        if at_start:
            if remaining:
                return Constraint(allowed=frozenset(self.causes[k][0] for k in remaining))
            return Constraint(banned=frozenset(banned | cause_words))
        if wanted is None:  # any cause, each once: the decoder decides when the list ends
            return Constraint(banned=frozenset(banned | {self.causes[k][0] for k in written}))
        if len(remaining) >= 2 and self.comma_id is not None:
            return Constraint(allowed=frozenset({self.comma_id}))
        if len(remaining) == 1 and self.and_id is not None:
            return Constraint(allowed=frozenset({self.and_id}))
        ended = sentence[-1] in {ids[-1] for ids in self.causes.values()}  # right after the list's last cause
        return Constraint(banned=frozenset(banned | cause_words | ({self.comma_id} if ended else set())))

    def _parse(self, tokens: list[int]) -> tuple[list[str], int | None]:
        """Causes completed in the cause list ``tokens`` and, inside an unfinished phrase, its next token."""
        written: list[str] = []
        pos = 0
        while pos < len(tokens):
            key = next((k for k, ids in self.causes.items() if ids[0] == tokens[pos]), None)
            if key is None:
                pos += 1
                continue
            ids = self.causes[key]
            done = 1
            while done < len(ids) and pos + done < len(tokens) and tokens[pos + done] == ids[done]:
                done += 1
            if pos + done == len(tokens) and done < len(ids):
                return written, ids[done]
            written.append(key)
            pos += done
        return written, None
