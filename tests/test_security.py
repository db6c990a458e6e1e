"""No code execution from files a user or a shared run folder hands us.

* ``state.pt`` of a checkpoint is read with ``torch.load(weights_only=True)``: a planted pickle payload is refused.
* Grep-level guard: no ``torch.load`` without ``weights_only=True`` and no ``yaml.load`` without a safe loader in the
  package sources (``lss_vlm``, ``losses``, ``benchmarks``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from lss_vlm.engine.checkpoints import STATE_FILE, load_checkpoint, save_checkpoint
from lss_vlm.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lss_vlm", "losses", "benchmarks")


class _Payload:
    """Pickles into a call of ``os.system`` that creates a marker file: the classic pickle exploit."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_objects() -> tuple[nn.Module, torch.optim.Optimizer, object, nn.Module]:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    return model, optimizer, scheduler, nn.Identity()


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path: Path) -> None:
    model, optimizer, scheduler, loss = _tiny_objects()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    history = [{"epoch": 1.0, "val/dice_macro": 0.5}]
    save_checkpoint(tmp_path / "last", model, optimizer, scheduler, loss, {"epoch": 1, "history": history})
    torch.load(tmp_path / "last" / STATE_FILE, weights_only=True)  # the file itself is weights_only-safe
    other, other_opt, other_sched, other_loss = _tiny_objects()
    state = load_checkpoint(tmp_path / "last", other, other_opt, other_sched, other_loss)
    assert state == {"epoch": 1, "history": history}
    assert other_sched.last_epoch == 1
    assert torch.equal(other.weight, model.weight)


def test_planted_pickle_payload_in_state_pt_does_not_run(tmp_path: Path) -> None:
    model, optimizer, scheduler, loss = _tiny_objects()
    folder = tmp_path / "run" / "checkpoints" / "last"
    save_checkpoint(folder, model, optimizer, scheduler, loss, {"epoch": 1})
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Payload(marker), "rng": {}, "trainer": {}}, folder / STATE_FILE)
    with pytest.raises(DataError, match="state.pt: not a training state this toolkit wrote"):
        load_checkpoint(folder, *_tiny_objects())
    assert not marker.exists(), "the pickle payload ran"
    # the same file read the unsafe way would run it: the test can fail
    torch.load(folder / STATE_FILE, weights_only=False)
    assert marker.exists()


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every ``name(...)`` call in ``text`` (balanced parentheses)."""
    found = []
    for match in re.finditer(rf"\b{re.escape(name)}\s*\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        found.append(text[match.end() : i - 1])
    return found


def test_no_unsafe_torch_load_or_yaml_load_in_the_package() -> None:
    offenders = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        offenders += [f"{rel}: torch.load({a})" for a in _calls(text, "torch.load") if "weights_only=True" not in a]
        for args in _calls(text, "yaml.load"):
            if not re.search(r"Loader\s*=\s*(yaml\.)?(Safe|CSafe)Loader", args):
                offenders.append(f"{rel}: yaml.load({args})")
        offenders += [f"{rel}: {m}" for m in re.findall(r"yaml\.(?:unsafe_load|full_load)\w*", text)]
        offenders += [f"{rel}: pickle.load" for _ in re.findall(r"\bpickle\.loads?\(", text)]
    assert not offenders, "unsafe deserialisation: " + "; ".join(offenders)


def test_the_grep_guard_catches_an_unsafe_call() -> None:
    text = "x = torch.load(path, map_location='cpu')\ny = yaml.load(f)\nz = torch.load(p, weights_only=True)"
    assert [a for a in _calls(text, "torch.load") if "weights_only=True" not in a] == ["path, map_location='cpu'"]
    assert _calls(text, "yaml.load") == ["f"]


def test_train_resume_over_a_planted_state_pt_does_not_run_it(tiny_phantom: Path, tmp_path: Path, capsys) -> None:
    """The attack of issue 15: a run folder that looks interrupted (no status.json) with a pickle in state.pt."""
    from benchmarks.cli import main
    from benchmarks.config import dump_config, load_config
    from benchmarks.runner import build_model_from_config
    from lss_vlm.engine.checkpoints import save_weights

    overrides = [f"data.manifest={tiny_phantom}", "model.preset=spca_tiny", "train.epochs=1", "eval.text_metrics=false"]
    cfg = load_config(None, overrides)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last"
    last.mkdir(parents=True)
    dump_config(cfg, run / "config.yaml")
    save_weights(build_model_from_config(cfg), last / "model.safetensors")
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Payload(marker), "rng": {}, "trainer": {}}, last / STATE_FILE)
    (tmp_path / "empty.yaml").write_text("")  # all defaults, plus the overrides
    argv = ["train", str(tmp_path / "empty.yaml"), "--quiet", "--out", str(run)]
    assert main(argv + [a for o in overrides for a in ("--set", o)]) == 2
    assert not marker.exists(), "the pickle payload ran"
    err = capsys.readouterr().err
    assert "state.pt: not a training state this toolkit wrote" in err and "Traceback" not in err
