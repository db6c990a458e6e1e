"""The cause head (issue 13): cause targets from the manifest, the head, its loss term, the causes read from text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from lss_vlm.constants import CAUSES, FINDINGS_COLUMN, LEVELS
from lss_vlm.data.dataset import build_dataloader
from lss_vlm.data.manifest import parse_findings
from lss_vlm.errors import DataError
from lss_vlm.metrics.text import cause_f1_from_text, extract_causes
from lss_vlm.models import build_model


def tiny_vlm(**params):
    torch.manual_seed(0)
    return build_model(
        "spca_vlm", text_encoder="tiny-bert", image_size=32, embed_dim=16, num_heads=2,
        decoder_channels=(16, 8, 8, 8), grade_hidden=16, report_width=16, report_layers=1, report_heads=2, **params,
    )  # fmt: skip


def test_parse_findings_reads_the_phantom_cell_and_names_what_is_wrong() -> None:
    cell = json.dumps({"L4-L5": ["ligamentum_flavum_thickening", "disc_bulge"]})
    assert parse_findings(cell) == {"L4-L5": ["ligamentum_flavum_thickening", "disc_bulge"]}
    assert parse_findings("") == {} and parse_findings(float("nan")) == {}
    with pytest.raises(DataError, match="not valid JSON"):
        parse_findings("{L4-L5: disc}")
    with pytest.raises(DataError, match="unknown level 'L6-S1'"):
        parse_findings(json.dumps({"L6-S1": ["disc_bulge"]}))
    with pytest.raises(DataError, match="L4-L5 has causes \\['spondylolisthesis'\\]"):
        parse_findings(json.dumps({"L4-L5": ["spondylolisthesis"]}))


def test_batch_causes_are_multi_hot_on_stenotic_levels_and_nan_elsewhere(tiny_phantom: Path) -> None:
    df = pd.read_csv(tiny_phantom).set_index("case_id")
    batch = next(iter(build_dataloader(tiny_phantom, "train", spatial_size=64, batch_size=4, seed=0, augment=False)))
    causes = batch["causes"]
    assert causes.shape == (4, len(LEVELS), len(CAUSES)) and causes.dtype == torch.float32
    stenotic_seen = 0
    for i, case_id in enumerate(batch["case_id"]):
        findings = json.loads(df.loc[case_id, FINDINGS_COLUMN])
        for j, level in enumerate(LEVELS):
            if int(batch["grades"][i, j]) >= 1:
                expected = [float(c in findings[level]) for c in CAUSES]
                assert causes[i, j].tolist() == expected and sum(expected) >= 1
                stenotic_seen += 1
            else:
                assert torch.isnan(causes[i, j]).all()
    assert stenotic_seen > 0


def test_a_manifest_without_findings_gives_unknown_causes(tiny_phantom: Path, tmp_path: Path) -> None:
    df = pd.read_csv(tiny_phantom).drop(columns=[FINDINGS_COLUMN])
    manifest = tmp_path / "manifest.csv"
    for column in [c for c in df.columns if c.startswith(("img_", "seg_"))]:
        df[column] = [str(tiny_phantom.parent / p) if isinstance(p, str) else p for p in df[column]]
    df.to_csv(manifest, index=False)
    batch = next(iter(build_dataloader(manifest, "train", spatial_size=64, batch_size=2, seed=0, augment=False)))
    assert torch.isnan(batch["causes"]).all()


def test_extract_causes_reads_each_level_clause() -> None:
    text = (
        "L1-L2: no spinal canal stenosis; dural sac area 198 mm2. L3-L4: mild spinal canal stenosis owing to a disc "
        "bulge and ligamentum flavum thickening; dural sac CSA 80 mm2. L5-S1: moderate central canal narrowing "
        "secondary to facet hypertrophy. Impression: mild spinal canal stenosis at L3-L4 and L5-S1."
    )
    assert extract_causes(text) == [set(), set(), {"disc_bulge", "ligamentum_flavum_thickening"}, set(),
                                     {"facet_hypertrophy"}]  # fmt: skip
    assert extract_causes("L4/5: severe stenosis with facet arthropathy and LF buckling.")[3] == {
        "facet_hypertrophy", "ligamentum_flavum_thickening"
    }  # fmt: skip


def test_cause_f1_counts_cause_triples_on_levels_with_known_causes() -> None:
    text = "L3-L4: mild stenosis due to a disc bulge and facet hypertrophy. L5-S1: mild stenosis due to a disc bulge."
    truth = {"a": [None, None, ["disc_bulge"], ["facet_hypertrophy"], ["disc_bulge", "ligamentum_flavum_thickening"]]}
    # TP: L3-L4 disc, L5-S1 disc; FP: L3-L4 facet; FN: L4-L5 facet, L5-S1 LF -> 2·2 / (2·2 + 1 + 2)
    assert cause_f1_from_text({"a": text}, truth) == pytest.approx(4 / 7)
    assert math.isnan(cause_f1_from_text({"a": text}, {"a": [None] * len(LEVELS)}))


def test_the_cause_head_feeds_its_causes_to_the_report_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_vlm(cause_head=True).eval()
    assert tiny_vlm().eval().cause_head is None
    views = torch.rand(2, 7, 1, 32, 32)
    out = model(views)
    assert out["cause_logits"].shape == (2, len(LEVELS), len(CAUSES))
    logits = torch.tensor([[[3.0, -3.0, 1.0]] * len(LEVELS), [[-3.0, -2.0, -1.0]] * len(LEVELS)])
    predicted = model.predicted_causes(logits)
    assert predicted[0]["L4-L5"] == ["disc_bulge", "facet_hypertrophy"]  # above 0.5, most probable first
    assert predicted[1]["L4-L5"] == ["facet_hypertrophy"]  # none above 0.5: the most probable one
    seen = {}

    def capture(memory, memory_mask, probs, num_beams, max_length, causes):
        seen["causes"] = causes
        return ["x"] * memory.shape[0]

    monkeypatch.setattr(model.report_decoder, "generate", capture)
    model.generate_reports(views)
    assert seen["causes"] == model.predicted_causes(model(views)["cause_logits"])
    model.generate_reports(views, causes=[{"L4-L5": ["disc_bulge"]}] * 2)  # the caller's causes win
    assert seen["causes"] == [{"L4-L5": ["disc_bulge"]}] * 2


def test_the_trainer_learns_causes_only_with_a_cause_head(tmp_path: Path) -> None:
    import losses
    from lss_vlm.engine.trainer import Trainer
    from tests.test_trainer import SquaresDataset, collate, settings

    train, val = SquaresDataset(6, seed=1), SquaresDataset(3, seed=2)
    for data in (train, val):
        for i, item in enumerate(data.items):  # one known cause pattern on the stenotic levels, NaN elsewhere
            item["causes"] = torch.full((len(LEVELS), len(CAUSES)), math.nan)
            item["causes"][item["grades"] >= 1] = torch.tensor([1.0, 0.0, float(i % 2)])
    rows = {}
    for head in (False, True):
        loader = torch.utils.data.DataLoader(train, batch_size=3, collate_fn=collate)
        run = Trainer(
            tiny_vlm(cause_head=head, report_max_length=24), losses.build_loss("dice_ce"), loader,
            torch.utils.data.DataLoader(val, batch_size=3, collate_fn=collate),
            settings(epochs=3, lambda_cause=0.5), tmp_path / str(head),
        )  # fmt: skip
        rows[head] = run.fit().history
    assert all(r["train/cause_loss"] == 0.0 for r in rows[False])
    first, last = rows[True][0]["train/cause_loss"], rows[True][-1]["train/cause_loss"]
    assert 0.3 < first < 1.5 and last < first  # BCE near ln 2 at the start, then learning
    row = rows[True][-1]
    expected = row["train/seg_loss"] + 0.5 * row["train/cls_loss"] + 0.2 * row["train/txt_loss"] + 0.5 * last
    assert row["train/loss"] == pytest.approx(expected, rel=1e-5)
