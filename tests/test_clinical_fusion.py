"""Clinical tabular fusion (issue 17 part 1): normalisation, mask tokens, grade and report paths, manifest columns,
config errors, the correlation figure and a run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmarks.cli import main as cli
from benchmarks.clinical import FIGURE_FILE, PREDICTIONS_FILE, STATS_FILE, plot_clinical_correlation
from benchmarks.config import load_config
from lss_vlm.constants import CLINICAL_COLUMNS, GRADES, NUM_VIEWS
from lss_vlm.data.dataset import build_dataloader
from lss_vlm.data.manifest import read_manifest
from lss_vlm.engine.batches import model_inputs
from lss_vlm.errors import ConfigError, DataError
from lss_vlm.models import build_model
from lss_vlm.models.clinical import fit_clinical_stats

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
TINY = dict(
    text_encoder="tiny-bert", image_size=SIZE, embed_dim=16, num_heads=2, decoder_channels=(16, 8, 8, 8),
    grade_hidden=16, report_width=16, report_layers=1, report_heads=2, report_max_length=24,
)  # fmt: skip
STATS = {"columns": list(CLINICAL_COLUMNS), "mean": [60.0, 0.5, 27.0, 12.0, 0.5, 30.0], "std": [10, 0.5, 4, 6, 0.5, 15]}


def tiny_model(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("spca_vlm", **TINY, **options).eval()


def views(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, NUM_VIEWS, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def clinical(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


PATIENT = [70.0, 1.0, 31.0, 24.0, 1.0, 55.0]
OTHER = [45.0, 0.0, 22.0, 2.0, 0.0, 5.0]


@pytest.fixture(scope="module")
def fused() -> torch.nn.Module:
    return tiny_model(clinical_fusion=True, clinical_stats=STATS)


def grade_logits(model: torch.nn.Module, values: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return model(views(len(values) if values is not None else 2), clinical=values)["grade_logits"]


def test_stats_ignore_missing_values_and_keep_constant_columns_finite() -> None:
    values = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]])
    stats = fit_clinical_stats(values, ["a", "b", "c"])
    assert stats["columns"] == ["a", "b", "c"]
    assert stats["mean"] == pytest.approx([2.0, 5.0, 0.0])  # the NaN row is not a zero
    assert stats["std"] == pytest.approx([1.0, 1.0, 1.0])  # constant / empty columns: 1, never 0


def test_clinical_values_change_the_grade_logits_and_nothing_else(fused: torch.nn.Module) -> None:
    with torch.no_grad():
        a = fused(views(), clinical=clinical(PATIENT, PATIENT))
        b = fused(views(), clinical=clinical(OTHER, OTHER))
    assert not torch.allclose(a["grade_logits"], b["grade_logits"], atol=1e-4)
    assert torch.equal(a["seg_logits"], b["seg_logits"])  # the segmentation path does not read them


def test_a_missing_value_is_the_mask_token_not_zero(fused: torch.nn.Module) -> None:
    j = CLINICAL_COLUMNS.index("odi")
    missing = list(PATIENT)
    missing[j] = math.nan
    logits = grade_logits(fused, clinical(missing, PATIENT))
    assert torch.isfinite(logits).all()
    token = float(fused.clinical.mask_token[j].detach())
    as_token = list(PATIENT)
    as_token[j] = STATS["mean"][j] + STATS["std"][j] * token  # the raw value whose standardised value is m_j
    torch.testing.assert_close(logits[0], grade_logits(fused, clinical(as_token, PATIENT))[0], atol=1e-5, rtol=1e-5)
    for filler in (0.0, STATS["mean"][j]):  # neither a raw zero nor the training mean (a standardised zero)
        filled = list(PATIENT)
        filled[j] = filler
        assert not torch.allclose(logits[0], grade_logits(fused, clinical(filled, PATIENT))[0], atol=1e-5)


def test_no_clinical_input_means_every_value_missing(fused: torch.nn.Module) -> None:
    nan = clinical([math.nan] * 6, [math.nan] * 6)
    torch.testing.assert_close(grade_logits(fused, None), grade_logits(fused, nan))


def test_wrong_number_of_clinical_columns_is_one_clear_error(fused: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"\[B, 6\].*odi"):
        grade_logits(fused, clinical([1.0, 2.0], [3.0, 4.0]))


def test_fused_level_tokens_reach_the_report_decoder(fused: torch.nn.Module) -> None:
    ids, mask = fused.tokenize_reports(["L1-L2: no spinal canal stenosis.", "L4-L5: mild spinal canal stenosis."])
    fused.zero_grad()
    out = fused(views(), ids, mask, clinical=clinical(PATIENT, OTHER))
    out["report_loss"].backward()
    assert fused.clinical.to_memory.weight.grad.abs().sum() > 0  # z feeds the memory
    assert fused.clinical.clinical_proj.weight.grad.abs().sum() > 0


def test_fusion_off_is_the_plain_model(fused: torch.nn.Module) -> None:
    plain = tiny_model()
    assert plain.clinical is None and plain.clinical_columns is None
    assert model_inputs(plain, {"clinical": clinical(PATIENT)}) == {}
    fused_keys = set(fused.state_dict())
    assert set(plain.state_dict()) == {k for k in fused_keys if not k.startswith("clinical.")}
    for key, value in plain.state_dict().items():  # built last: every other weight is drawn the same
        torch.testing.assert_close(value, fused.state_dict()[key])
    with pytest.raises(ConfigError, match="clinical_stats"):
        tiny_model(clinical_fusion=True, clinical_stats={"columns": ["a"], "mean": [0.0], "std": [0.0]})


# ------------------------------------------------------------------------------------------------- manifest, data
@pytest.fixture()
def manifest_with_extra(tiny_phantom: Path, tmp_path: Path) -> Path:
    table = pd.read_csv(tiny_phantom)
    for column in [c for c in table.columns if c.startswith(("img_", "seg_"))]:
        table[column] = [str(tiny_phantom.parent / p) if isinstance(p, str) else p for p in table[column]]
    table["clinical_egfr"] = np.arange(len(table), dtype=float) + 60.0
    table.loc[0, "clinical_egfr"] = np.nan
    path = tmp_path / "manifest.csv"
    table.to_csv(path, index=False)
    return path


def test_extra_clinical_columns_are_read_in_the_order_asked(manifest_with_extra: Path) -> None:
    table = read_manifest(manifest_with_extra)
    columns = [*CLINICAL_COLUMNS, "clinical_egfr", "clinical_absent"]
    loader = build_dataloader(manifest_with_extra, "all", 64, batch_size=len(table), clinical_columns=columns)
    batch = next(iter(loader))
    assert batch["clinical"].shape == (len(table), 8)
    by_case = dict(zip(batch["case_id"], batch["clinical"][:, 6].tolist()))
    expected = dict(zip(table["case_id"], table["clinical_egfr"]))
    assert all(math.isnan(v) if math.isnan(expected[k]) else v == expected[k] for k, v in by_case.items())
    assert torch.isnan(batch["clinical"][:, 7]).all()  # a column the manifest lacks is unknown, not zero
    default = next(iter(build_dataloader(manifest_with_extra, "all", 64, batch_size=2)))
    assert default["clinical"].shape == (2, len(CLINICAL_COLUMNS))  # the batch contract is unchanged by default


def test_non_numeric_clinical_column_names_column_and_case(manifest_with_extra: Path) -> None:
    table = pd.read_csv(manifest_with_extra)
    table["clinical_egfr"] = table["clinical_egfr"].astype(object)
    table.loc[2, "clinical_egfr"] = "high"
    table.to_csv(manifest_with_extra, index=False)
    with pytest.raises(DataError, match=rf"clinical_egfr has value 'high' for case {table.loc[2, 'case_id']}"):
        read_manifest(manifest_with_extra)


# -------------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.params.clinical_fusion=maybe", "model.params.clinical_fusion"),
        ("model.params.clinical_fusion=1", "model.params.clinical_fusion"),
        ("train.lambda_cls=-1", "train.lambda_cls"),
    ],
)
def test_bad_fusion_settings_are_one_error_line(override: str, key: str, capsys) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
    assert cli(["validate", str(REPO / "configs/experiments/phantom_quick.yaml"), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lss-bench validate: error:") and key in err[0]


# -------------------------------------------------------------------------------------------------------- figure
def test_correlation_figure_is_a_png_of_the_correlated_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    odi = rng.uniform(0, 80, 40)
    frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(40)], "odi": odi, "age": rng.normal(60, 9, 40)})
    frame["sex"] = 1.0  # constant: no correlation defined, dropped
    severe = 1 / (1 + np.exp(-(odi - 40) / 10))
    frame[[f"p_{g}" for g in GRADES]] = np.stack([1 - severe, severe * 0, severe * 0, severe], 1)
    path = plot_clinical_correlation(frame, tmp_path / "figures" / "c.png")
    assert path is not None and path.is_file()
    assert Image.open(path).size[0] > 300
    assert plot_clinical_correlation(frame.head(2), tmp_path / "none.png") is None  # < 3 cases: nothing to correlate


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_run_with_fusion_writes_stats_and_figure_and_evaluates_the_same(tiny_phantom: Path, tmp_path: Path) -> None:
    from benchmarks.runner import evaluate_run, run_experiment

    cfg = load_config(None, [
        f"data.manifest={tiny_phantom}", "data.spatial_size=64", "data.batch_size=4", "model.preset=spca_tiny",
        "model.params.clinical_fusion=true", "model.params.report_warmup_steps=1", "train.epochs=1",
        "train.device=cpu", "train.quiet=true", "eval.max_report_tokens=16", "eval.text_metrics=false",
        "eval.split=train",  # enough cases for a correlation
    ])  # fmt: skip
    run = tmp_path / "run"
    metrics = run_experiment(cfg, run)
    stats = json.loads((run / STATS_FILE).read_text())
    train = read_manifest(tiny_phantom).query("split == 'train'")
    assert stats["columns"] == list(CLINICAL_COLUMNS)
    assert stats["mean"] == pytest.approx(train[list(CLINICAL_COLUMNS)].mean().tolist())  # fit on train only
    frame = pd.read_csv(run / PREDICTIONS_FILE)
    assert len(frame) == len(train) and {f"p_{g}" for g in GRADES} <= set(frame.columns)
    assert np.allclose(frame[[f"p_{g}" for g in GRADES]].sum(axis=1), 1.0, atol=1e-5)
    assert (run / FIGURE_FILE).is_file()
    again = evaluate_run(run, out=tmp_path / "again")
    for key in ("accuracy", "qwk", "dice_macro"):
        assert again[key] == pytest.approx(metrics[key], nan_ok=True), key  # the stored normalisation is reused
