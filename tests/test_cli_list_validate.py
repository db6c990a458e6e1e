"""``lss-bench list``, ``validate``, ``compare/tune --dry-run``, the one output root and the help of every command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import COMMANDS, build_parser, main
from benchmarks.outputs import OUTPUT_ROOT
from losses import registry as loss_registry

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "studies" / "pid_gains.yaml"
QUICK = REPO / "configs" / "experiments" / "phantom_quick.yaml"


def _run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.strip().splitlines()


def _suite(tmp_path: Path, **changes: object) -> Path:
    suite = {"name": "mine", "base": str(QUICK), "losses": ["dice", "tversky"], "seeds": 2, "baseline": "dice"}
    suite.update(changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------- list
@pytest.mark.parametrize(
    ("kind", "expected", "source"),
    [
        ("losses", "pid_tversky", "losses.pid_tversky"),
        ("models", "spca_vlm", "lss_vlm.models.vlm"),
        ("metrics", "dice/ligamentum_flavum", "lss_vlm.metrics.segmentation"),
        ("suites", "standard", "configs/suites/standard.yaml"),
    ],
)
def test_list_gives_each_item_a_description_and_source(capsys, kind, expected, source) -> None:
    code, out, err = _run(capsys, "list", kind)
    assert code == 0 and not err
    rows = {line.split()[0]: line for line in out}
    assert expected in rows and source in rows[expected]
    assert all("(no description)" not in line and line.rstrip().endswith("]") for line in out)


def test_list_losses_shows_an_imported_loss_with_its_module(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(loss_registry, "_LOSSES", dict(loss_registry._LOSSES))
    module = tmp_path / "listed_loss_mod.py"
    module.write_text(
        "import losses\nfrom torch import nn\n\n\n@losses.register_loss('listed_loss')\nclass Listed(nn.Module):\n"
        "    '''My listed loss.\n\n    More text.'''\n\n    def forward(self, logits, target):\n"
        "        return logits.mean()\n",
        encoding="utf-8",
    )
    code, out, _ = _run(capsys, "list", "losses", "--import", str(module))
    sys.modules.pop("listed_loss_mod", None)
    assert code == 0
    line = next(row for row in out if row.startswith("listed_loss "))
    assert "My listed loss." in line and "More text" not in line and "[listed_loss_mod]" in line


# ------------------------------------------------------------------------------------------------------ validate
def test_validate_shipped_suite_prints_every_run(capsys) -> None:
    code, out, err = _run(capsys, "validate", "standard")
    assert code == 0, err
    assert out[0].startswith("suite standard: 36 runs = 12 losses x 3 seeds (0, 1, 2) -> lss_runs/standard")
    runs = [line for line in out if "  seed " in line]
    assert len(runs) == 36 and all(line.endswith("[new]") for line in runs)


def test_validate_study_and_config(capsys) -> None:
    code, out, err = _run(capsys, "validate", str(STUDY))
    assert code == 0, err
    assert "loss.params.kp: float [0.01, 2] log" in "\n".join(out)
    code, out, err = _run(capsys, "validate", str(QUICK), "--set", "loss.name=tversky", "--set", "loss.params.beta=0.7")
    assert code == 0, err
    assert out[0].startswith("experiment phantom_quick: 1 run, loss tversky(beta=0.7), seed 0 -> lss_runs/train/")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rank_by": "dice_makro"}, "rank_by: unknown metric 'dice_makro'; did you mean dice_macro"),
        ({"columns": ["dice_macro", "acuracy"]}, "columns[1]: unknown metric 'acuracy'; did you mean accuracy"),
        ({"losses": ["dice", "dcie"]}, "unknown loss 'dcie'; choose one of: ce, dice, .*(did you mean dice?)"),
        (
            {"losses": [{"name": "tversky", "params": {"alhpa": 0.3}}], "baseline": None},
            "unknown argument(s) alhpa; valid: alpha",
        ),
        (
            {"losses": [{"name": "dice_ce", "params": {"lambda_ce": -1.0}}], "baseline": None},
            "lambda_ce should be no less than 0.0, got -1.0",
        ),
        (
            {"losses": [{"name": "generalized_dice", "params": {"w_type": "sqaure"}}], "baseline": None},
            "w_type must be one of square, simple, uniform; got 'sqaure'",
        ),
        ({"set": ["train.epoch=2"]}, "unknown config key 'train.epoch'.*(did you mean epochs?)"),
        ({"set": ["data.manifest=/no/such/manifest.csv"]}, "data.manifest: /no/such/manifest.csv not found"),
        ({"set": ["model.preset=spca_tinny"]}, "model.preset 'spca_tinny' not found; choose one of: .*spca_tiny"),
        ({"set": ["train.early_stopping.metric=dice_mean"]}, "train.early_stopping.metric: unknown metric 'dice_mean'"),
    ],
)
def test_validate_names_each_mistake_in_one_error_line(tmp_path, capsys, changes, message) -> None:
    import re

    code, out, err = _run(capsys, "validate", str(_suite(tmp_path, **changes)))
    assert code == 2 and not out
    assert len(err) == 1 and err[0].startswith("lss-bench validate: error: "), err
    assert re.search(re.escape(message).replace(r"\.\*", ".*"), err[0]), err[0]


def test_validate_study_with_a_misspelt_objective(tmp_path, capsys) -> None:
    study = yaml.safe_load(STUDY.read_text(encoding="utf-8"))
    study["experiment"] = str(QUICK)
    study["objective"]["metric"] = "val/dice/ligamentum_flavm"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    code, _, err = _run(capsys, "validate", str(path))
    assert code == 2 and len(err) == 1
    assert "objectives[0].metric: unknown metric 'dice/ligamentum_flavm'; did you mean dice/ligamentum_flavum" in err[0]


def test_validate_unknown_target(capsys) -> None:
    code, _, err = _run(capsys, "validate", "standrd")
    assert (
        code == 2
        and len(err) == 1
        and "no shipped suite of that name (minority, ood, paper, quick, reports, standard)" in err[0]
    )


# ------------------------------------------------------------------------------------------------------- dry runs
def test_compare_dry_run_writes_nothing(tmp_path, capsys) -> None:
    out_dir = tmp_path / "suite_out"
    code, out, err = _run(capsys, "compare", str(_suite(tmp_path)), "--seeds", "3", "--out", str(out_dir), "--dry-run")
    assert code == 0, err
    assert out[0] == f"suite mine: 6 runs = 2 losses x 3 seeds (0, 1, 2) -> {out_dir}"
    assert not out_dir.exists()


def test_compare_dry_run_shows_finished_runs_as_skipped(tmp_path, capsys) -> None:
    out_dir = tmp_path / "suite_out"
    from benchmarks.suite import load_suite, suite_record

    suite_path = _suite(tmp_path)
    (out_dir / "runs/dice/seed0").mkdir(parents=True)
    (out_dir / "runs/dice/seed0/status.json").write_text('{"status": "completed"}', encoding="utf-8")
    (out_dir / "runs/tversky/seed0.partial").mkdir(parents=True)
    (out_dir / "suite.yaml").write_text(yaml.safe_dump(suite_record(load_suite(suite_path))), encoding="utf-8")
    code, out, err = _run(capsys, "compare", str(suite_path), "--out", str(out_dir), "--dry-run")
    assert code == 0, err
    states = [line.rsplit("[", 1)[1] for line in out if "  seed " in line]
    assert states == ["done (completed), skipped]", "partial, resumes]", "new]", "new]"]


def test_tune_dry_run_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "tune", str(STUDY), "--n-trials", "7", "--dry-run")
    assert code == 0, err
    assert out[0] == "study pid_gains: 7 trials, runner experiment -> lss_runs/tune/pid_gains/trials/<number>/"
    assert not (tmp_path / "lss_runs").exists()


def test_tune_dry_run_refuses_a_bad_set(capsys) -> None:
    code, _, err = _run(capsys, "tune", str(STUDY), "--n-trials", "2", "--dry-run", "--set", "train.lrr=1")
    assert code == 2 and len(err) == 1 and "unknown config key 'train.lrr'" in err[0]


# ---------------------------------------------------------------------------------------------- help and defaults
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_help_shows_defaults_an_example_and_import() -> None:
    parsers = _subparsers()
    assert set(parsers) == set(COMMANDS)
    for name, parser in parsers.items():
        text = parser.format_help()
        assert f"examples:\n  lss-bench {name}" in text, name
        assert "--import MODULE" in text, name
        for action in parser._actions:
            nothing = action.default is None or action.default is False or action.default in ([], argparse.SUPPRESS)
            if action.option_strings and not nothing:
                rendered = parser._get_formatter()._expand_help(action)
                assert "default" in rendered, (name, action.option_strings)


def test_one_output_root_for_every_command(tmp_path, capsys) -> None:
    from benchmarks.config import load_config
    from benchmarks.outputs import default_run_dir

    assert OUTPUT_ROOT == Path("lss_runs")
    assert _subparsers()["demo"].parse_args([]).out == str(OUTPUT_ROOT / "demo")
    assert default_run_dir(load_config(QUICK)) == OUTPUT_ROOT / "train" / "phantom_quick-dice-seed0"
    _, out, _ = _run(capsys, "compare", str(_suite(tmp_path)), "--dry-run")
    assert out[0].endswith(f"-> {OUTPUT_ROOT / 'mine'}")
    _, out, _ = _run(capsys, "tune", str(STUDY), "--n-trials", "1", "--dry-run")
    assert f"-> {OUTPUT_ROOT / 'tune' / 'pid_gains'}/trials" in out[0]


@pytest.mark.parametrize(
    ("key", "higher"),
    [("dice_macro", True), ("hd95_macro", False), ("loc_mean_mm", False), ("loc_median_mm", False),
     ("loc_hit@5mm", True), ("rsna_score", False), ("rsna_log_loss", False), ("ece", False), ("qwk", True)],
)  # fmt: skip
def test_metric_direction_decides_best_first(key: str, higher: bool) -> None:
    """The ↑/↓ direction that bold cells, best-first sorting and the CD diagram use."""
    from benchmarks.metric_names import metric_info

    assert metric_info(key).higher_is_better is higher
