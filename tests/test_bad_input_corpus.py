"""The bad-input corpus (issue 15): every case goes through the real ``lss-bench`` CLI and must keep its promise.

For each case: exit code 2, exactly one ``error:`` line that names the culprit (a file, key or value), no traceback,
and nothing half-written or deleted (the files under the case's folder and the shared inputs are the same before and
after). Most cases call :func:`benchmarks.cli.main` in-process (cheap); :data:`SUBPROCESS_CASES` also run as
``python -m benchmarks.cli`` in a fresh interpreter. Cases are data: an id, the argv (``{t}`` is the case's folder,
other ``{names}`` are shared inputs from :func:`shared`), the culprit text, and an optional setup.

Inputs that need write protection (a read-only folder) are not here: the tests run as root on CI machines, where a
read-only mode does not stop writes; the error-mapping layer that handles them is tested with a failing ``mkdir``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.cli import main

ROOT = Path(__file__).resolve().parent.parent

TINY_CONFIG = """\
name: tiny
data: {{manifest: {manifest}, spatial_size: 64, batch_size: 2}}
model: {{preset: spca_tiny}}
loss: {{name: dice}}
train: {{epochs: 1}}
eval: {{text_metrics: false}}
"""


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` (formatted with the shared paths), the ``culprit`` the error line must name."""

    id: str
    argv: str
    culprit: str
    setup: Callable[[Path, dict[str, str]], None] | None = None


# ----------------------------------------------------------------------------------------------------------- setups
def _file(rel: str, text: str | bytes) -> Callable[[Path, dict[str, str]], None]:
    """A setup that writes ``text`` to ``{t}/rel`` (parents created)."""

    def setup(t: Path, env: dict[str, str]) -> None:
        path = t / rel.format(**env)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.format(**env).encode())

    return setup


def _both(*setups: Callable[[Path, dict[str, str]], None]) -> Callable[[Path, dict[str, str]], None]:
    def setup(t: Path, env: dict[str, str]) -> None:
        for s in setups:
            s(t, env)

    return setup


def _copy_run(kind: str) -> Callable[[Path, dict[str, str]], None]:
    """A run folder ``{t}/run`` with the tiny config and weights of ``kind``: damaged, mismatched, good or none."""

    def setup(t: Path, env: dict[str, str]) -> None:
        run = t / "run"
        run.mkdir()
        (run / "config.yaml").write_text(Path(env["run_config"]).read_text())
        if kind == "damaged":
            (run / "model.safetensors").write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}garbage')
        elif kind == "truncated":
            (run / "model.safetensors").write_bytes(Path(env["tiny_weights"]).read_bytes()[:5000])
        elif kind == "mismatch":
            (run / "model.safetensors").write_bytes(Path(env["other_weights"]).read_bytes())
        elif kind == "good":
            (run / "model.safetensors").write_bytes(Path(env["tiny_weights"]).read_bytes())

    return setup


def _nifti_case(kind: str) -> Callable[[Path, dict[str, str]], None]:
    """``{t}/data/manifest.csv`` with two cases whose sagittal image has NaN/Inf voxels or a NaN affine."""

    def setup(t: Path, env: dict[str, str]) -> None:
        import nibabel as nib

        data = t / "data"
        data.mkdir()
        rows = ["case_id,patient_id,img_sag_t2,grade_l4_l5"]
        for n in range(2):
            image = np.full((6, 20, 20), 100.0, dtype=np.float32)
            affine = np.diag([3.5, 0.7, 0.9, 1.0])
            if kind == "nan":
                image[2, 5, 5] = np.nan
            elif kind == "inf":
                image[3, 4, 4] = np.inf
            else:
                affine[0, 3] = np.nan
            nib.save(nib.Nifti1Image(image, affine), str(data / f"bad{n}.nii.gz"))
            rows.append(f"bad{n},p{n},bad{n}.nii.gz,1")
        (data / "manifest.csv").write_text("\n".join(rows) + "\n")

    return setup


def _locked(rel: str) -> Callable[[Path, dict[str, str]], None]:
    """Hold the lock of ``{t}/rel`` for the case (another lss-bench is writing into it)."""

    def setup(t: Path, env: dict[str, str]) -> None:
        from filelock import FileLock

        from benchmarks.outputs import LOCK_NAME

        folder = t / rel
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / LOCK_NAME, timeout=0)
        lock.acquire()
        HELD.append(lock)

    return setup


HELD: list = []
LONG = "n" * 300

# ------------------------------------------------------------------------------------------------------------ cases
#: (dotted key, bad value): each is rejected by the config schema before anything is written, naming the key.
BAD_SETS: list[tuple[str, ...]] = [
    ("train.lr", ".inf"), ("train.lr", ".nan"), ("train.lr", "-1"), ("train.lr", "0"), ("train.lr", "1e6"),
    ("train.lr", "abc"), ("train.lr", "[1]"), ("train.epochs", "0"), ("train.epochs", "-3"), ("train.epochs", "1.5"),
    ("train.epochs", "abc"), ("train.epochs", "1e12"), ("train.weight_decay", "-1"), ("train.weight_decay", ".inf"),
    ("train.grad_clip", "0"), ("train.grad_clip", "-1"), ("train.grad_clip", ".nan"), ("train.lambda_seg", "-1"),
    ("train.lambda_cls", ".nan"), ("train.lambda_txt", ".inf"), ("train.seed", "-1"), ("train.seed", "abc"),
    ("train.schedule", "linear"), ("train.device", "tpu"), ("train.amp", "maybe"),
    ("train.early_stopping.patience", "-1"), ("train.early_stopping.mode", "up"),
    ("data.batch_size", "0"), ("data.batch_size", "1e7"), ("data.spatial_size", "8"), ("data.spatial_size", "5000"),
    ("data.num_workers", "-1"), ("data.phantom.n_cases", "1"), ("data.phantom.size", "8"),
    ("data.phantom.size", ".inf"), ("data.phantom.seed", "-5"), ("data.phantom.options.noise", ".nan"),
    ("model.params.embed_dim", "-8"), ("model.params.embed_dim", "0"), ("model.params.embed_dim", "1.5"),
    ("model.params.embed_dim", "abc"), ("model.params.embed_dim", "1e9"), ("model.params.num_heads", "0"),
    ("model.params.dropout", "2"), ("model.params.dropout", "-0.1"), ("model.params.gate_init", ".nan"),
    ("model.params.decoder_channels", "[16, 0]"), ("model.params.report_layers", "-1"),
    ("model.params.nonexistent_arg", "1", "nonexistent_arg"), ("model.name", "no_such_model"),
    ("model.preset", "no_such_preset"),
    ("loss.name", "no_such_loss"), ("loss.params.smooth_nr", ".nan"), ("loss.params.smooth_dr", ".inf"),
    ("loss.params.smooth_nr", "INFINITY"), ("loss.params.kp", "nan"), ("model.params.gate_init", "1e999"),
    ("loss.params.no_such_param", "1", "no_such_param"), ("eval.num_beams", "0"), ("eval.max_report_tokens", "2"),
    ("eval.split", "holdout"), ("eval.checkpoint", "middle"),
    # model switches and sizes judged by the type of the constructor default (validate passed these; training failed)
    ("model.params.text_lora_rank", "-1"), ("model.params.text_lora_rank", "1.5"),
    ("model.params.text_lora_rank", "abc"), ("model.params.text_lora_rank", "true"),
    ("model.params.report_lora_rank", "100000"), ("model.params.instruct_weight", "-1"),
    ("model.params.instruct_weight", "abc"), ("model.params.gate_init", "abc"), ("model.params.lora_alpha", "[1]"),
    ("model.params.instruct_film", "maybe"), ("model.params.clinical_fusion", "3"),
    ("train.lambda_contrastive", "-1"), ("train.lambda_contrastive", ".nan"),
]  # fmt: skip
#: Keys that do not exist, and overrides that are not KEY=VALUE.
BAD_KEYS: list[tuple[str, str]] = [
    ("train.lrr=0.1", "train.lrr"), ("trian.lr=0.1", "trian.lr"), ("train.lr.x=1", "train.lr.x"),
    ("data.phantom.nope=1", "data.phantom.nope"), ("eval.text=1", "eval.text"), ("=3", "=3"),
    ("train.lr", "train.lr"), ("name.x=1", "name.x"),
]  # fmt: skip

COMPARE = "compare {t}/s.yaml --out {t}/o"
TUNE = "tune {t}/st.yaml --n-trials 1 --out {t}/o"
TRAIN = "train {t}/c.yaml --out {t}/run"
PREP_CSV = "prepare nifti --root {t}/in/m.csv --out {t}/o"


def _space(key: str, spec: str) -> str:
    """A study's ``search_space`` in block YAML: ``spec`` is ``"type: float|low: 1|high: 2"``."""
    lines = "".join(f"      {item}\n" for item in spec.split("|"))
    return f"search_space:\n  params:\n    {key}:\n{lines}"


LR_SPACE = _space("train.lr", "type: float|low: 0.001|high: 0.01")


def _suite(text: str) -> Callable[[Path, dict[str, str]], None]:
    return _file("s.yaml", text)


def _study(text: str) -> Callable[[Path, dict[str, str]], None]:
    return _file("st.yaml", text)


def _config(text: str | bytes) -> Callable[[Path, dict[str, str]], None]:
    return _file("c.yaml", text)


SUITE_OK = _suite("base: {cfg}\nlosses: [dice]\n")
#: A suite on the shared config, whose data.manifest is a prepared dataset: it cannot be shifted.
SUITE_SHIFTED_MANIFEST = _suite("base: {cfg}\nlosses: [dice]\nshifts: [bias_field]\n")
PREP_IMAGES = "prepare images --root {images} --out {t}/o --pixel-spacing 1 --no-progress"
PREP_MY_IMAGES = "prepare images --root {t}/img --out {t}/o --pixel-spacing 1 --no-progress"


def _images(colour_mask: bool = False, cases_csv: str | None = None) -> Callable[[Path, dict[str, str]], None]:
    """``{t}/img``: the shared images dataset, its mask of c0 colour-coded (RGB, channels differ) or a cases.csv."""

    def setup(t: Path, env: dict[str, str]) -> None:
        import shutil

        from PIL import Image

        shutil.copytree(env["images"], t / "img")
        if colour_mask:
            rgb = np.zeros((8, 8, 3), np.uint8)
            rgb[2:4, :, 0] = 255
            Image.fromarray(rgb).save(t / "img" / "masks" / "c0.png")
        if cases_csv is not None:
            (t / "img" / "cases.csv").write_text(cases_csv)

    return setup


CASES: list[Case] = [
    *(
        Case(f"set {k}={v}", f"train {{cfg}} --set {k}={shlex.quote(v)} --out {{t}}/run", c)
        for k, v, c in (item if len(item) == 3 else (*item, item[0]) for item in BAD_SETS)
    ),
    *(Case(f"key {item}", f"train {{cfg}} --set {shlex.quote(item)} --out {{t}}/run", c) for item, c in BAD_KEYS),
    # --- experiment YAML files
    Case("config missing", "train {t}/missing.yaml --out {t}/run", "missing.yaml"),
    Case("config is a folder", "train {t} --out {t}/run", "{t}"),
    Case("config not YAML", TRAIN, "c.yaml", _config("train: [unclosed")),
    Case("config is a list", TRAIN, "c.yaml", _config("- a\n- b\n")),
    Case("config binary", TRAIN, "c.yaml", _config(b"\xff\xfe\x00\x81bin")),
    Case("config unknown section", TRAIN, "optim", _config("optim: {{lr: 1}}\n")),
    Case("config section scalar", TRAIN, "train", _config("train: 5\n")),
    Case("config nan lr", TRAIN, "train.lr", _config("train: {{lr: .nan}}\n")),
    Case("config tuple params", TRAIN, "loss.params", _config("loss: {{params: 3}}\n")),
    # --- train --out
    Case("train out is a file", "train {cfg} --out {t}/f", "{t}/f", _file("f", "data")),
    Case("train out under a file", "train {cfg} --out {t}/f/run", "{t}/f", _file("f", "data")),
    Case("train out name too long", f"train {{cfg}} --out {{t}}/{LONG}", LONG[:50]),
    Case("train corrupt status.json", "train {cfg} --out {t}/run", "status.json", _file("run/status.json", "{{bad")),
    Case("train status.json list", "train {cfg} --out {t}/run", "status.json", _file("run/status.json", "[1]")),
    Case(
        "train other config",
        "train {cfg} --out {t}/run",
        "different config",
        _file("run/config.yaml", "name: other\ntrain: {{lr: 0.5}}\n"),
    ),
    Case("train manifest missing", "train {cfg} --set data.manifest={t}/none.csv --out {t}/r", "none.csv"),
    Case(
        "train manifest binary",
        "train {cfg} --set data.manifest={t}/m.csv --out {t}/r",
        "m.csv",
        _file("m.csv", b"\xff\x00"),
    ),
    Case(
        "train manifest columns",
        "train {cfg} --set data.manifest={t}/m.csv --out {t}/r",
        "m.csv",
        _file("m.csv", "a,b\n1,2\n"),
    ),
    Case("train manifest empty", "train {cfg} --set data.manifest={t}/m.csv --out {t}/r", "m.csv", _file("m.csv", "")),
    Case(
        "compare manifest missing",
        COMPARE,
        "none.csv",
        _suite("base: {cfg}\nset: [data.manifest={t}/none.csv]\nlosses: [dice]\n"),
    ),
    Case(
        "tune manifest missing",
        TUNE + " --set data.manifest={t}/none.csv",
        "none.csv",
        _study("experiment: {cfg}\n" + LR_SPACE),
    ),
    Case("train out locked", "train {cfg} --out {t}/run", "another lss-bench process", _locked("run")),
    Case("train status binary", "train {cfg} --out {t}/run", "status.json", _file("run/status.json", b"\xff\x00")),
    Case("train config.yaml damaged", "train {cfg} --out {t}/run", "config.yaml", _file("run/config.yaml", "a: [")),
    Case("compare suite record damaged", COMPARE, "suite.yaml", _both(SUITE_OK, _file("o/suite.yaml", "losses: ["))),
    Case(
        "compare run config changed",
        COMPARE,
        "dice seed0",
        _both(SUITE_OK, _file("o/runs/dice/seed0/config.yaml", "train: {{epochs: 99}}\n")),
    ),
    # --- synth
    Case("synth out is a file", "synth --out {t}/f --cases 5 --size 32", "{t}/f", _file("f", "x")),
    Case("synth out under a file", "synth --out {t}/f/ph --cases 5 --size 32", "{t}/f", _file("f", "x")),
    Case("synth out name too long", f"synth --out {{t}}/{LONG} --cases 5 --size 32", LONG[:50]),
    Case("synth non-empty out", "synth --out {t}/d --cases 5 --size 32", "not empty", _file("d/manifest.csv", "a")),
    Case("synth montage folder", "synth --out {t}/ph --cases 5 --size 32 --montage {t}", "--montage"),
    Case("synth montage bmp", "synth --out {t}/ph --cases 5 --size 32 --montage {t}/m.bmp", ".bmp"),
    Case("synth montage txt", "synth --out {t}/ph --cases 5 --size 32 --montage {t}/m.txt", ".txt"),
    Case("synth montage no ext", "synth --out {t}/ph --cases 5 --size 32 --montage {t}/m", "--montage"),
    Case("synth montage under file", "synth --out {t}/ph --cases 5 --montage {t}/f/m.png", "{t}/f", _file("f", "x")),
    Case("synth cases 0", "synth --out {t}/ph --cases 0", "--cases"),
    Case("synth cases text", "synth --out {t}/ph --cases many", "--cases"),
    Case("synth cases 3", "synth --out {t}/ph --cases 3", "--cases"),
    Case("synth size 0", "synth --out {t}/ph --size 0", "--size"),
    Case("synth size 8", "synth --out {t}/ph --cases 5 --size 8", "size"),
    Case("synth shift unknown", "synth --out {t}/ph --cases 5 --shift martian", "martian"),
    Case("synth workers 0", "synth --out {t}/ph --workers 0", "--workers"),
    Case("synth seed text", "synth --out {t}/ph --seed x", "--seed"),
    # --- prepare
    Case("prepare root missing", "prepare nifti --root {t}/nope --out {t}/out", "{t}/nope"),
    Case("prepare out inside root", "prepare nifti --root {nifti} --out {nifti}/out --overwrite", "inside"),
    Case("prepare out is root", "prepare nifti --root {nifti} --out {nifti} --overwrite", "inside"),
    Case("prepare out contains root", "prepare nifti --root {nifti} --out {nifti_parent} --overwrite", "contains"),
    Case("prepare out non-empty", "prepare nifti --root {nifti} --out {t}/o", "not empty", _file("o/x.txt", "keep")),
    Case("prepare out is a file", "prepare nifti --root {nifti} --out {t}/f", "{t}/f", _file("f", "x")),
    Case("prepare out under a file", "prepare nifti --root {nifti} --out {t}/f/o", "{t}/f", _file("f", "x")),
    Case("prepare labels rsna", "prepare rsna2024 --root {nifti} --out {t}/o --labels disc=2", "--labels"),
    Case("prepare mild grade nifti", "prepare nifti --root {nifti} --out {t}/o --normal-mild-grade 1", "rsna2024"),
    Case("prepare spacing nifti", "prepare nifti --root {nifti} --out {t}/o --pixel-spacing 1", "mendeley"),
    Case("prepare seed negative", "prepare nifti --root {nifti} --out {t}/o --seed -1 --labels disc=7", "--seed"),
    Case("prepare val-frac 2", "prepare nifti --root {nifti} --out {t}/o --val-frac 2 --labels disc=7", "val=2.0"),
    Case("prepare val-frac nan", "prepare nifti --root {nifti} --out {t}/o --val-frac nan --labels disc=7", "val=nan"),
    Case("prepare spacing inf", "prepare mendeley --root {nifti} --out {t}/o --pixel-spacing inf", "--pixel-spacing"),
    Case("prepare spacing -1", "prepare mendeley --root {nifti} --out {t}/o --pixel-spacing -1", "--pixel-spacing"),
    Case("synth seed negative", "synth --out {t}/ph --cases 5 --seed -1", "--seed"),
    Case("synth cases huge", "synth --out {t}/ph --cases 100000000", "--cases"),
    Case("synth size huge", "synth --out {t}/ph --cases 5 --size 100000", "--size"),
    Case("tune seed negative", "tune {study} --n-trials 1 --seed -3 --out {t}/o", "--seed"),
    Case("prepare unknown dataset", "prepare kaggle --root {nifti} --out {t}/o", "kaggle"),
    Case("prepare nan voxels", "prepare nifti --root {t}/data --out {t}/o", "bad0.nii.gz", _nifti_case("nan")),
    Case("prepare inf voxels", "prepare nifti --root {t}/data --out {t}/o", "bad0.nii.gz", _nifti_case("inf")),
    Case("prepare nan affine", "prepare nifti --root {t}/data --out {t}/o", "bad0.nii.gz", _nifti_case("affine")),
    Case("prepare bad instance", "prepare rsna2024 --root {rsna_bad} --out {t}/o", "InstanceNumber"),
    Case("prepare nifti csv garbage", PREP_CSV, "m.csv", _file("in/m.csv", "a,b\n1")),
    Case("prepare csv binary", PREP_CSV, "m.csv", _file("in/m.csv", b"\xff\xfe\x00")),
    Case("prepare csv no rows", PREP_CSV, "m.csv", _file("in/m.csv", "case_id,img_sag_t2\n")),
    Case("prepare rsna empty root", "prepare rsna2024 --root {t}/r --out {t}/o", "{t}/r", _file("r/x.txt", "x")),
    # --- prepare images
    Case("images ignore 0", PREP_IMAGES + " --ignore-label 0", "--ignore-label 0"),
    Case("images ignore is our label", PREP_IMAGES + " --ignore-label 2", "--ignore-label 2"),
    Case("images ignore mapped", PREP_IMAGES + " --labels disc=1,vertebra=2 --ignore-label 1", "--ignore-label 1"),
    Case("images ignore huge", PREP_IMAGES + " --ignore-label 70000", "--ignore-label 70000"),
    Case("images ignore text", PREP_IMAGES + " --ignore-label x", "--ignore-label"),
    Case("images labelled background", PREP_IMAGES + " --labelled-classes background", "--labelled-classes"),
    Case("images labelled comma", PREP_IMAGES + " --labelled-classes ,", "--labelled-classes"),
    Case("images labelled empty", PREP_IMAGES + " --labelled-classes ''", "--labelled-classes"),
    Case("images labelled unknown", PREP_IMAGES + " --labelled-classes disc,spleen", "spleen"),
    Case("images colour mask", PREP_MY_IMAGES, "c0.png", _images(colour_mask=True)),
    Case(
        "images cases.csv background",
        PREP_MY_IMAGES,
        "cases.csv",
        _images(cases_csv="case_id,labelled_classes\nc0,background\n"),
    ),
    Case("images spacing 0", PREP_IMAGES + " --pixel-spacing 0", "--pixel-spacing"),
    Case("images out is root", "prepare images --root {images} --out {images} --pixel-spacing 1", "inside"),
    # --- compare
    Case("suite missing", COMPARE, "s.yaml"),
    Case("suite shifts empty", COMPARE, "shifts", _suite("losses: [dice]\nshifts: []\n")),
    Case("suite shifts scalar", COMPARE, "bias_field", _suite("losses: [dice]\nshifts: 5\n")),
    Case("suite shifts string", COMPARE, "t1_contrast", _suite("losses: [dice]\nshifts: bias_field\n")),
    Case("suite shifts unknown", COMPARE, "'martian'", _suite("losses: [dice]\nshifts: [martian]\n")),
    Case("suite shifts dup", COMPARE, "shifts", _suite("losses: [dice]\nshifts: [bias_field, bias_field]\n")),
    Case("suite shifts on a manifest", COMPARE, "data.manifest", SUITE_SHIFTED_MANIFEST),
    Case("validate shifts on a manifest", "validate {t}/s.yaml", "data.manifest", SUITE_SHIFTED_MANIFEST),
    Case("dry-run shifts on a manifest", COMPARE + " --dry-run", "data.manifest", SUITE_SHIFTED_MANIFEST),
    Case(
        "validate set lora rank",
        "validate {t}/s.yaml",
        "model.params.text_lora_rank",
        _suite("base: {cfg}\nset: [model.params.text_lora_rank=-1]\nlosses: [dice]\n"),
    ),
    Case("suite not YAML", COMPARE, "s.yaml", _suite("losses: [dice")),
    Case("suite seeds empty", COMPARE, "seeds", _suite("losses: [dice]\nseeds: []\n")),
    Case("suite seeds 0", COMPARE, "seeds", _suite("losses: [dice]\nseeds: 0\n")),
    Case("suite seeds neg", COMPARE, "seeds", _suite("losses: [dice]\nseeds: [-1]\n")),
    Case("suite seeds dup", COMPARE, "seeds", _suite("losses: [dice]\nseeds: [1, 1]\n")),
    Case("suite rank_by typo", COMPARE, "dice_makro", _suite("losses: [dice]\nrank_by: dice_makro\n")),
    Case("suite columns typo", COMPARE, "acuracy", _suite("losses: [dice]\ncolumns: [dice_macro, acuracy]\n")),
    Case("suite baseline", COMPARE, "focal", _suite("losses: [dice]\nbaseline: focal\n")),
    Case("suite no losses", COMPARE, "losses", _suite("losses: []\n")),
    Case("suite unknown loss", COMPARE, "no_such", _suite("base: {cfg}\nlosses: [no_such]\n")),
    Case(
        "suite bad loss param",
        COMPARE,
        "smooth_nr",
        _suite("base: {cfg}\nlosses: [{{name: dice, params: {{smooth_nr: .nan}}}}]\n"),
    ),
    Case("suite base missing", COMPARE, "nobase.yaml", _suite("base: nobase.yaml\nlosses: [dice]\n")),
    Case("suite set typo", COMPARE, "train.epoch", _suite("base: {cfg}\nset: [train.epoch=2]\nlosses: [dice]\n")),
    Case("suite dup labels", COMPARE, "duplicate", _suite("losses: [dice, dice]\n")),
    Case("suite label slash", COMPARE, "a/b", _suite("losses: [{{name: dice, label: a/b}}]\n")),
    Case("suite unknown key", COMPARE, "lossess", _suite("lossess: [dice]\nlosses: [dice]\n")),
    Case("compare --seeds 0", "compare {t}/s.yaml --seeds 0 --out {t}/o", "--seeds", SUITE_OK),
    Case("compare out is a file", "compare {t}/s.yaml --out {t}/f", "{t}/f", _both(SUITE_OK, _file("f", "x"))),
    Case("compare out locked", COMPARE, "another lss-bench process", _both(SUITE_OK, _locked("o"))),
    # --- leaderboard
    Case("leaderboard dir missing", "leaderboard {t}/nope", "{t}/nope"),
    Case("leaderboard no runs", "leaderboard {t}", "runs/"),
    Case("leaderboard empty runs", "leaderboard {t}/s", "no finished runs", _file("s/runs/dice/readme.txt", "x")),
    Case("leaderboard metric typo", "leaderboard {suite} --metric dice_makro --format csv", "dice_makro"),
    Case("leaderboard baseline", "leaderboard {suite} --baseline nope --format csv", "nope"),
    Case("leaderboard format", "leaderboard {suite} --format xlsx", "xlsx"),
    # --- tune
    Case("study missing", TUNE, "st.yaml"),
    Case("study not YAML", TUNE, "st.yaml", _study("a: [")),
    Case("study no experiment", TUNE, "experiment", _study(LR_SPACE)),
    Case("study experiment missing", TUNE, "gone.yaml", _study("experiment: gone.yaml\n" + LR_SPACE)),
    Case("study --set typo", TUNE + " --set train.epoch=1", "train.epoch", _study("experiment: {cfg}\n" + LR_SPACE)),
    Case(
        "study search key typo",
        TUNE,
        "kpp",
        _study("experiment: {cfg}\n" + _space("loss.params.kpp", "type: float|low: 0.1|high: 1")),
    ),
    Case(
        "study search range",
        TUNE,
        "low",
        _study("experiment: {cfg}\n" + _space("train.lr", "type: float|low: 1|high: 0.1")),
    ),
    Case(
        "study search lr inf",
        TUNE,
        "train.lr",
        _study("experiment: {cfg}\n" + _space("train.lr", "type: categorical|choices: [.inf]")),
    ),
    Case("tune n-trials 0", "tune {study} --n-trials 0 --out {t}/o", "--n-trials"),
    Case("tune workers 0", "tune {study} --n-trials 1 --workers 0 --out {t}/o", "--workers"),
    Case("tune storage bad url", "tune {study} --n-trials 1 --storage nonsense --out {t}/o", "nonsense"),
    Case(
        "tune sqlite under file",
        "tune {study} --n-trials 1 --storage sqlite:///{t}/f/s.db --out {t}/o",
        "{t}/f",
        _file("f", "x"),
    ),
    Case(
        "tune journal under file",
        "tune {study} --n-trials 1 --storage journal:{t}/f/j.log --out {t}/o",
        "{t}/f",
        _file("f", "x"),
    ),
    Case("tune out is a file", "tune {study} --n-trials 1 --out {t}/f", "{t}/f", _file("f", "x")),
    Case("tune out locked", "tune {study} --n-trials 1 --out {t}/o", "another lss-bench process", _locked("o")),
    # --- evaluate / report
    Case("evaluate dir missing", "evaluate {t}/nope", "{t}/nope"),
    Case("evaluate no config", "evaluate {t}/run", "config.yaml", _file("run/x.txt", "x")),
    Case("evaluate bad config", "evaluate {t}/run", "config.yaml", _file("run/config.yaml", "model: [")),
    Case("evaluate config nan", "evaluate {t}/run", "train.lr", _file("run/config.yaml", "train: {{lr: .nan}}\n")),
    Case("evaluate no weights", "evaluate {t}/run", "model.safetensors", _copy_run("none")),
    Case("evaluate damaged weights", "evaluate {t}/run", "model.safetensors", _copy_run("damaged")),
    Case("evaluate truncated weights", "evaluate {t}/run", "model.safetensors", _copy_run("truncated")),
    Case("evaluate weights mismatch", "evaluate {t}/run", "model.safetensors", _copy_run("mismatch")),
    Case("evaluate split", "evaluate {t}/run --split holdout", "holdout", _copy_run("none")),
    Case("evaluate shifts empty", "evaluate {t}/run --shifts ,", "--shifts", _copy_run("none")),
    Case("evaluate shifts dup", "evaluate {t}/run --shifts bias_field,bias_field", "--shifts", _copy_run("none")),
    Case("evaluate shifts not a run", "evaluate {t} --shifts bias_field", "not a run directory"),
    Case("evaluate shifts manifest run", "evaluate {t}/run --shifts bias_field", "data.manifest", _copy_run("none")),
    Case(
        "evaluate shifts and instructions",
        "evaluate {t}/run --shifts bias_field --instructions",
        "--instructions",
        _copy_run("none"),
    ),
    Case("evaluate instructions all", "evaluate {t}/run --instructions --split all", "--instructions"),
    Case("evaluate manifest missing", "evaluate {t}/run --manifest {t}/none.csv", "none.csv", _copy_run("none")),
    Case(
        "evaluate manifest garbled",
        "evaluate {t}/run --manifest {t}/m.csv",
        "m.csv",
        _both(_copy_run("good"), _file("m.csv", "a,b\n1,2\n")),
    ),
    Case("report damaged weights", "report {t}/run --case c1", "model.safetensors", _copy_run("damaged")),
    Case("report weights mismatch", "report {t}/run --case c1", "model.safetensors", _copy_run("mismatch")),
    Case("report unknown case", "report {t}/run --case nope", "nope", _copy_run("damaged")),
    Case(
        "report manifest missing",
        "report {t}/run --case c1",
        "none.csv",
        _file("run/config.yaml", "data: {{manifest: {t}/none.csv}}\n"),
    ),
    Case("report no config", "report {t}/run --case c1", "config.yaml", _file("run/x.txt", "x")),
    Case("report out txt", "report {t}/run --case c1 --out {t}/x.txt", ".txt", _copy_run("damaged")),
    Case("report out folder", "report {t}/run --case c1 --out {t}", "--out", _copy_run("damaged")),
    Case(
        "report out under file",
        "report {t}/run --case c1 --out {t}/f/x.png",
        "{t}/f",
        _both(_copy_run("damaged"), _file("f", "x")),
    ),
    # --- the CLI itself
    Case("no command", "", "command"),
    Case("unknown command", "trian x", "trian"),
    Case("unknown option", "train {cfg} --lr 3", "--lr"),
]

#: Labels texts that must be refused (``prepare nifti --labels``), with the culprit the error names.
BAD_LABELS: list[tuple[str, str]] = [
    ("disc", "disc"), ("disc=", "disc="), ("=2", "=2"), ("nope=2", "nope"), ("disc=a", "a"), ("disc=5-2", "5-2"),
    ("disc=0-999999999", "0-999999999"), ("disc=2,canal=2", "2"), ("disc=-5", "-5"), ("disc=2-", "2-"),
    (",,,", ",,,"), ("disc=1.5", "1.5"), ("disc=99999999999999999999", "99999999999999999999"),
    ("canal=3,disc=0-70000", "0-70000"), ("disc==2", "=2"),
]  # fmt: skip
CASES += [
    Case(f"labels {text!r}", f"prepare nifti --root {{nifti}} --out {{t}}/o --labels {shlex.quote(text)}", culprit)
    for text, culprit in BAD_LABELS
]
#: Cases that also run in a fresh interpreter (``python -m benchmarks.cli``), end to end.
#: Few: a fresh interpreter that loads a config imports every model family (~20 s on a busy 2-core machine).
SUBPROCESS_CASES = ("set train.lr=.inf", "suite seeds empty", "prepare out inside root", "synth montage bmp",
                    "leaderboard metric typo", "no command")  # fmt: skip


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs shared by the cases (never modified by them): a tiny config, datasets, a suite, a study, weights."""
    from real_layouts import write_nifti, write_rsna2024
    from synthetic_runs import write_suite

    base = tmp_path_factory.mktemp("corpus_shared")
    cfg = base / "tiny.yaml"
    _write_manifest(base / "manifest.csv")
    cfg.write_text(TINY_CONFIG.format(manifest=base / "manifest.csv"))
    nifti = write_nifti(base / "nifti_parent" / "nifti", n_cases=2).parent
    rsna_bad = base / "rsna_bad"
    write_rsna2024(rsna_bad, n_studies=1)
    _break_instance_numbers(rsna_bad)
    suite = write_suite(base / "suite", {"dice": 0.7, "focal": 0.6}, seeds=2)
    study = base / "study.yaml"
    study.write_text(f"experiment: {cfg}\n" + LR_SPACE.replace("{{", "{").replace("}}", "}"))
    run_config, tiny_weights, other_weights = _weights(base, cfg)
    images = _write_images(base / "images_ds")
    return {
        "cfg": str(cfg),
        "nifti": str(nifti),
        "nifti_parent": str(nifti.parent),
        "rsna_bad": str(rsna_bad),
        "suite": str(suite),
        "study": str(study),
        "run_config": str(run_config),
        "tiny_weights": str(tiny_weights),
        "other_weights": str(other_weights),
        "base": str(base),
        "images": str(images),
    }


def _write_images(root: Path) -> Path:
    """A valid two-case ``images`` dataset: 8x8 .npy images, grey PNG masks with the values 0, 1, 2."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[1:3], mask[5:7] = 1, 2
    for case in ("c0", "c1"):
        np.save(root / "images" / f"{case}.npy", np.ones((8, 8), np.float32))
        Image.fromarray(mask).save(root / "masks" / f"{case}.png")
    return root


def _write_manifest(path: Path) -> None:
    """A valid one-case manifest (its image is never read: every case is refused before training starts)."""
    from lss_vlm.data.manifest import IMAGE_COLUMNS

    header = ["case_id", "patient_id", "split", "dataset", *IMAGE_COLUMNS]
    row = ["c1", "p1", "train", "phantom", "c1/sag_t1.nii.gz", *([""] * (len(IMAGE_COLUMNS) - 1))]
    path.write_text(",".join(header) + "\n" + ",".join(row) + "\n")


def _break_instance_numbers(root: Path) -> None:
    """Every DICOM instance of the fake RSNA study gets the InstanceNumber 'abc' (written raw, as a broken scanner)."""
    import pydicom
    from pydicom.dataelem import DataElement

    for path in root.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds[0x00200013] = DataElement(0x00200013, "LO", "abc")
        ds.save_as(path)


def _weights(base: Path, cfg: Path) -> tuple[Path, Path, Path]:
    """The resolved tiny config, its model's weights, and the weights of a wider model that does not fit it."""
    from benchmarks.config import dump_config, load_config
    from benchmarks.runner import build_model_from_config
    from lss_vlm.engine.checkpoints import save_weights

    config = load_config(cfg)
    run_config = base / "run_config.yaml"
    dump_config(config, run_config)
    save_weights(build_model_from_config(config), base / "tiny.safetensors")
    wider = load_config(cfg, ["model.params.embed_dim=48"])
    save_weights(build_model_from_config(wider), base / "wider.safetensors")
    return run_config, base / "tiny.safetensors", base / "wider.safetensors"


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots``: path -> (size, mtime_ns); folders have size -1."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                seen[os.path.join(dirpath, name)] = (-1, 0)
            for name in filenames:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                seen[path] = (info.st_size, info.st_mtime_ns)
    return seen


def _prepare(case: Case, tmp_path: Path, shared: dict[str, str]) -> tuple[list[str], str]:
    env = {**shared, "t": str(tmp_path)}
    if case.setup is not None:
        case.setup(tmp_path, env)
    return shlex.split(case.argv.format(**env)), case.culprit.format(**env)


def _check_output(output: str, code: int, culprit: str) -> None:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert code == 2, f"exit code {code}, expected 2; output:\n{output}"
    assert len(errors) == 1, f"expected one error line, got:\n{output}"
    assert culprit in errors[0], f"the error line does not name {culprit!r}: {errors[0]}"


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    while HELD:
        HELD.pop().release()


# ---------------------------------------------------------------------------------------------------------- tests
def test_the_corpus_is_large_and_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 150, len(CASES)
    assert set(SUBPROCESS_CASES) <= set(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_error_line_and_changes_nothing(
    case: Case, tmp_path: Path, shared: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv, culprit = _prepare(case, tmp_path, shared)
    before = _snapshot(tmp_path, Path(shared["base"]))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    _check_output(captured.out + captured.err, code, culprit)
    assert _snapshot(tmp_path, Path(shared["base"])) == before, "files were written, changed or deleted"


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_through_a_fresh_interpreter(case_id: str, tmp_path: Path, shared: dict[str, str]) -> None:
    case = next(c for c in CASES if c.id == case_id)
    argv, culprit = _prepare(case, tmp_path, shared)
    before = _snapshot(tmp_path, Path(shared["base"]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", *argv], capture_output=True, text=True, env=env, timeout=600
    )
    _check_output(done.stdout + done.stderr, done.returncode, culprit)
    assert _snapshot(tmp_path, Path(shared["base"])) == before


# ------------------------------------------------------------------------------------------ parsing boundaries
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(
        [
            "train.lr",
            "train.epochs",
            "model.params.embed_dim",
            "loss.params.smooth_nr",
            "data.batch_size",
            "train.nope",
            "x",
            "train..lr",
            "",
        ]
    ),  # fmt: skip
    value=_TEXT | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers().map(str),
)
def test_any_set_override_loads_or_raises_one_config_error(key: str, value: str) -> None:
    """``--set KEY=VALUE``: whatever the text, a valid config or a one-line ConfigError; never NaN/Inf accepted."""
    from benchmarks.config import load_config
    from lss_vlm.errors import ConfigError

    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        assert "\n" not in str(exc).strip()
        return
    numbers = [cfg.train.lr, cfg.loss.params.get("smooth_nr", 1.0), cfg.data.batch_size, cfg.train.epochs]
    assert all(np.isfinite(float(n)) for n in numbers)
    assert 1 <= cfg.model.params["embed_dim"] <= 1 << 16


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.tuples(
            st.sampled_from(["disc", "canal", "lf", "bg", "nope", "", "DISC", "thecal sac"]),
            st.sampled_from(["=", "", "=="]),
            st.integers(-10, 10**10).map(str)
            | st.tuples(st.integers(-5, 10**9), st.integers(-5, 10**9)).map(lambda r: f"{r[0]}-{r[1]}")
            | _TEXT,
        ).map("".join),
        max_size=4,
    ).map(",".join)
)
def test_any_labels_text_parses_to_a_bounded_mapping_or_one_config_error(text: str) -> None:
    """``--labels``: a mapping of at most 16-bit source values, or a one-line ConfigError; never a huge table."""
    from lss_vlm.data.labels import MASK_VALUE_MAX, MASK_VALUE_MIN, parse_label_mapping
    from lss_vlm.errors import ConfigError

    try:
        mapping = parse_label_mapping(text)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip()
        return
    assert mapping and all(MASK_VALUE_MIN <= value <= MASK_VALUE_MAX for value in mapping)
    assert len(mapping) <= MASK_VALUE_MAX - MASK_VALUE_MIN + 1


def test_a_run_folder_planted_in_a_suite_is_reported_in_one_line(tmp_path: Path, capsys) -> None:
    """``leaderboard`` over a run whose metrics.json is damaged still writes the table (counted as failed)."""
    from synthetic_runs import write_suite

    suite = write_suite(tmp_path / "s", {"dice": 0.7, "focal": 0.6}, seeds=2)
    (suite / "runs" / "focal" / "seed0" / "metrics.json").write_text('{"dice_macro": 0.')
    assert main(["leaderboard", str(suite), "--format", "md"]) == 0
    text = (suite / "leaderboard.md").read_text()
    assert "FAILED run focal seed0: damaged" in text
    assert json.loads((suite / "runs" / "dice" / "seed0" / "metrics.json").read_text())


@pytest.mark.parametrize(
    "argv",
    [
        "synth --out {t}/ph --cases 5 --size 32 --no-montage",
        "prepare nifti --root {nifti} --out {t}/o --labels disc=7",
        "train {cfg} --out {t}/run",
        "leaderboard {t}/suite --format csv",
    ],
    ids=["synth", "prepare", "train", "leaderboard"],
)
def test_a_read_only_folder_is_one_error_line(argv: str, tmp_path: Path, shared, monkeypatch, capsys) -> None:
    """A folder the system will not write into (read-only, no permission): one line naming it, exit 2.

    Simulated by making every folder/temp-file creation under the case folder fail with EROFS, since the tests may
    run as root, where a read-only mode does not stop writes.
    """
    import errno
    import shutil
    import tempfile

    shutil.copytree(shared["suite"], tmp_path / "suite")
    refused = str(tmp_path)

    def deny(path: object) -> None:
        if str(path).startswith(refused):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_mkdir, real_mkstemp, real_mkdtemp = Path.mkdir, tempfile.mkstemp, tempfile.mkdtemp
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: (deny(self), real_mkdir(self, *a, **k))[1])
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (deny(k.get("dir")), real_mkstemp(*a, **k))[1])
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: (deny(k.get("dir")), real_mkdtemp(*a, **k))[1])
    before = _snapshot(tmp_path)
    code = main(shlex.split(argv.format(**shared, t=tmp_path)))
    captured = capsys.readouterr()
    _check_output(captured.out + captured.err, code, "Read-only file system")
    assert refused in [line for line in captured.err.splitlines() if "error:" in line][0]
    assert _snapshot(tmp_path) == before
