"""Issue 13: word-level report vocabulary, measurement slots, the report decoder's conditioning and decoding guards."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from lss_vlm.constants import LEVELS
from lss_vlm.errors import DataError
from lss_vlm.metrics.text import extract_grades
from lss_vlm.models.decoders import NUM_STATES, ReportDecoder, banned_by_ngram
from lss_vlm.reports.vocabulary import (
    SLOTS,
    UNK,
    ReportVocabulary,
    default_vocabulary,
    detokenize,
    exact_numbers,
    fill_slots,
    quoted_numbers,
    remeasure,
    to_slots,
    tokenize,
)
from lss_vlm.reports.writer import write_reports

GRADES = [0, 1, 2, 3, 0]
AREAS = [130.4, 88.0, 63.2, 41.0, 120.0]
APS = [12.3, 9.0, 7.45, 4.2, 11.0]
FINDINGS = {"L2-L3": ["disc_bulge"], "L3-L4": ["facet_hypertrophy", "disc_bulge"], "L4-L5": ["facet_hypertrophy"]}


def _refs(n: int = 3, seed: int = 0, **kw) -> list[str]:
    args = {"findings": FINDINGS, "ap_diameters": APS, "areas": AREAS, **kw}
    return write_reports(GRADES, rng=np.random.default_rng(seed), n=n, **args)


def test_tokens_keep_levels_and_units_whole_and_round_trip():
    text = _refs(1)[0]
    tokens = tokenize(text)
    assert "L4-L5" in tokens and "L5-S1" in tokens and "mm2" in tokens and "7.5" in tokens
    assert detokenize(tokens) == text


def test_vocabulary_from_training_reports_with_min_frequency_unk_and_slots(tmp_path):
    reports = _refs(3) + ["L4-L5: severe spinal canal stenosis with a synovial cyst."]  # 'synovial', 'cyst' once
    vocab = ReportVocabulary.build(reports, min_freq=2)
    assert vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and set(SLOTS) <= set(vocab.tokens)
    assert "synovial" not in vocab.tokens and "stenosis" in vocab.tokens and "L4-L5" in vocab.tokens
    ids = vocab.encode(reports[-1])
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id and vocab.unk_id in ids
    assert UNK in vocab.decode(ids) and not any(ch.isdigit() for ch in vocab.decode(vocab.encode(reports[0]))[6:20])
    assert vocab.max_length >= vocab.length_p95 and vocab.max_length >= max(len(vocab.encode(r)) for r in reports)
    assert all(not t[0].isdigit() for t in vocab.tokens)  # measurement numbers never become words
    again = ReportVocabulary.load(vocab.save(tmp_path / "report_vocab.json"))
    assert again.tokens == vocab.tokens and again.max_length == vocab.max_length
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="bad.json"):
        ReportVocabulary.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="no reference report"):
        ReportVocabulary.build(["", " "])


def test_numbers_become_typed_slots_and_are_filled_from_measurements():
    text = _refs(1)[0]
    slotted = detokenize(to_slots(tokenize(text)))
    assert "<area_L3-L4>" in slotted and "<ap_L5-S1>" in slotted and not any(c.isdigit() for c in slotted.replace(
        "L1-L2", "").replace("L2-L3", "").replace("L3-L4", "").replace("L4-L5", "").replace("L5-S1", "").replace(
        "mm2", "").replace("<area_", "").replace("<ap_", ""))  # fmt: skip
    measured = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, AREAS, APS)}
    assert fill_slots(slotted, measured) == text  # every number traces to a measurement
    # a level that cannot be measured is written as the reference writer writes it: without the measurement
    for drop_area, drop_ap in ((True, False), (False, True), (True, True)):
        areas = [math.nan if drop_area and lv == "L4-L5" else a for lv, a in zip(LEVELS, AREAS)]
        aps = [math.nan if drop_ap and lv == "L4-L5" else d for lv, d in zip(LEVELS, APS)]
        expected = _refs(1, areas=areas, ap_diameters=aps)[0]
        partial = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, areas, aps)}
        assert fill_slots(slotted, partial) == expected


def test_remeasure_rewrites_every_number_of_a_reference_and_nothing_else():
    refs = _refs(3)
    other = [a + 7.0 for a in AREAS], [d - 1.0 for d in APS]
    measured = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, *other)}
    for ref, expected in zip(refs, _refs(3, areas=other[0], ap_diameters=other[1])):
        assert remeasure(ref, measured) == expected  # same wording, the other numbers
    same = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, AREAS, APS)}
    assert [remeasure(r, same) for r in refs] == refs
    # a level without a measurement loses the phrase, as the writer omits it
    areas = [math.nan if lv == "L2-L3" else a for lv, a in zip(LEVELS, AREAS)]
    partial = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, areas, APS)}
    assert remeasure(refs[0], partial) == _refs(1, areas=areas)[0]


def test_quoted_numbers_and_exact_numbers_count_what_cider_can_credit():
    ref = _refs(1)[0]
    quoted = quoted_numbers(ref)
    assert quoted["<area_L1-L2>"] == "130" and quoted["<ap_L3-L4>"] == "7.5" and len(quoted) == 10  # 7.45 prints 7.5
    same = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, AREAS, APS)}
    assert exact_numbers(ref, same) == {"area": (5, 5), "ap": (5, 5)}
    # 130.4 -> 130.6 prints 131 (not exact); 88.0 -> 87.6 prints 88 (exact); an unmeasured level is never exact
    other = {**same, "L1-L2": {"area_mm2": 130.6, "ap_mm": 12.34}, "L2-L3": {"area_mm2": 87.6, "ap_mm": 9.06}}
    other["L5-S1"] = {"area_mm2": math.nan, "ap_mm": math.nan}
    assert exact_numbers(ref, other) == {"area": (3, 5), "ap": (3, 5)}
    assert exact_numbers("L4-L5: severe stenosis.", same) == {"area": (0, 0), "ap": (0, 0)}
    # numpy measurements format as the writer's format_area / format_ap do; booleans and None are not measurements
    as_numpy = {lv: {"area_mm2": np.float32(a), "ap_mm": np.float64(d)} for lv, a, d in zip(LEVELS, AREAS, APS)}
    assert exact_numbers(ref, as_numpy) == {"area": (5, 5), "ap": (5, 5)} and fill_slots(ref, as_numpy) == ref
    odd = {**same, "L1-L2": {"area_mm2": True, "ap_mm": None}, "L2-L3": None}
    assert exact_numbers(ref, odd) == {"area": (3, 5), "ap": (3, 5)}


def test_decoder_states_follow_the_level_being_written():
    vocab = default_vocabulary()
    decoder = ReportDecoder(vocab, memory_dim=8, width=16, num_layers=1, num_heads=2)
    tokens = ["<bos>", *to_slots(tokenize("L1-L2: no stenosis. L4-L5: severe stenosis. Impression: severe at L4-L5."))]
    ids = torch.tensor([[vocab.index.get(t, vocab.unk_id) for t in tokens]])
    states = decoder.states(ids)[0].tolist()
    by_token = list(zip(tokens, states))
    assert by_token[0] == ("<bos>", 0) and by_token[1] == ("L1-L2", 1) and by_token[3] == ("no", 1)
    assert (
        ("severe", 4) in by_token
        and by_token[-1] == (".", NUM_STATES - 1)
        and by_token[-2] == ("L4-L5", NUM_STATES - 1)
    )
    assert decoder.lm.lm_head.weight.data_ptr() == decoder.lm.transformer.wte.weight.data_ptr()  # tied embeddings


def test_repeated_ngram_guard_and_length_cap_stop_a_looping_decoder():
    assert banned_by_ngram([1, 2, 3, 1, 2], 3) == {3} and banned_by_ngram([1, 2, 3], 3) == set()
    vocab = default_vocabulary()
    torch.manual_seed(0)
    decoder = ReportDecoder(vocab, memory_dim=8, width=16, num_layers=1, num_heads=2, no_repeat_ngram=4).eval()
    with torch.no_grad():  # a decoder that always prefers the same word: it would loop forever
        decoder.lm.lm_head.weight.zero_()
        decoder.lm.lm_head.weight[vocab.index["stenosis"]] = 0.0
        bias = torch.full((len(vocab),), -5.0)
        bias[vocab.index["stenosis"]], bias[vocab.index["canal"]], bias[vocab.eos_id] = 5.0, 4.0, -50.0
        decoder.lm.lm_head.bias = torch.nn.Parameter(bias)
    probs = torch.nn.functional.one_hot(torch.tensor([GRADES]), 4).float()
    memory, mask = decoder.memory(None, None, probs)
    for beams in (1, 3):
        text = decoder.generate(memory, mask, probs, num_beams=beams, max_length=40)[0]
        tokens = tokenize(text)
        assert len(tokens) <= 39
        grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
        assert len(grams) == len(set(grams))  # no 4-gram twice


def test_text_only_warm_up_teaches_the_decoder_to_state_the_grades_it_is_told():
    from lss_vlm.models import build_model

    rng = np.random.default_rng(0)
    reports, grades = [], []
    for _ in range(24):
        g = [int(x) for x in rng.choice(4, len(LEVELS), p=[0.6, 0.2, 0.12, 0.08])]  # mostly normal, as patients
        reports.append(write_reports(g, [float(x) for x in rng.uniform(30, 160, 5)], rng, n=3))
        grades.append(g)
    torch.manual_seed(0)
    model = build_model("spca_vlm", text_encoder="tiny-bert", embed_dim=32, report_width=32, report_layers=2,
                        report_heads=2, report_warmup_steps=150)  # fmt: skip
    stats = model.warm_up_report_decoder(reports, grades, seed=0)
    assert stats["report_warmup/last_ce"] < 0.4 * stats["report_warmup/first_ce"]
    decoder = model.report_decoder.eval()
    told = [g for g in grades if len(set(g)) >= 3][:2] + [[0, 0, 0, 0, 0]]  # grade patterns it was trained on
    probs = torch.nn.functional.one_hot(torch.tensor(told), 4).float()
    memory, mask = decoder.memory(None, None, probs)
    texts = decoder.generate(memory, mask, probs)
    body = [re.split(r"\b(?:Impression|Conclusion|Summary):", t)[0] for t in texts]
    assert all(len(b) < len(t) and "<area_" in b for b, t in zip(body, texts)), texts  # level sentences, then a summary
    assert [extract_grades(b) for b in body] == told, texts  # the level sentences state the grades told
    # (the summary line, which must pick the worst levels, is learned more slowly: not asserted after 150 steps)


def test_the_summary_line_may_only_restate_the_worst_told_grade_and_its_levels_once():
    vocab = default_vocabulary()
    decoder = ReportDecoder(vocab, memory_dim=8, width=16, num_layers=1, num_heads=2)
    ids = vocab.index
    tokens = ["<bos>", *tokenize("L3-L4: moderate stenosis. Impression: moderate stenosis at L3-L4 and")]
    seq = [ids[t] for t in tokens]
    told = [0, 1, 2, 2, 0]  # worst: moderate at L3-L4 and L4-L5
    banned = decoder.summary_bans(seq, told)
    assert ids["L4-L5"] not in banned and {ids["L3-L4"], ids["L1-L2"], ids["L2-L3"], ids["L5-S1"]} <= banned
    assert ids["moderate"] not in banned and {ids["mild"], ids["severe"], ids["no"]} <= banned
    assert ids["and"] not in banned and ids["and"] in decoder.summary_bans([*seq, ids["L4-L5"]], told)
    assert decoder.summary_bans(seq[:6], told) == set()  # before the summary: free
    normal = decoder.summary_bans(seq[:8], [0, 0, 0, 0, 0])
    assert all(ids[lv] in normal for lv in LEVELS) and ids["no"] not in normal and ids["mild"] in normal
