"""Image-text contrastive alignment (issue 17 part 2): the symmetric InfoNCE, level sentences, the model's term,
the trainer's weight (0 = exactly the old objective) and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_trainer import SquaresDataset, collate, settings
from torch.utils.data import DataLoader

import losses
from benchmarks.cli import main as cli
from benchmarks.config import load_config
from lss_vlm.constants import LEVELS, NUM_VIEWS
from lss_vlm.engine.batches import level_references
from lss_vlm.engine.seeding import seed_everything
from lss_vlm.engine.trainer import Trainer
from lss_vlm.errors import ConfigError
from lss_vlm.models import build_model
from lss_vlm.models.contrastive import symmetric_info_nce
from lss_vlm.reports.writer import level_sentences, write_reports

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
TINY = dict(
    text_encoder="tiny-bert", image_size=SIZE, embed_dim=16, num_heads=2, decoder_channels=(16, 8, 8, 8),
    grade_hidden=16, report_width=16, report_layers=1, report_heads=2,
)  # fmt: skip


def test_info_nce_is_lower_for_matched_than_for_shuffled_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(12, 8, generator=g)
    text = image + 0.1 * torch.randn(12, 8, generator=g)
    matched = symmetric_info_nce(image, text, 0.1)
    shuffled = symmetric_info_nce(image, text[torch.randperm(12, generator=g)], 0.1)
    assert matched < 0.5 < shuffled
    assert symmetric_info_nce(text, image, 0.1) == pytest.approx(float(matched))  # symmetric in its arguments


def test_info_nce_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(1)
    image, text, tau = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), 0.07
    s = F.normalize(image, dim=1) @ F.normalize(text, dim=1).T / tau
    i2t = -(s.diag() - torch.logsumexp(s, dim=1)).mean()
    t2i = -(s.diag() - torch.logsumexp(s, dim=0)).mean()
    assert float(symmetric_info_nce(image, text, tau)) == pytest.approx(float(0.5 * (i2t + t2i)), rel=1e-5)
    assert float(symmetric_info_nce(image[:1], text[:1], tau)) == 0.0  # one pair: no negatives, no contrast
    with pytest.raises(ValueError, match="temperature"):
        symmetric_info_nce(image, text, 0.0)


def test_level_sentences_split_a_written_report_by_level() -> None:
    report = write_reports([0, 1, 2, 3, -1], [120, 90, 60, 40, None], np.random.default_rng(3), n=1)[0]
    sentences = level_sentences(report)
    assert list(sentences) == list(LEVELS)
    assert sentences["L3-L4"].startswith("L3-L4: moderate") and sentences["L3-L4"].endswith("60 mm2.")
    assert all(":" not in s.split(":", 1)[1] for s in sentences.values())  # the impression stays out
    refs = level_references([[report], []], epoch=0)
    assert refs[0][:4] == [sentences[lv] for lv in LEVELS[:4]] and refs[0][4] is None  # "not assessed": no pair
    assert refs[1] == [None] * len(LEVELS)


def reported_items(n: int, seed: int) -> list[dict]:
    """SquaresDataset cases with reports in the reference writer's template (one sentence per level)."""
    items = SquaresDataset(n, seed).items
    rng = np.random.default_rng(seed)
    for item in items:
        item["reports"] = write_reports(item["grades"].tolist(), [120, 90, 60, 40, 80], rng, n=2)
    return items


def test_model_term_has_gradients_and_needs_its_head() -> None:
    torch.manual_seed(0)
    model = build_model("spca_vlm", contrastive_head=True, **TINY)
    views = torch.randn(2, NUM_VIEWS, 1, SIZE, SIZE)
    sentences = level_references([it["reports"] for it in reported_items(2, 0)], epoch=0)
    out = model(views, contrastive_sentences=sentences)
    loss = out["contrastive_loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.contrastive.image_proj.weight.grad.abs().sum() > 0
    assert model.grade_head.key_proj.weight.grad.abs().sum() > 0  # the image features are what it aligns
    none = model(views, contrastive_sentences=[[None] * len(LEVELS)] * 2)["contrastive_loss"]
    assert float(none.detach()) == 0.0
    with pytest.raises(ConfigError, match="contrastive_head"):
        build_model("spca_vlm", **TINY)(views, contrastive_sentences=sentences)


def trainer(tmp: Path, head: bool, **overrides) -> Trainer:
    seed_everything(0)
    model = build_model("spca_vlm", contrastive_head=True, **TINY)
    if not head:
        model.contrastive = None  # the same weights, without the head
    data = SquaresDataset(6, seed=1)
    data.items = reported_items(6, seed=1)
    shuffle = torch.Generator().manual_seed(0)
    loader = DataLoader(data, batch_size=3, shuffle=True, collate_fn=collate, generator=shuffle)
    val = DataLoader(SquaresDataset(3, seed=2), batch_size=3, collate_fn=collate)
    return Trainer(model, losses.build_loss("dice"), loader, val, settings(epochs=1, **overrides), tmp / "ckpt")


def test_weight_zero_is_exactly_the_old_objective_and_weight_logs_its_column(tmp_path: Path) -> None:
    off = trainer(tmp_path / "a", head=False).fit().history[0]
    zero = trainer(tmp_path / "b", head=True, lambda_con=0.0).fit().history[0]
    on = trainer(tmp_path / "c", head=True, lambda_con=0.5).fit().history[0]
    assert "train/con_loss" not in off and "train/con_loss" not in zero
    assert zero["train/loss"] == off["train/loss"]  # exactly: the head changes nothing when its weight is 0
    assert on["train/con_loss"] > 0 and np.isfinite(on["train/con_loss"])
    assert on["train/loss"] != off["train/loss"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lambda_contrastive=-0.1", "train.lambda_contrastive"),
        ("model.params.contrastive_temperature=0", "model.params.contrastive_temperature"),
    ],
)
def test_bad_contrastive_settings_are_one_error_line(override: str, key: str, capsys) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
    assert cli(["validate", str(REPO / "configs/experiments/phantom_quick.yaml"), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lss-bench validate: error:") and key in err[0]


def test_weight_builds_the_head_and_a_model_without_one_is_refused() -> None:
    cfg = load_config(None, ["train.lambda_contrastive=0.2"])
    assert cfg.model.params["contrastive_head"] is True
    assert load_config(None, []).model.params["contrastive_head"] is False  # off by default: no extra weights
    with pytest.raises(ConfigError, match="train.lambda_contrastive.*unet_image_only"):
        load_config(None, ["train.lambda_contrastive=0.2", "model.name=unet_image_only"])
