"""No lost or destroyed data (issue 15, section 2): folder locks, refusing to overwrite, stale staging clean-up,
resume of a config without a ``loss:`` section, and a damaged DICOM case skipped instead of failing the dataset."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from real_layouts import write_nifti, write_rsna2024

from benchmarks.cli import main
from benchmarks.config import config_from_dict, dump_config, load_config
from benchmarks.outputs import LOCK_NAME
from benchmarks.runner import check_run_folder
from lss_vlm.data.adapters import prepare_dataset
from lss_vlm.io import pid_alive

SYNTH = ["synth", "--cases", "5", "--size", "32", "--no-montage"]


def _dead_pid() -> int:
    """The id of a process that has exited (a child we started and reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    return child.pid


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synth_refuses_a_folder_holding_a_dataset_unless_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ph"
    assert main([*SYNTH, "--out", str(out)]) == 0
    before = _files(out)
    assert main([*SYNTH, "--out", str(out)]) == 0  # the same phantom again: returns at once, nothing refused
    assert main([*SYNTH, "--out", str(out), "--seed", "1"]) == 2  # another phantom over it: refused
    assert "not empty" in capsys.readouterr().err
    assert _files(out) == before
    assert main([*SYNTH, "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    assert _files(out) != before


def _stage(out: Path, *names: str) -> None:
    for name in names:
        (out / name / "cases").mkdir(parents=True)
        (out / name / "cases" / "x.nii.gz").write_bytes(b"0" * 1000)


def test_synth_cleans_staging_folders_of_dead_processes(tmp_path: Path) -> None:
    out, dead = tmp_path / "ph", _dead_pid()
    _stage(out, f".staging-{dead}", f".old-{dead}")  # what kill -9 left: not data, no --overwrite needed
    assert main([*SYNTH, "--out", str(out)]) == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    _stage(out, f".staging-{dead}", ".staging-1")  # pid 1 (init) is alive: a running synth, not ours to remove
    assert main([*SYNTH, "--out", str(out), "--seed", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".staging-1"]


def test_prepare_cleans_staging_folders_of_dead_processes(tmp_path: Path) -> None:
    root = write_nifti(tmp_path / "src", n_cases=4).parent
    out, dead = tmp_path / "prepared", _dead_pid()
    stale = [tmp_path / f".prepared.{dead}.abc123.tmp", tmp_path / f".prepared.old-{dead}"]
    live = tmp_path / ".prepared.1.xyz.tmp"
    for folder in [*stale, live]:
        folder.mkdir()
        (folder / "manifest.csv").write_text("x")
    prepare_dataset("nifti", root / "manifest.csv", out, labels="disc=7,canal=9")
    assert (out / "manifest.csv").is_file()
    assert not any(p.exists() for p in stale) and live.is_dir()


def test_prepare_overwrite_never_deletes_the_source(tmp_path: Path, capsys) -> None:
    root = write_nifti(tmp_path / "data" / "src", n_cases=2).parent
    before = _files(tmp_path)
    for out in (tmp_path / "data", tmp_path, root, root / "out"):
        args = ["prepare", "nifti", "--root", str(root), "--out", str(out), "--overwrite", "--labels", "disc=7"]
        assert main(args) == 2
        assert "--root" in capsys.readouterr().err
    assert _files(tmp_path) == before


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds the lock of ``folder`` until killed."""
    folder.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, time; from filelock import FileLock; "
        f"lock = FileLock({str(folder / LOCK_NAME)!r}); lock.acquire(); print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.parametrize("command", ["train", "compare", "tune"])
def test_a_second_process_on_the_same_out_folder_is_refused(tmp_path: Path, capsys, command: str) -> None:
    cfg = tmp_path / "tiny.yaml"
    from test_bad_input_corpus import _write_manifest

    _write_manifest(tmp_path / "m.csv")  # a valid manifest: the lock is what refuses
    cfg.write_text(f"model: {{preset: spca_tiny}}\ndata: {{manifest: {tmp_path / 'm.csv'}}}\n")
    (tmp_path / "s.yaml").write_text(f"base: {cfg}\nlosses: [dice]\n")
    (tmp_path / "st.yaml").write_text(
        f"experiment: {cfg}\nsearch_space:\n  params:\n    train.lr: {{type: float, low: 0.001, high: 0.01}}\n"
    )
    out = tmp_path / "out"
    argv = {
        "train": ["train", str(cfg), "--out", str(out)],
        "compare": ["compare", str(tmp_path / "s.yaml"), "--out", str(out)],
        "tune": ["tune", str(tmp_path / "st.yaml"), "--n-trials", "1", "--out", str(out)],
    }[command]
    holder = _hold_lock(out)
    try:
        start = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - start < 60  # refused at once, no waiting
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another lss-bench process" in err[0] and str(out) in err[0]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_resume_of_a_config_without_a_loss_section(tmp_path: Path) -> None:
    path = tmp_path / "noloss.yaml"
    path.write_text("name: t\nmodel: {preset: spca_tiny}\n")
    fresh = load_config(path)
    run = tmp_path / "run"
    run.mkdir()
    dump_config(fresh, run / "config.yaml")  # what a run killed with kill -9 leaves
    check_run_folder(load_config(path), run)  # the same command again: resumes, no "different config"
    import yaml

    saved = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert saved.loss == fresh.loss and fresh.loss.params  # the loss defaults are filled in both


@pytest.mark.parametrize("keyword", ["InstanceNumber", "SliceThickness", "RescaleSlope"])
def test_a_non_numeric_dicom_tag_skips_that_case_and_names_it(tmp_path: Path, keyword: str) -> None:
    root = tmp_path / "rsna"
    write_rsna2024(root, n_studies=3)
    studies = sorted(p.name for p in (root / "train_images").iterdir())
    tag = pydicom.datadict.tag_for_keyword(keyword)
    for path in (root / "train_images" / studies[0]).rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds[tag] = DataElement(tag, "LO", "n/a")
        ds.save_as(path)
    result = prepare_dataset("rsna2024", root, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert result.summary["cases"] if "cases" in result.summary else True
    skipped = [s for s in summary["skipped"] if studies[0] in s["item"]]
    assert skipped and any(keyword in s["reason"] for s in skipped), summary["skipped"]
    manifest = (tmp_path / "out" / "manifest.csv").read_text()
    assert studies[1] in manifest and studies[2] in manifest
