"""Report metrics: corpus-level CIDEr-D & co. through pycocoevalcap (Java), the grade extractor and its F1."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from conftest import requires_java

from lss_vlm.errors import DataError
from lss_vlm.metrics.text import extract_grades, grade_f1_from_text, score_reports
from lss_vlm.reports.writer import write_reports

GRADE_SETS = [
    [0, 1, 2, 3, 0],
    [0, 0, 0, 0, 0],
    [1, 1, 2, 3, 3],
    [0, 0, 1, 2, 0],
    [2, 0, 0, 0, 1],
    [0, 3, 0, 0, 0],
]
AREAS = {0: 130.0, 1: 88.0, 2: 63.0, 3: 41.0}


def _corpus(n_refs: int = 3) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    rng = np.random.default_rng(0)
    references, grades = {}, {}
    for i, g in enumerate(GRADE_SETS):
        references[f"case{i}"] = write_reports(g, [AREAS[x] + i for x in g], rng=rng, n=n_refs)
        grades[f"case{i}"] = g
    return references, grades


# ------------------------------------------------------------------------------------------------ language metrics


@requires_java()
def test_identical_single_reference_gives_the_maximum_of_every_metric():
    references, _ = _corpus(n_refs=1)
    out = score_reports(references, {k: v[0] for k, v in references.items()})
    for name in ("bleu_1", "bleu_4", "meteor", "rouge_l"):
        assert out[name] == pytest.approx(1.0, abs=1e-6)
    assert out["cider"] == pytest.approx(10.0, abs=1e-6)  # CIDEr-D maximum: 10 × mean over n of cosine 1
    assert out["cider_x100"] == pytest.approx(100 * out["cider"])
    assert out["n_reports"] == len(GRADE_SETS)


@requires_java()
def test_shuffled_hypotheses_score_lower_and_our_number_is_the_corpus_cider_of_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    references, grades = _corpus(n_refs=3)
    ids = list(references)
    matched = {k: references[k][0] for k in ids}
    shuffled = {k: references[ids[(i + 1) % len(ids)]][0] for i, k in enumerate(ids)}
    ours = score_reports(references, matched, true_grades=grades)
    worse = score_reports(references, shuffled, true_grades=grades)
    for name in ("bleu_4", "meteor", "rouge_l", "cider", "grade_f1_from_text"):
        assert worse[name] < ours[name], name

    # a bare pycocoevalcap call: tokenize references and hypotheses separately, one Cider over the whole split
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": r} for r in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": h}] for k, h in matched.items()})
    corpus_cider, per_case = Cider().compute_score(gts, res)
    assert ours["cider"] == pytest.approx(corpus_cider, rel=1e-12)
    # ... which is NOT the average of CIDEr computed case by case (idf from one case's references only)
    per_sample_average = np.mean([Cider().compute_score({k: gts[k]}, {k: res[k]})[0] for k in ids])
    assert per_sample_average == pytest.approx(0.0) and corpus_cider > 0.5
    assert ours["cider"] == pytest.approx(float(np.mean(per_case)))


def test_score_reports_rejects_mismatched_case_ids():
    with pytest.raises(DataError, match="'b'"):
        score_reports({"a": ["x"]}, {"a": "x", "b": "y"})
    with pytest.raises(DataError, match="'b'"):
        score_reports({"a": ["x"], "b": ["y"]}, {"a": "x"})


def test_cases_without_references_are_skipped_and_an_empty_split_is_nan():
    out = score_reports({"a": [], "b": [" "]}, {"a": "text", "b": "text"})
    assert out["n_reports"] == 0 and math.isnan(out["cider"]) and math.isnan(out["bleu_4"])


# ------------------------------------------------------------------------------------------------ grade extractor

PHRASINGS = [
    ("L4-L5: severe spinal canal stenosis; dural sac area 41 mm2.", {3: 3}),
    ("At L3-L4 there is moderate central stenosis, with a thecal sac area of 62 mm2.", {2: 2}),
    ("L4-L5 severe stenosis (41 mm2).", {3: 3}),
    ("L1-L2 normal (130 mm2).", {0: 0}),
    ("No stenosis at L3-L4.", {2: 0}),
    ("L2-L3: no central canal stenosis.", {1: 0}),
    ("At L5-S1 there is no spinal canal stenosis.", {4: 0}),
    ("Mild stenosis at L4/L5.", {3: 1}),
    ("Moderate canal narrowing at L4-5.", {3: 2}),
    ("l5/s1: severe central canal stenosis", {4: 3}),
    ("Moderate stenosis at L3-L4 and L4-L5.", {2: 2, 3: 2}),
    ("Moderate stenosis at L3-L4 and severe stenosis at L4-L5.", {2: 2, 3: 3}),
    ("L3-L4 mild, L4-L5 severe stenosis.", {2: 1, 3: 3}),
    ("At L4-L5, there is severe stenosis due to a disc bulge and ligamentum flavum thickening.", {3: 3}),
    ("L4-L5: mild disc bulge without spinal canal stenosis.", {3: 0}),
    ("L4-L5: severe facet hypertrophy, no central stenosis.", {3: 0}),
    ("L3-L4: moderate foraminal stenosis.", {}),
    ("L2-L3: mild to moderate spinal canal stenosis.", {1: 2}),
    ("Impression: no spinal canal stenosis at any lumbar level.", dict.fromkeys(range(5), 0)),
    ("L4-L5: moderate stenosis. Impression: severe central stenosis at L4-L5.", {3: 3}),
    ("L4-L5: severe stenosis. No stenosis at the other levels.", {0: 0, 1: 0, 2: 0, 3: 3, 4: 0}),
    ("L5-S1: not assessed.", {}),
    ("L1-L2: not assessed. Impression: no central stenosis at any lumbar level.", {1: 0, 2: 0, 3: 0, 4: 0}),
    ("L4–L5 (en dash): marked narrowing of the canal.", {3: 3}),
    ("At L1-L2 the canal is unremarkable.", {0: 0}),
    ("L2-L3 and L3-L4: mild central stenosis.", {1: 1, 2: 1}),
    ("L3-L5 moderate stenosis.", {}),  # not an adjacent level pair: ignored
    ("Normal disc height at L4-L5 with severe central canal stenosis.", {3: 3}),
]


@pytest.mark.parametrize(("text", "stated"), PHRASINGS, ids=[t[:40] for t, _ in PHRASINGS])
def test_extract_grades_reads_the_grade_of_each_level(text: str, stated: dict[int, int]):
    expected = [stated.get(i, -1) for i in range(5)]
    assert extract_grades(text) == expected


def test_extract_grades_recovers_every_reference_report_of_the_writer():
    rng = np.random.default_rng(3)
    for _ in range(30):
        grades = [int(g) for g in rng.integers(-1, 4, size=5)]
        findings = {"L4-L5": ["disc_bulge", "ligamentum_flavum_thickening", "facet_hypertrophy"]}
        for report in write_reports(grades, [float(a) for a in rng.uniform(20, 150, 5)], rng=rng, findings=findings):
            assert extract_grades(report) == grades, report


def test_grade_f1_counts_unstated_levels_as_misses():
    truth = {"a": [0, 1, 2, 3, -1], "b": [0, 0, 0, 3, 3]}
    perfect = {"a": "L1-L2 normal. L2-L3 mild. L3-L4 moderate. L4-L5 severe.", "b": "L4-L5 and L5-S1 severe. "
               "No stenosis at the other levels."}  # fmt: skip
    assert grade_f1_from_text(perfect, truth) == pytest.approx(1.0)
    silent = {"a": "Nothing to report.", "b": "No stenosis at any level."}
    # normal: b's three normal levels are TP, a's L1-L2 is unstated (FN), b's L4-L5 and L5-S1 become FP;
    # mild, moderate and severe are never extracted: F1 = 0
    tp_normal, fp_normal, fn_normal = 3, 2, 1
    f1_normal = 2 * tp_normal / (2 * tp_normal + fp_normal + fn_normal)
    assert grade_f1_from_text(silent, truth) == pytest.approx(f1_normal / 4)
    with pytest.raises(DataError, match="'c'"):
        grade_f1_from_text({"c": "x"}, truth)


# ------------------------------------------------------------------------------------------------ robustness (JVMs)


@requires_java()
def test_cider_of_a_single_case_is_nan_with_a_warning_not_a_silent_zero():
    references, _ = _corpus(n_refs=3)
    one = {"case2": references["case2"]}
    with pytest.warns(RuntimeWarning, match=r"log\(1/1\) = 0"):
        out = score_reports(one, {"case2": references["case2"][0]})  # a perfect hypothesis
    assert math.isnan(out["cider"]) and math.isnan(out["cider_x100"])
    assert out["bleu_4"] == pytest.approx(1.0, abs=1e-6)  # the other metrics are still computed


@requires_java()
def test_meteor_survives_a_looping_hypothesis_by_capping_it_with_a_warning():
    from lss_vlm.metrics.text import METEOR_MAX_HYPOTHESIS_TOKENS

    references, _ = _corpus(n_refs=3)
    ids = ["case0", "case2"]
    looping = " ".join(["L4-L5 moderate stenosis."] * 2500)  # what a decoder stuck in a loop writes
    with pytest.warns(RuntimeWarning, match=f"first {METEOR_MAX_HYPOTHESIS_TOKENS}"):  # returns: no hang
        out = score_reports({k: references[k] for k in ids}, {"case0": looping, "case2": references["case2"][1]})
    assert 0.0 < out["meteor"] < 1.0 and math.isfinite(out["cider"])
    # the process goes on: a second call works (pycocoevalcap's Meteor would hold its lock forever here)
    again = score_reports({k: references[k] for k in ids}, {k: references[k][0] for k in ids})
    assert again["meteor"] > out["meteor"]


@requires_java()
def test_meteor_timeout_gives_nan_with_a_warning_and_kills_the_jvm():
    from lss_vlm.metrics.text import meteor_score

    # the warning is written only on the timeout path (no timed assertion: the machine's load must not decide)
    with pytest.warns(RuntimeWarning, match="no answer within 0.2 s"):
        score = meteor_score({"a": ["mild stenosis"], "b": ["severe stenosis"]}, {"a": ["mild"], "b": ["x"]}, 0.2)
    assert math.isnan(score)


@requires_java()
def test_a_jvm_that_cannot_start_is_one_clear_error_line(monkeypatch):
    from lss_vlm.metrics.text import JavaError

    references, _ = _corpus(n_refs=3)
    monkeypatch.setenv("LSS_METEOR_XMX", "100000G")  # more heap than the machine can reserve
    with pytest.raises(JavaError, match="METEOR: the Java VM could not start") as info:
        score_reports(references, {k: v[0] for k, v in references.items()})
    assert "\n" not in str(info.value) and "heap" in str(info.value)


def test_missing_java_or_a_bad_timeout_is_a_clear_error(monkeypatch):
    from lss_vlm.metrics.text import JavaError

    monkeypatch.setenv("LSS_JVM_TIMEOUT_S", "soon")
    with pytest.raises(JavaError, match="LSS_JVM_TIMEOUT_S='soon'"):
        score_reports({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y"})
    monkeypatch.delenv("LSS_JVM_TIMEOUT_S")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JavaError, match="`java` is not on PATH"):
        score_reports({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y"})


# ------------------------------------------------------------------------------------------------ references, ceiling


def test_references_of_a_case_paraphrase_the_same_facts_at_the_same_length():
    import re

    rng = np.random.default_rng(3)
    findings = {"L4-L5": ["disc_bulge", "facet_hypertrophy"], "L3-L4": ["ligamentum_flavum_thickening"]}
    refs = write_reports([0, 1, 2, 3, -1], [130.4, 88.0, 63.2, 41.0, None], rng, n=5, findings=findings,
                         ap_diameters=[12.3, 9.0, 7.45, None, None])  # fmt: skip
    assert len(set(refs)) == 5
    lengths = {len(re.sub(r"[.,;:]", " ", r).split()) for r in refs}
    assert len(lengths) == 1  # equal length: CIDEr-D's length penalty (sigma 6) is neutral between them
    for r in refs:
        assert extract_grades(r) == [0, 1, 2, 3, -1]
        assert sorted(re.findall(r"\d+(?:\.\d)? mm2?\b", r)) == sorted(
            ["130 mm2", "88 mm2", "63 mm2", "41 mm2", "12.3 mm", "9.0 mm", "7.5 mm"]
        )  # fmt: skip
        assert "due to" in r or "owing to" in r or "secondary to" in r
    causes = {tuple(re.findall(r"(a disc bulge|facet hypertrophy)", r)) for r in refs}
    assert len(causes) == 2  # the order of causes varies, not the set


@requires_java()
def test_reference_ceiling_is_high_for_paraphrases_and_low_for_templates_of_other_lengths(tiny_phantom):
    import json

    from lss_vlm.data.manifest import read_manifest
    from lss_vlm.metrics.text import reference_ceiling

    df = read_manifest(tiny_phantom)
    references = {r.case_id: json.loads(r.reports) for r in df.itertuples()}
    ceiling = reference_ceiling(references)
    assert ceiling["cider_x100"] >= 100 and ceiling["n_reports"] == len(df)
    # the same facts in a compact third of the length: the Gaussian length penalty hides that the facts agree
    compact = {
        k: v[:2] + [" ".join(f"{lv} grade {g}." for lv, g in zip(("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"),
                                                                  extract_grades(v[0])))]
        for k, v in references.items()
    }  # fmt: skip
    assert reference_ceiling(compact)["cider_x100_min"] < 0.2 * ceiling["cider_x100"]
    with pytest.warns(RuntimeWarning, match="at least 2 cases"):
        assert math.isnan(reference_ceiling({"a": ["x", "x"]})["cider_x100"])
    # held out: the references themselves give the ceiling; other numbers in them lower it
    assert reference_ceiling(references, held_out=references)["cider_x100"] == pytest.approx(ceiling["cider_x100"])
    shifted = {k: [re.sub(r"(\d+) mm2", lambda m: f"{int(m[1]) + 5} mm2", r) for r in v] for k, v in references.items()}
    measured = reference_ceiling(references, held_out=shifted)["cider_x100"]
    assert measured < 0.8 * ceiling["cider_x100"]
    with pytest.raises(DataError, match="one text per reference"):
        reference_ceiling(references, held_out={k: v[:1] for k, v in references.items()})


# ------------------------------------------------------------------------------------------------ BERTScore


def test_bertscore_with_the_offline_minilm_ranks_matching_reports_first():
    from lss_vlm.metrics.text import BERTSCORE_KEYS, bertscore

    references, _ = _corpus(n_refs=3)
    ids = list(references)
    same = bertscore(references, {k: references[k][0] for k in ids})
    others = bertscore({k: v[1:] for k, v in references.items()}, {k: references[k][0] for k in ids})
    shuffled = bertscore(references, {k: references[ids[(i + 1) % len(ids)]][0] for i, k in enumerate(ids)})
    assert set(same) == set(BERTSCORE_KEYS) and same["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < shuffled["bertscore_f1"] < others["bertscore_f1"] < same["bertscore_f1"]  # raw, not rescaled
    assert math.isnan(bertscore({"a": [""]}, {"a": "text"})["bertscore_f1"])


# ------------------------------------------------------------------------------------------------ several report sets


@pytest.mark.slow  # ~20-30 s on 2 cores: the default run stays under 10 min
@requires_java()
def test_report_sets_in_two_jvms_score_exactly_as_separate_calls(monkeypatch):
    import subprocess

    from lss_vlm.metrics.text import close_shared_meteors, reference_ceiling, score_report_sets

    references, _ = _corpus(n_refs=3)
    generated = {k: v[1] for k, v in references.items()} | {"case1": "", "case3": '"unclosed quote at L1-L2 (left)'}
    shuffled = dict(zip(references, [v[0] for v in list(references.values())[::-1]]))
    separate = {"": score_reports(references, generated), "composed/": score_reports(references, shuffled)}
    separate_ceiling = reference_ceiling(references)
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, **kw: started.append(cmd) or popen(cmd, **kw))
    close_shared_meteors()
    together, ceiling = score_report_sets(references, {"": generated, "composed/": shuffled}, ceiling=True)
    assert len(started) == 2  # one PTB tokenizer and one METEOR JVM for both sets and the ceiling
    assert together == separate and ceiling == separate_ceiling  # bit-identical, not approximately equal
    assert together[""]["cider"] != together["composed/"]["cider"]
    again, _ = score_report_sets(references, {"": generated, "composed/": shuffled})
    assert len(started) == 3 and again == together  # the next run of the process reuses the METEOR JVM


@pytest.mark.slow  # ~20-30 s on 2 cores: the default run stays under 10 min
@requires_java()
def test_one_meteor_jvm_scores_several_corpora_and_restarts_after_a_failure():
    from lss_vlm.metrics.text import MeteorScorer, meteor_score

    gts = {"a": ["mild stenosis at l4 l5"], "b": ["severe stenosis at l3 l4"]}
    res = {"a": ["mild stenosis"], "b": ["no stenosis"]}
    with MeteorScorer(0.2) as scorer:
        with pytest.warns(RuntimeWarning, match="no answer within 0.2 s"):
            assert math.isnan(scorer.score(gts, res))
        scorer.timeout = 300.0
        first = scorer.score(gts, res)
        second = scorer.score(gts, {"a": ["mild stenosis at l4 l5"], "b": ["severe stenosis at l3 l4"]})
    assert scorer.starts == 2  # the timed-out JVM was replaced once, then reused
    assert first == meteor_score(gts, res) and 0.0 < first < second
