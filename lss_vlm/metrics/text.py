"""Report metrics: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L, CIDEr-D on the whole split, and clinical consistency.

**Language metrics** (:func:`score_reports`). All texts go through pycocoevalcap's PTB tokenizer (lower-cased,
punctuation removed) in *one* call for references and hypotheses together (one JVM), then:

* ``bleu_1`` … ``bleu_4``: corpus BLEU (clipped n-gram precisions of the whole split, geometric mean, brevity penalty
  with the closest reference length), pycocoevalcap ``Bleu(4)``;
* ``meteor``: METEOR 1.5 (``-l en -norm``), one METEOR subprocess per call (the second and last JVM);
* ``rouge_l``: mean over cases of the ROUGE-L F-measure (β = 1.2) against the best-matching reference;
* ``cider``: **CIDEr-D** (pycocoevalcap's ``Cider`` class *is* CIDEr-D: n = 1..4, Gaussian length penalty σ = 6,
  clipped term frequencies, ×10 scaling). Document frequencies come from the references of the **whole split**, so the
  split is scored as one corpus; averaging per-case CIDEr computed case by case would be wrong (every n-gram would
  have document frequency 1 and idf 0 — coco-caption issue #9). ``cider`` is the raw value (about 0-10);
  ``cider_x100`` = 100 × ``cider`` is the paper convention (e.g. 92.80) and the one the leaderboard shows;
* SPICE is **not** computed: it needs a Stanford CoreNLP download at first use, and the toolkit runs offline.

Several references per case are supported (``references[case_id]`` is a list).

**Clinical consistency** (:func:`extract_grades`, :func:`grade_f1_from_text`): the stenosis grade stated for each level
is parsed from a report by a small rule-based extractor over the vocabulary of :mod:`lss_vlm.reports.writer`, and
compared with the true grades by macro-F1 (in the spirit of CheXpert-labeller F1 for chest X-ray reports).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from ..constants import LEVELS, MISSING_GRADE
from ..errors import DataError
from .classification import present_macro_f1

TEXT_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "cider_x100")


def _check_keys(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> None:
    missing = sorted(set(hypotheses) - set(references))
    if missing:
        raise DataError(f"score_reports: hypothesis for case {missing[0]!r} has no entry in references")
    orphans = sorted(set(references) - set(hypotheses))
    if orphans:
        raise DataError(f"score_reports: case {orphans[0]!r} has references but no hypothesis")


def tokenize_corpus(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """PTB-tokenize references and hypotheses in one pycocoevalcap call (one JVM start).

    Returns ``(gts, res)`` in the format of pycocoevalcap scorers: ``{case: [tokenized refs]}``, ``{case: [hyp]}``.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # Hypotheses first: the tokenizer drops trailing empty lines, and only a hypothesis can be empty.
    captions: dict[tuple[str, str], list[dict[str, str]]] = {}
    for case_id, hyp in hypotheses.items():
        captions[("hyp", case_id)] = [{"caption": hyp}]
    for case_id in hypotheses:
        captions[("ref", case_id)] = [{"caption": ref} for ref in references[case_id]]
    tokenized = PTBTokenizer().tokenize(captions)
    gts, res = {}, {}
    for case_id in hypotheses:
        if ("hyp", case_id) not in tokenized or ("ref", case_id) not in tokenized:
            raise RuntimeError(f"PTB tokenizer lost the text of case {case_id!r} (empty or multi-line input?)")
        res[case_id] = tokenized[("hyp", case_id)]
        gts[case_id] = tokenized[("ref", case_id)]
    return gts, res


def score_tokenized(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of already PTB-tokenized texts (pycocoevalcap scorers)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    meteor = Meteor()
    try:
        meteor_score, _ = meteor.compute_score(gts, res)
    finally:  # stop the JVM now rather than at garbage collection
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
    out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    out.update(meteor=float(meteor_score), rouge_l=float(rouge), cider=float(cider), cider_x100=100.0 * float(cider))
    return out


def score_reports(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    true_grades: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float]:
    """Score generated reports against reference reports over a whole split, as one corpus.

    Args:
        references: ``{case_id: [reference report, ...]}`` (one or more per case).
        hypotheses: ``{case_id: generated report}``, same case ids as ``references``.
        true_grades: optional ``{case_id: [grade per level]}``; adds ``grade_f1_from_text``.

    Returns:
        ``bleu_1..bleu_4, meteor, rouge_l, cider, cider_x100`` (see the module docstring) and ``n_reports``, the
        number of cases scored. Cases whose references are all empty are skipped; with none left every score is NaN.
    """
    _check_keys(references, hypotheses)
    refs = {k: [r for r in references[k] if r and r.strip()] for k in hypotheses}
    scored = {k: " ".join(str(h).split()) for k, h in hypotheses.items() if refs[k]}
    refs = {k: [" ".join(r.split()) for r in refs[k]] for k in scored}
    out: dict[str, float] = {"n_reports": float(len(scored))}
    if scored:
        out.update(score_tokenized(*tokenize_corpus(refs, scored)))
    else:
        out.update({name: math.nan for name in TEXT_METRICS})
    if true_grades is not None:
        out["grade_f1_from_text"] = grade_f1_from_text(hypotheses, true_grades)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Clinical consistency: rule-based grade extractor
# --------------------------------------------------------------------------------------------------------------------

#: Grade words (lower case) → grade index. ``no``/``without``/``negative for`` are negations handled separately.
GRADE_WORDS: dict[str, int] = {
    "normal": 0,
    "unremarkable": 0,
    "mild": 1,
    "mildly": 1,
    "minimal": 1,
    "slight": 1,
    "moderate": 2,
    "moderately": 2,
    "severe": 3,
    "severely": 3,
    "marked": 3,
    "markedly": 3,
    "critical": 3,
}
NEGATIONS: frozenset[str] = frozenset({"no", "without", "negative"})
STENOSIS_WORDS: frozenset[str] = frozenset(
    {"stenosis", "stenoses", "stenotic", "narrowing", "narrowed", "compromise", "compression"}
)
#: Words of another location of stenosis: a grade or negation before them is not about the central canal.
OTHER_LOCATION_WORDS: frozenset[str] = frozenset({"foraminal", "foramen", "foramina", "recess", "lateral", "neural"})
#: Other findings/structures: a grade word that modifies them (before any stenosis word) is not a stenosis grade.
OTHER_FINDING_WORDS: frozenset[str] = OTHER_LOCATION_WORDS | frozenset(
    {
        "disc", "disk", "bulge", "bulging", "protrusion", "herniation", "extrusion", "hypertrophy", "hypertrophic",
        "thickening", "thickened", "ligamentum", "flavum", "facet", "facets", "arthropathy", "effusion",
        "osteophyte", "osteophytes", "signal", "height", "alignment", "endplate", "edema", "desiccation",
    }
)  # fmt: skip
ADJECTIVE_WINDOW = 3  # tokens after a grade word searched for a stenosis word / another finding
NEGATION_WINDOW = 4  # tokens after a negation searched for a stenosis word

_LEVEL_RE = re.compile(r"\bl\s?([1-5])\s*[-/]?\s*(?:l\s?([1-5])|s\s?1\b|([1-5])\b)")
_CLAUSE_SPLIT_RE = re.compile(r"[;\n]|(?<!\d)\.|\.(?!\d)")
_PIECE_SPLIT_RE = re.compile(r",|\band\b|\bbut\b|\bwhile\b|\bwhereas\b|\bwith\b")
_ALL_LEVELS_RE = re.compile(r"\b(?:any|all|every|other|remaining)\s+(?:\w+\s+)?levels?\b|\bthroughout\b")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_NOT_ASSESSED_RE = re.compile(r"\bnot\s+(?:assessed|evaluated|imaged|visuali[sz]ed|included|seen)\b")


def _levels_in(piece: str) -> tuple[list[int], str]:
    """Level indices mentioned in ``piece`` and the piece with the level mentions blanked out."""
    found = []
    for m in _LEVEL_RE.finditer(piece):
        upper = int(m.group(1))
        lower = m.group(2) or m.group(3)
        if (lower is None and upper == 5) or (lower is not None and int(lower) == upper + 1 and upper < 5):
            found.append(upper - 1)
    return found, _LEVEL_RE.sub(" ", piece)


def _first_of(words: Sequence[str], *vocabularies: frozenset[str]) -> int | None:
    """Index of the vocabulary that the first word found in any of them belongs to, or None."""
    for word in words:
        for i, vocabulary in enumerate(vocabularies):
            if word in vocabulary:
                return i
    return None


def _grade_in(piece: str) -> int | None:
    """Most severe central-stenosis grade stated in a piece of text (level names removed), or None."""
    tokens = _TOKEN_RE.findall(piece)
    grades = []
    for i, token in enumerate(tokens):
        if token in NEGATIONS:
            after = tokens[i + 1 : i + 1 + NEGATION_WINDOW]
            if _first_of(after, STENOSIS_WORDS, OTHER_LOCATION_WORDS) == 0:
                grades.append(0)
        elif token in GRADE_WORDS and not (i > 0 and tokens[i - 1] in NEGATIONS):
            after = tokens[i + 1 : i + 1 + ADJECTIVE_WINDOW]
            if _first_of(after, STENOSIS_WORDS, OTHER_FINDING_WORDS) != 1:
                grades.append(GRADE_WORDS[token])
    return max(grades) if grades else None


def _clause_grades(clause: str) -> tuple[dict[int, int], int | None, set[int]]:
    """Grades per level stated in one clause, a grade stated for "any/all levels" (or None), unassessed levels."""
    if _NOT_ASSESSED_RE.search(clause):
        return {}, None, set(_levels_in(clause)[0])
    pieces = [(*_levels_in(p), p) for p in _PIECE_SPLIT_RE.split(clause)]
    parsed = [(levels, _grade_in(text), raw) for levels, text, raw in pieces]
    stated: dict[int, int] = {}
    global_grade = None
    for i, (levels, grade, raw) in enumerate(parsed):
        if grade is None and levels:  # level listed without its own grade: previous graded piece, else the next one
            before = [g for lv, g, _ in parsed[:i] if g is not None and lv]
            after = [g for _, g, _ in parsed[i + 1 :] if g is not None]
            grade = before[-1] if before else (after[0] if after else None)
        if grade is None:
            continue
        for level in levels:
            stated[level] = max(grade, stated.get(level, grade))
        if not levels and _ALL_LEVELS_RE.search(raw):
            global_grade = grade
    return stated, global_grade, set()


def extract_grades(text: str) -> list[int]:
    """Stenosis grade stated for each level of :data:`LEVELS` in a report (``-1`` where none is stated).

    Rules (over the vocabulary of :mod:`lss_vlm.reports.writer`, case-insensitive):

    1. Levels: ``L4-L5``, ``L4/L5``, ``L4-5``, ``L4 L5``, ``L4L5``, ``L5-S1`` (adjacent levels only).
    2. The text is cut into clauses at ``.`` (not a decimal point), ``;`` and new lines, and clauses into pieces at
       ``,``, ``and``, ``but``, ``while``, ``whereas``, ``with``.
    3. Grade words: ``normal``/``unremarkable`` 0; ``mild``/``minimal``/``slight`` 1; ``moderate`` 2;
       ``severe``/``marked``/``critical`` 3. A grade word is ignored when, within the next 3 tokens and before any
       stenosis word (``stenosis``, ``narrowing``, ``compromise``, ...), it meets another finding or structure
       (``disc bulge``, ``facet hypertrophy``, ``ligamentum flavum``, ``foraminal``, ``lateral recess``, ...), or when
       a negation directly precedes it.
    4. Negation: ``no``/``without``/``negative for`` followed within 4 tokens by a stenosis word is grade 0
       (``no stenosis at L3-L4``), unless a foraminal/lateral-recess word comes first.
    5. Several grades in one piece (``mild to moderate``): the most severe.
    6. A piece with levels but no grade takes the grade of the previous graded piece of its clause (``moderate stenosis
       at L3-L4 and L4-L5``), else of the next one (``At L4-L5, there is severe stenosis``).
    7. A level stated several times (e.g. findings and impression): the most severe statement.
    8. A grade stated for ``any``/``all``/``other``/``remaining`` level(s) or ``throughout`` without a level name
       applies to every level not stated elsewhere (``no stenosis at any lumbar level``).
    9. A clause saying a level is ``not assessed`` / ``not evaluated`` / ``not imaged`` / ``not visualized`` /
       ``not included`` / ``not seen`` states no grade for it, and rule 8 leaves that level out.
    """
    normalized = text.lower().replace("\u2013", "-").replace("\u2014", "-")
    grades = [MISSING_GRADE] * len(LEVELS)
    global_grade = None
    unassessed: set[int] = set()
    for clause in _CLAUSE_SPLIT_RE.split(normalized):
        stated, clause_global, clause_unassessed = _clause_grades(clause)
        unassessed |= clause_unassessed
        for level, grade in stated.items():
            grades[level] = max(grades[level], grade)
        if clause_global is not None:
            global_grade = clause_global if global_grade is None else max(global_grade, clause_global)
    if global_grade is not None:
        grades = [global_grade if g == MISSING_GRADE and i not in unassessed else g for i, g in enumerate(grades)]
    return grades


def grade_f1_from_text(hypotheses: Mapping[str, str], true_grades: Mapping[str, Sequence[int]]) -> float:
    """Macro-F1 between grades extracted from reports and the true grades, over the grades present in either.

    Pooled over every (case, level) pair with a known true grade (``-1`` ignored); a level the report does not state
    counts as a miss (a false negative of its true grade). ``F1_g = 2·TP_g / (2·TP_g + FP_g + FN_g)``, averaged over
    the grades that are true or extracted at least once (a grade absent from both is left out, see
    :func:`~lss_vlm.metrics.classification.present_macro_f1`). NaN if no grade is known.
    """
    missing = sorted(set(hypotheses) - set(true_grades))
    if missing:
        raise DataError(f"grade_f1_from_text: case {missing[0]!r} has a report but no true grades")
    y_true, y_pred = [], []
    for case_id, text in hypotheses.items():
        truth = [int(g) for g in true_grades[case_id]]
        if len(truth) != len(LEVELS):
            raise DataError(f"grade_f1_from_text: case {case_id!r} has {len(truth)} grades, expected {len(LEVELS)}")
        for t, p in zip(truth, extract_grades(text)):
            if t != MISSING_GRADE:
                y_true.append(t)
                y_pred.append(p)
    if not y_true:
        return math.nan
    return present_macro_f1(y_true, y_pred)
