"""LLM refinement of reports with a tiny from-config causal LM (no download): prompt, LoRA fine-tuning, scoring."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lss_vlm.errors import ConfigError, DataError
from lss_vlm.reports.refine import (
    LevelFindings,
    ReportRefiner,
    build_prompt,
    findings_from_text,
    refine_run_reports,
    score_refined,
    training_examples,
)


def test_prompt_carries_findings_and_draft() -> None:
    findings = {
        "L4-L5": LevelFindings(2, 61.6, ("disc_bulge", "facet_hypertrophy")),
        "L1-L2": LevelFindings(0, math.nan),
    }
    prompt = build_prompt("L4-L5:   moderate stenosis.", findings)
    lines = prompt.splitlines()
    assert (
        lines[1] == "L1-L2: normal"
        and lines[2] == "L4-L5: moderate; dural sac area 62 mm2; causes: disc bulge, facet hypertrophy"
    )
    assert "Draft report: L4-L5: moderate stenosis." in prompt and prompt.endswith("Refined report:")
    read = findings_from_text("L3-L4: severe spinal canal stenosis; dural sac area 41 mm2. L5-S1: no stenosis.")
    assert read["L3-L4"].grade == 3 and read["L3-L4"].area_mm2 == 41.0 and read["L5-S1"].grade == 0
    assert math.isnan(read["L5-S1"].area_mm2)


def test_lora_fine_tuning_lowers_the_reference_loss_and_round_trips(tiny_lm, tiny_phantom, tmp_path) -> None:
    pairs = training_examples(tiny_phantom)
    assert pairs and all(p.startswith("Findings:\nL1-L2: ") and t for p, t in pairs)
    refiner = ReportRefiner(tiny_lm, max_new_tokens=8)
    probe = pairs[:2]
    with torch.no_grad():
        before = float(refiner.loss(probe))
    stats = refiner.fine_tune(pairs, steps=12, lr=5e-3, batch_size=2, rank=4)
    with torch.no_grad():
        after = float(refiner.loss(probe))
    assert after < before and stats["refine/steps"] == 12
    trainable = [n for n, p in refiner.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # the LM itself stays frozen
    refiner.save_adapters(tmp_path / "adapters")
    again = ReportRefiner(tiny_lm, max_new_tokens=8)
    again.load_adapters(tmp_path / "adapters")
    with torch.no_grad():
        assert float(again.loss(probe)) == pytest.approx(after, rel=1e-5)
    assert again.refine([probe[0][0]]) == refiner.refine([probe[0][0]])


def test_refine_run_reports_writes_and_scores(tiny_lm, tmp_path) -> None:
    rows = [
        {
            "case_id": f"c{i}",
            "generated": "L4-L5: mild stenosis.",
            "composed": "L4-L5: severe spinal canal stenosis; dural sac area 40 mm2.",
            "references": ["L4-L5: severe spinal canal stenosis."],
            "true_grades": {"l1_l2": -1, "l2_l3": -1, "l3_l4": -1, "l4_l5": 3, "l5_s1": -1},
        }
        for i in range(2)
    ]
    source = tmp_path / "reports.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = refine_run_reports(source, ReportRefiner(tiny_lm, max_new_tokens=6), tmp_path / "refined.jsonl")
    saved = [json.loads(line) for line in (tmp_path / "refined.jsonl").read_text().splitlines()]
    assert saved == records and [r["case_id"] for r in saved] == ["c0", "c1"]
    assert "L4-L5: severe; dural sac area 40 mm2" in saved[0]["prompt"]  # findings of the composed report
    assert all(isinstance(r["refined"], str) for r in saved)
    scores = score_refined(records, text_metrics=False)
    assert 0.0 <= scores["refined/grade_f1_from_text"] <= 1.0
    assert [r["draft"] for r in saved] == ["L4-L5: mild stenosis."] * 2
    perfect = [{**r, "refined": r["references"][0]} for r in records]
    both = score_refined(perfect, text_metrics=False)
    assert both["refined/grade_f1_from_text"] == 1.0 and both["draft/grade_f1_from_text"] < 1.0  # the draft says mild
    assert both["delta/grade_f1_from_text"] == both["refined/grade_f1_from_text"] - both["draft/grade_f1_from_text"]
    (tmp_path / "broken.jsonl").write_text('{"case_id": "c0"}\n')
    with pytest.raises(DataError, match="record 1 has no case_id/generated"):
        refine_run_reports(tmp_path / "broken.jsonl", ReportRefiner(tiny_lm), tmp_path / "never.jsonl")
    assert not (tmp_path / "never.jsonl").exists()


def test_a_folder_without_a_causal_lm_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        ReportRefiner(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json, so not a Hugging Face model folder"):
        ReportRefiner(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "gpt2"}')  # a config but no weights/tokenizer
    with pytest.raises(ConfigError, match="not a loadable causal LM"):
        ReportRefiner(tmp_path / "empty")
