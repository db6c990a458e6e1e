"""Grammar-constrained report decoding: the told grade, the given causes, each once, none for a normal level."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from lss_vlm.constants import LEVELS
from lss_vlm.models.decoders import ReportDecoder
from lss_vlm.reports.composer import FINDING_THRESHOLDS_MM, report_causes, stated_causes
from lss_vlm.reports.grammar import GRADE_WORDS, ReportGrammar
from lss_vlm.reports.vocabulary import default_vocabulary, tokenize
from lss_vlm.reports.writer import CAUSE_PHRASES

VOCAB = default_vocabulary()
GRAMMAR = ReportGrammar(VOCAB.tokens, VOCAB.eos_id)
CAUSE_WORDS = {"due", "owing", "secondary", "to", "a", "disc", "bulge", "ligamentum", "flavum", "facet"}


def _decode(told, causes, bias: dict[str, float], seed: int = 0, length: int = 260) -> list[str]:
    """Greedy decoding of random scores plus ``bias`` (an adversary), under the grammar alone."""
    rng = np.random.default_rng(seed)
    scores = {VOCAB.index[t]: b for t, b in bias.items()}
    seq: list[int] = []
    for _ in range(length):
        banned = GRAMMAR.constraint(seq, told, causes).ids(len(VOCAB))
        logits = rng.normal(size=len(VOCAB))
        for i, b in scores.items():
            logits[i] += b
        logits[list(banned | {VOCAB.pad_id, VOCAB.bos_id})] = -math.inf  # as the decoder does
        token = int(np.argmax(logits))
        if token == VOCAB.eos_id:
            break
        seq.append(token)
    return [VOCAB.tokens[i] for i in seq]


def _sentences(tokens: list[str]) -> dict[str, list[str]]:
    """Level name -> the tokens of its sentence (up to the header)."""
    out: dict[str, list[str]] = {}
    current = None
    for t in tokens:
        if t in {"Impression", "Conclusion", "Summary"}:
            break
        if t in LEVELS:
            current = t
            out[t] = []
        elif current is not None:
            out[current].append(t)
    return out


def _causes_in(sentence: list[str]) -> list[str]:
    text = " ".join(sentence)
    return [k for k, phrase in CAUSE_PHRASES.items() for _ in re.finditer(re.escape(phrase), text)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_level_states_the_told_grade_and_exactly_its_causes_once(seed):
    told = [0, 1, 2, 3, 0]
    causes = {
        "L1-L2": ["disc_bulge"],  # told normal: must not be written
        "L2-L3": ["facet_hypertrophy"],
        "L3-L4": ["disc_bulge", "ligamentum_flavum_thickening"],
        "L4-L5": ["facet_hypertrophy", "disc_bulge", "ligamentum_flavum_thickening"],
    }
    adversary = {w: 4.0 for w in CAUSE_WORDS | {"and", ",", "severe", "mild"}} | {".": 3.0, "Impression": 2.0}
    tokens = _decode(told, causes, adversary | {"<eos>": 8.0}, seed=seed)  # it would stop at once
    sentences = _sentences(tokens)
    assert list(sentences) == list(LEVELS)  # every level, in order, once
    for level, grade in zip(LEVELS, told):
        sentence = sentences[level]
        assert sentence[:2] == [":", GRADE_WORDS[grade]]  # the told grade's word opens the sentence
        assert not set(GRADE_WORDS) - {GRADE_WORDS[grade]} & set(sentence)  # and no other grade word
        written = _causes_in(sentence)
        expected = causes.get(level, []) if grade > 0 else []
        assert sorted(written) == sorted(expected), (level, " ".join(sentence))  # each given cause once, no other
    assert tokens[-1] == "."  # <eos> only after the impression's full stop


def test_a_normal_level_gets_no_cause_link_even_when_the_decoder_wants_one():
    tokens = _decode([0] * 5, None, {"due": 9.0, "owing": 9.0, "to": 9.0, "a": 9.0, ".": 3.0, "Summary": 2.0})
    for level, sentence in _sentences(tokens).items():
        assert not CAUSE_WORDS & set(sentence), (level, sentence)


def test_without_given_causes_the_decoder_chooses_but_never_repeats_a_cause():
    bias = {w: 4.0 for w in CAUSE_WORDS | {"and", ","}} | {".": 2.0, "Impression": 2.0}
    for seed in range(4):
        sentences = _sentences(_decode([2] * 5, None, bias, seed=seed))
        for sentence in sentences.values():
            written = _causes_in(sentence)
            assert len(written) == len(set(written)), " ".join(sentence)  # no "a disc bulge and a disc bulge"


def test_no_word_follows_itself_even_when_the_decoder_wants_it():
    """A cause-head run wrote "...and a disc bulge; dural dural sac area 106 mm2": the grammar now bans it."""
    bias = {"dural": 6.0, "sac": 3.0, "area": 2.0, "stenosis": 4.0, ".": 1.0, "Impression": 1.0}
    for seed in range(3):
        tokens = _decode([1, 0, 2, 0, 1], {"L1-L2": ["disc_bulge"]}, bias, seed=seed)
        for level, sentence in _sentences(tokens).items():
            pairs = list(zip(sentence, sentence[1:]))
            assert all(a != b for a, b in pairs), (level, " ".join(sentence))


def test_a_level_sentence_quotes_only_its_own_slots_each_once_with_its_unit():
    bias = {s: 6.0 for s in VOCAB.tokens if s.startswith("<area_") or s.startswith("<ap_")}
    tokens = _decode([1] * 5, {lv: ["disc_bulge"] for lv in LEVELS}, bias | {";": 5.0, ".": 1.0, "Summary": 2.0})
    for level, sentence in _sentences(tokens).items():
        slots = [t for t in sentence if t.startswith(("<area_", "<ap_"))]
        assert set(slots) <= {f"<area_{level}>", f"<ap_{level}>"} and len(slots) == len(set(slots))
        for i, t in enumerate(sentence[:-1]):
            if t in slots:
                assert sentence[i + 1] == ("mm2" if t.startswith("<area_") else "mm")


def test_the_learned_decoder_follows_the_grammar_with_beams_and_causes():
    torch.manual_seed(0)
    decoder = ReportDecoder(VOCAB, memory_dim=8, width=16, num_layers=1, num_heads=2).eval()
    with torch.no_grad():  # an untrained decoder that likes to end sentences, to link causes and to stop
        bias = torch.zeros(len(VOCAB))
        bias[[VOCAB.index["."], VOCAB.index["due"], VOCAB.eos_id]] = torch.tensor([50.0, 40.0, 30.0])
        decoder.lm.lm_head.bias = torch.nn.Parameter(bias)
    told = [[3, 0, 1, 2, 0], [0, 0, 0, 0, 0]]
    probs = torch.nn.functional.one_hot(torch.tensor(told), 4).float()
    memory, mask = decoder.memory(None, None, probs)
    causes = [{lv: ["facet_hypertrophy"] for lv in LEVELS}, {lv: ["disc_bulge"] for lv in LEVELS}]
    for beams in (1, 2):
        texts = decoder.generate(memory, mask, probs, num_beams=beams, causes=causes)
        for text, grades in zip(texts, told):
            sentences = _sentences(tokenize(text))
            assert [s[1] for s in sentences.values()] == [GRADE_WORDS[g] for g in grades], text
            assert not any("a disc bulge" in " ".join(s) for s in sentences.values())  # normal: none; else facet
    with pytest.raises(ValueError, match="cause maps"):
        decoder.generate(memory, mask, probs, causes=causes[:1])


def test_stated_causes_are_the_measured_findings_or_the_most_pronounced_one():
    above = {"disc_protrusion_mm": 3.0, "lf_thickness_mm": 5.0, "facet_size_mm": 1.0}
    assert stated_causes(above) == ("disc_bulge", "ligamentum_flavum_thickening")  # 3.0/1.5 > 5.0/4.4
    below = {
        "disc_protrusion_mm": 0.1 * FINDING_THRESHOLDS_MM["disc_bulge"],
        "lf_thickness_mm": 0.5 * FINDING_THRESHOLDS_MM["ligamentum_flavum_thickening"],
        "facet_size_mm": 0.9 * FINDING_THRESHOLDS_MM["facet_hypertrophy"],
    }
    assert stated_causes(below) == ("facet_hypertrophy",)  # a stenosis has a cause: the most pronounced
    assert stated_causes({"disc_protrusion_mm": math.nan}) == ()  # nothing measured, nothing stated
    assert report_causes({"L4-L5": above, "L5-S1": {}}) == {
        "L4-L5": ("disc_bulge", "ligamentum_flavum_thickening"),
        "L5-S1": (),
    }


def test_the_measurement_phrase_after_a_cause_list_keeps_its_comma():
    text = "L1-L2: mild spinal canal stenosis due to a disc bulge; dural sac area <area_L1-L2> mm2"
    seq = [VOCAB.index[t] for t in tokenize(text)]
    banned = GRAMMAR.constraint(seq, [1, 0, 0, 0, 0], {"L1-L2": ["disc_bulge"]}).ids(len(VOCAB))
    assert VOCAB.index[","] not in banned and VOCAB.index["<area_L1-L2>"] in banned  # once
    after_list = GRAMMAR.constraint(seq[:11], [1, 0, 0, 0, 0], {"L1-L2": ["disc_bulge"]}).ids(len(VOCAB))
    assert VOCAB.index[","] in after_list and VOCAB.index["and"] in after_list and VOCAB.index[";"] not in after_list
    comma = [*seq, VOCAB.index[","]]  # the measurement phrase's comma does not reopen the cause list
    for causes in (None, {"L1-L2": ["disc_bulge", "facet_hypertrophy"]}):
        banned = GRAMMAR.constraint(comma, [1, 0, 0, 0, 0], causes).ids(len(VOCAB))
        assert {VOCAB.index[w] for w in ("a", "facet", "ligamentum", "and")} <= banned
        assert VOCAB.index["AP"] not in banned
