"""Test-time text intervention: FiLM from an instruction's text embedding (lss_vlm.models.instruct), its training
term (lss_vlm.engine.instruction) and the `report --instruct` / `evaluate --instructions` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lss_vlm.constants import LABELS, VIEWS
from lss_vlm.data.dataset import build_dataloader
from lss_vlm.engine.instruction import draw_instructions, instruction_term, truthful_direction
from lss_vlm.errors import ConfigError
from lss_vlm.models import build_model
from lss_vlm.models.instruct import instruction_text, instruction_views


@pytest.fixture(scope="module")
def batch(tiny_phantom: Path) -> dict:
    return next(iter(build_dataloader(tiny_phantom, "train", spatial_size=64, batch_size=2, seed=0)))


def film_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("spca_vlm", text_encoder="tiny-bert", image_size=64, instruct_film=True)


def test_instruction_views_follow_the_named_level() -> None:
    views = instruction_views("the ligamentum flavum at L4-L5 is thicker than predicted")
    assert views.tolist() == [v == "ax_l4_l5" for v in VIEWS]
    assert instruction_views("the thecal sac is smaller than predicted").all()
    assert instruction_views("disc at l5 - s1 is larger than predicted").tolist() == [v == "ax_l5_s1" for v in VIEWS]
    with pytest.raises(ConfigError, match="L1-L3"):
        instruction_views("the disc at L1-L3 is larger than predicted")
    with pytest.raises(ConfigError, match="empty"):
        instruction_views("  ")


def test_truthful_direction_and_drawn_instructions_state_the_truth() -> None:
    assert truthful_direction(pred_area=50, true_area=100) == 1
    assert truthful_direction(pred_area=150, true_area=100) == -1
    assert truthful_direction(pred_area=98, true_area=100) == 0
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 3  # thecal sac, 16 px
    pred = torch.zeros_like(target)
    pred[0, 2:4, 2:6] = 3  # image 0 under-predicts the sac (8 px)
    pred[1, 1:7, 1:7] = 3  # image 1 over-predicts it (36 px)
    torch.manual_seed(0)
    drawn = draw_instructions(pred, target, views=[VIEWS.index("ax_l4_l5"), 0])
    assert drawn[0][0] == drawn[1][0] == LABELS.index("thecal_sac")
    assert "at L4-L5" in drawn[0][1] and "at " not in drawn[1][1]
    assert any(w in drawn[0][1] for w in ("larger", "thicker", "bigger", "wider"))
    assert any(w in drawn[1][1] for w in ("smaller", "thinner", "narrower", "less extensive"))
    assert draw_instructions(target, target, views=[0, 0]) == [None, None]  # nothing to correct


def test_untrained_film_is_identity_and_the_default_model_has_none(batch: dict) -> None:
    model = film_model().eval()
    with torch.no_grad():
        plain = model(batch["views"])["seg_logits"]
        model.set_instruction(instruction_text("thecal_sac", -1, "L4-L5"))
        instructed = model(batch["views"])["seg_logits"]
    assert torch.equal(plain, instructed)  # zero-initialised last layer: γ = 1, β = 0
    default = build_model("spca_vlm", text_encoder="tiny-bert", image_size=64)
    assert default.instruction is None
    with pytest.raises(ConfigError, match="instruct_film"):
        default.set_instruction("the disc is larger than predicted")


def test_an_instruction_acts_only_on_the_views_it_names(batch: dict) -> None:
    model = film_model().eval()
    torch.nn.init.normal_(model.instruction.mlp[-1].weight, std=0.5)  # a non-identity FiLM
    with torch.no_grad():
        plain = model(batch["views"])["seg_logits"]
        model.set_instruction("the disc at L2-L3 is larger than predicted")
        instructed = model(batch["views"])["seg_logits"]
    changed = (plain != instructed).flatten(2).any(-1).any(0)  # [V]
    assert changed.tolist() == [v == "ax_l2_l3" for v in VIEWS]
    model.set_instruction(None)
    with torch.no_grad():
        assert torch.equal(model(batch["views"])["seg_logits"], plain)


def test_training_the_instruction_term_teaches_the_direction_word(batch: dict) -> None:
    """Trained with the instruction term (only the FiLM trains; the rest is frozen), an instruction must move its
    class's mean probability in the direction it *states*, for the truthful sentence and for the same sentence with
    the opposite word. Trained on truthful sentences alone, the layer learnt to correct the named class towards the
    truth whatever the word said (at the quick budget the opposite sentence moved the area as stated in 4–9 % of
    cases): the hinge on both sentences in ``instruction_term`` is what this test guards."""
    model = film_model()
    model.train()
    model.requires_grad_(False)
    model.instruction.requires_grad_(True)
    optimizer = torch.optim.Adam(model.instruction.parameters(), lr=3e-2)
    torch.manual_seed(0)
    for _ in range(160):
        out = model(batch["views"], view_valid=batch["view_valid"])
        term = instruction_term(model, out, batch)
        optimizer.zero_grad()
        term.backward()
        optimizer.step()
    film, moved = model.instruction, {1: [], -1: []}  # truthful, opposite
    with torch.no_grad():
        out = model(batch["views"], view_valid=batch["view_valid"])
        valid = batch["mask_valid"]
        features, truth = out["seg_features"][valid], batch["masks"][valid]
        base = out["seg_logits"][valid].softmax(1)
        pred = base.argmax(1)
        views = torch.nonzero(valid, as_tuple=True)[1].tolist()
        for n in range(len(features)):
            for c in range(1, len(LABELS)):
                d = truthful_direction(float((pred[n] == c).sum()), float((truth[n] == c).sum()))
                if d == 0:
                    continue
                level = VIEWS[views[n]][3:].upper().replace("_", "-") if VIEWS[views[n]].startswith("ax_") else None
                for truthful in (1, -1):
                    stated = d * truthful
                    emb = film.embed(model.text, [instruction_text(LABELS[c], stated, level)])
                    after = film.head_logits(model.seg_decoder, features[n : n + 1], emb).softmax(1)[0, c].mean()
                    moved[truthful].append(float(after - base[n, c].mean()) * stated > 0)
    # measured 70/70 (truthful) and 56/70 (opposite) after 160 steps with the decoder's full-resolution skip (27/70
    # opposite after 80); without the skip, 64/70 and 50/70 after 80 steps, a hinge on the opposite sentence alone
    # 6/70 truthful, training on truthful sentences alone 42/70 truthful and the direction word unused
    for truthful, share in ((1, 0.7), (-1, 0.6)):
        flags = moved[truthful]
        assert len(flags) >= 10 and sum(flags) / len(flags) >= share, (truthful, sum(flags), len(flags))


@pytest.fixture(scope="module")
def film_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the tiny model on a 12-case phantom (cached in the test's folder) with the switch on."""
    from benchmarks.config import load_config
    from benchmarks.runner import run_experiment

    root = tmp_path_factory.mktemp("film_run")
    overrides = [
        "data.phantom.n_cases=12", "data.phantom.size=64", f"data.cache_dir={root / 'cache'}", "data.spatial_size=64",
        "data.batch_size=4", "model.preset=spca_tiny", "model.params.instruct_film=true", "train.epochs=1",
        "train.device=cpu", "train.quiet=true", "eval.text_metrics=false", "eval.max_report_tokens=16",
    ]  # fmt: skip
    run_experiment(load_config(None, overrides), root / "run")
    return root / "run"


def test_report_instruct_and_evaluate_instructions_on_a_trained_run(
    film_run: Path, capsys: pytest.CaptureFixture
) -> None:
    """Both commands on a run trained with the switch; bad input is one error line naming the culprit."""
    import json
    import warnings

    import pandas as pd

    from benchmarks.cli import main

    run = film_run
    case_id = json.loads((run / "reports.jsonl").read_text().splitlines()[0])["case_id"]
    text = "the thecal sac at L4-L5 is smaller than predicted"
    assert main(["report", str(run), "--case", case_id, "--instruct", text]) == 0
    out = capsys.readouterr().out
    assert "area before" in out and "thecal_sac" in out and "Dice after" in out
    assert (run / f"report_{case_id}_instruct.png").stat().st_size > 10_000

    assert main(["evaluate", str(run), "--instructions"]) == 0
    assert "truthful instructions" in capsys.readouterr().out
    effect = pd.read_csv(run / "eval_instructions_test" / "instruction_effect.csv")
    per_case = pd.read_csv(run / "per_case.csv")  # one row per test image with a mask
    assert len(effect) == len(per_case) * 5 * 2
    assert set(effect["direction"]) == {1, -1} and effect["instruction"].str.endswith("than predicted").all()
    summary = json.loads((run / "eval_instructions_test" / "instruction_effect.json").read_text())
    assert summary["truthful"]["n"] == int(effect["truthful"].sum()) and "ligamentum_flavum" in summary["by_class"]

    # non-ASCII and very long text: the figure title is cut to two lines, missing glyphs do not warn on stderr
    for text in ("le disque à L4-L5 est plus épais 椎間板 🙂", "the disc is thicker than predicted " * 300):
        out_png = run / "odd.png"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["report", str(run), "--case", case_id, "--instruct", text, "--out", str(out_png)]) == 0
        assert not [w for w in seen if "Glyph" in str(w.message)], [str(w.message) for w in seen]
        captured = capsys.readouterr()
        assert "error" not in captured.err and out_png.stat().st_size > 10_000
        echo = next(line for line in captured.out.splitlines() if line.startswith(f"case {case_id}"))
        assert "instruction:" in echo and len(echo) < 300  # the instruction is echoed shortened

    for args, culprit in (
        (["report", str(run), "--case", case_id, "--instruct", " "], "--instruct"),
        (["report", str(run), "--case", case_id, "--instruct", "the disc at L2-L4 is larger"], "L2-L4"),
        (["evaluate", str(run), "--instructions", "--split", "all"], "--instructions"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error:" in err[0] and culprit in err[0], err


def test_evaluate_shifts_scores_the_run_on_a_shifted_phantom_once(
    film_run: Path, capsys: pytest.CaptureFixture
) -> None:
    """`evaluate --shifts` (the OOD suite's scoring, benchmarks.ood) on a real trained run: RUN/ood/<shift>/ with
    the run's segmentation keys, one row per test image; a second call scores nothing again."""
    import json
    import math

    import pandas as pd

    from benchmarks.cli import main

    assert main(["evaluate", str(film_run), "--shifts", "bias_field"]) == 0
    out = capsys.readouterr().out
    assert "bias_field" in out and "drop" in out
    folder = film_run / "ood" / "bias_field"
    metrics = json.loads((folder / "metrics.json").read_text())
    clean = json.loads((film_run / "metrics.json").read_text())
    assert {"dice_macro", "hd95_macro", "dice/ligamentum_flavum"} <= set(metrics)
    assert json.loads((folder / "source.json").read_text())["shift"] == "bias_field"
    assert math.isfinite(clean["dice_macro"]) and math.isfinite(metrics["dice_macro"])
    assert len(pd.read_csv(folder / "per_case.csv")) == len(pd.read_csv(film_run / "per_case.csv"))
    stamp = (folder / "metrics.json").stat().st_mtime_ns
    assert main(["evaluate", str(film_run), "--shifts", "bias_field"]) == 0
    assert (folder / "metrics.json").stat().st_mtime_ns == stamp
    assert main(["evaluate", str(film_run), "--shifts", "bias_feld"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shifts" in err[-1] and "'bias_feld'" in err[-1]


def test_a_run_without_the_film_layer_is_refused_naming_it() -> None:
    from benchmarks.intervention import require_film

    model = build_model("spca_vlm", text_encoder="tiny-bert", image_size=64)
    with pytest.raises(ConfigError, match="runs/plain.*instruct_film=true"):
        require_film(model, "runs/plain")
