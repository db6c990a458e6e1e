"""The light commands do not import the heavy libraries: ``--help``, ``list`` and ``validate`` stay fast (issue 16).

Each command runs in a fresh interpreter that then prints the modules it imported (``sys.modules``). No timing is
asserted; ``benchmarks/perf/cli_startup.py`` prints the seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Libraries that only training, evaluation, tuning or figures need.
HEAVY = (
    "monai",
    "segmentation_models_pytorch",
    "timm",
    "transformers",
    "peft",
    "sklearn",
    "matplotlib",
    "optuna",
    "nibabel",
    "benchmarks.evaluation",
    "benchmarks.runner",
    "transformers.models.gpt2.modeling_gpt2",  # the report decoder's GPT-2, built with the model only
    "transformers.models.bert.modeling_bert",
)
PROBE = """\
import contextlib, io, json, runpy, sys
watched = json.loads(sys.argv[2])
sys.argv = ["lss-bench", *json.loads(sys.argv[1])]
code = 0
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module("benchmarks.cli", run_name="__main__")
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "modules": sorted(m for m in watched if m in sys.modules)}))
"""


def _imported(*argv: str) -> list[str]:
    """The modules of :data:`HEAVY` (and torch) that ``lss-bench ARGV`` imported; the command must succeed."""
    watched = json.dumps([*HEAVY, "torch"])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), watched], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None), out.stderr
    return result["modules"]


def test_help_imports_not_even_torch():
    assert _imported("--help") == []


@pytest.mark.parametrize("kind", ["losses", "metrics", "suites"])
def test_list_imports_no_heavy_library(kind):
    assert [m for m in _imported("list", kind) if m != "torch"] == []


#: What a config check must not import: loss and model libraries are imported when a loss or model is built.
BUILD_ONLY = (
    "monai",
    "segmentation_models_pytorch",
    "timm",
    "peft",
    "benchmarks.evaluation",
    "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.bert.modeling_bert",
)


def test_validate_a_config_imports_neither_monai_nor_the_evaluation_stack():
    # the model check reads the model factories' signatures (smp -> timm -> torchvision is imported on first build
    # only: ~2.7 s of the ~9 s validate took); an in-house loss needs no MONAI
    imported = _imported("validate", "configs/experiments/phantom_quick.yaml", "--set", "loss.name=pid_tversky")
    assert "torch" in imported  # the probe does see imports
    for name in (*BUILD_ONLY, "sklearn", "matplotlib", "optuna", "nibabel"):
        assert name not in imported


def test_validate_a_suite_imports_no_evaluation_or_training_stack():
    # its MONAI losses are checked by signature and value checks, not built: `import monai` alone imports every MONAI
    # submodule and most of its optional dependencies (~4 s CPU, the bulk of validate before)
    # its smp losses (jaccard, lovasz, focal_tversky) likewise: smp imports timm and torchvision (~2.7 s)
    imported = _imported("validate", "standard")
    assert "torch" in imported  # the probe does see imports
    # and the report decoder's GPT-2 modelling code (~2 s) is imported when a model is built, not when it is checked
    for name in (*BUILD_ONLY, "benchmarks.runner"):
        assert name not in imported


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"name": "dice", "params": {"smooth": 0.1}}, "unknown argument(s) smooth; valid: batch, include_background"),
        ({"name": "dice_ce", "params": {"lambda_dice": -1}}, "lambda_dice should be no less than 0.0, got -1"),
        ({"name": "generalized_dice", "params": {"w_type": "sqaure"}}, "w_type must be one of square, simple"),
    ],
)
def test_validate_catches_a_bad_monai_loss_without_importing_monai(tmp_path, loss, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "mine", "base": str(ROOT / "configs/experiments/phantom_quick.yaml"),
                                 "losses": [loss], "seeds": 1}))  # fmt: skip
    argv = json.dumps(["validate", str(suite)])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, argv, json.dumps(["monai"])], cwd=ROOT, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert result == {"code": 2, "modules": []} and len(errors) == 1 and message in errors[0], out.stderr
