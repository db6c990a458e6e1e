"""A researcher's own loss: ``--import MODULE``, ``package.module:factory`` names, entry-point plugins, hook-less
``nn.Module`` losses, and ``--import`` reaching the worker processes of ``tune``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from tuning_helpers import REPO, run_tune, write_synthetic_study

import losses
from benchmarks.cli import main
from benchmarks.config import config_from_dict
from losses import registry as loss_registry
from losses.errors import LossConfigError
from lss_vlm.errors import ConfigError
from lss_vlm.registry import Registry

#: The user's loss: a plain nn.Module (no SegLoss hooks), registered by name.
MY_LOSS = """\
import torch
from torch import nn

import losses


@losses.register_loss("my_plain_ce")
class MyPlainCE(nn.Module):
    \"\"\"Cross-entropy written by hand, a plain nn.Module without the SegLoss hooks.\"\"\"

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, target):
        return torch.nn.functional.cross_entropy(logits, target[:, 0].long(), label_smoothing=self.smoothing)


@losses.register_loss("my_soft_dice")
class MySoftDice(nn.Module):
    \"\"\"1 - soft Dice over all classes, background included (a second user loss, added to a finished suite).\"\"\"

    def forward(self, logits, target):
        probs = logits.softmax(1)
        onehot = torch.zeros_like(probs).scatter_(1, target.long(), 1.0)
        overlap = (probs * onehot).sum((0, 2, 3))
        return 1 - (2 * overlap / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5)).mean()
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def isolated_loss_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugins registered by a test do not outlive it."""
    monkeypatch.setattr(loss_registry, "_LOSSES", dict(loss_registry._LOSSES))
    monkeypatch.setattr(loss_registry, "_PLUGINS", {})
    monkeypatch.setattr(loss_registry, "_plugins_loaded", False)


def _dist_info(root: Path, name: str, entry_points: str) -> None:
    """An installed-looking distribution (``<name>-0.1.dist-info``) with the given ``entry_points.txt``."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points), encoding="utf-8")


# ------------------------------------------------------------------------------------------- compare --import (real)
def test_compare_with_imported_plain_module_loss(tmp_path: Path, tiny_phantom: Path) -> None:
    """A user loss from a module given to --import trains through compare; a second one is then added to the same
    folder with --losses, and only its run is trained (issue 16's target)."""
    module = _write(tmp_path / "my_loss.py", MY_LOSS)
    suite = {
        "name": "mine",
        "set": [
            "model.preset=spca_tiny",
            "data.batch_size=4",
            "data.spatial_size=64",
            "eval.text_metrics=false",
            "train.epochs=1",
            f"data.manifest={tiny_phantom}",
        ],
        "losses": [{"name": "my_plain_ce", "params": {"smoothing": 0.1}}],
        "seeds": 1,
    }
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.cli", "compare", str(suite_path), "--import", str(module)]
    result = subprocess.run(
        [*cmd, "--out", str(out), "--no-progress"], env=_env(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status = yaml.safe_load((out / "runs/my_plain_ce/seed0/status.json").read_text())
    assert status["status"] == "completed", status
    board = pd.read_csv(out / "leaderboard.csv").set_index("loss")
    assert "my_plain_ce" in board.index
    assert board.loc["my_plain_ce", "n_seeds"] == 1
    assert 0.0 <= board.loc["my_plain_ce", "dice_macro_mean"] <= 1.0

    # the folder grows by a second user loss: only its run is trained, the first is reused untouched
    first = out / "runs/my_plain_ce/seed0/metrics.json"
    stamp = first.stat().st_mtime_ns
    result = subprocess.run(
        [*cmd, "--losses", "my_soft_dice", "--out", str(out), "--no-progress"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.relative_to(out / "runs").as_posix() for p in (out / "runs").glob("*/seed*")) == [
        "my_plain_ce/seed0",
        "my_soft_dice/seed0",
    ]
    assert first.stat().st_mtime_ns == stamp
    board = pd.read_csv(out / "leaderboard.csv").set_index("loss")
    assert set(board.index) >= {"my_plain_ce", "my_soft_dice"} and (board["n_seeds"] == 1).all()


# ------------------------------------------------------------------------------------------------- --import errors
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz", "no module named 'no_such_module_xyz'"),
        ("missing_file.py", "no such Python file"),
        ("broken.py", "failed to import: SyntaxError"),
        ("needs_dep.py", "failed to import: ModuleNotFoundError"),
    ],
)
def test_unimportable_module_is_one_error_line(tmp_path, monkeypatch, capsys, spec, message) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "broken.py", "def oops(:\n")
    _write(tmp_path / "needs_dep.py", "import not_installed_dependency_xyz\n")
    assert main(["list", "losses", "--import", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lss-bench list: error: --import"), err
    assert message in err[0]


def test_import_by_name_finds_a_module_in_the_current_folder(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    marker = tmp_path / "imported.txt"
    _write(tmp_path / "cwd_plugin_mod.py", f"open({str(marker)!r}, 'w').write('yes')\n")
    assert main(["list", "suites", "--import", "cwd_plugin_mod"]) == 0
    assert marker.read_text() == "yes"
    sys.modules.pop("cwd_plugin_mod", None)


# ------------------------------------------------------------------------------------ "package.module:factory" names
def test_config_names_a_loss_by_module_and_factory(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(
        tmp_path / "factory_mod_a.py",
        """\
        from torch import nn

        class Weighted(nn.Module):
            \"\"\"A weighted CE.\"\"\"

            def __init__(self, weight: float = 2.0) -> None:
                super().__init__()
                self.weight = weight

            def forward(self, logits, target):
                return self.weight * nn.functional.cross_entropy(logits, target[:, 0])

        def not_a_module(weight: float = 1.0):
            return 42
        """,
    )
    cfg = config_from_dict({"loss": {"name": "factory_mod_a:Weighted", "params": {"weight": 3.0}}})
    assert cfg.loss.params == {"weight": 3.0}
    loss = losses.build_loss(cfg.loss.name, **cfg.loss.params)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))
    assert torch.isclose(loss(logits, target), 3.0 * nn.functional.cross_entropy(logits, target[:, 0]))
    assert "factory_mod_a:Weighted" not in losses.available_losses()  # resolved, not registered
    with pytest.raises(ConfigError, match=r"loss\.params: .*unknown argument\(s\) wieght"):
        config_from_dict({"loss": {"name": "factory_mod_a:Weighted", "params": {"wieght": 3.0}}})
    with pytest.raises(ConfigError, match="has no loss class or factory named 'Nope'"):
        config_from_dict({"loss": {"name": "factory_mod_a:Nope"}})
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg_xyz.losses'.*No module named 'no_such_pkg_xyz'"):
        config_from_dict({"loss": {"name": "no_such_pkg_xyz.losses:Thing"}})
    with pytest.raises(LossConfigError, match="returned a int; expected a torch.nn.Module"):
        losses.build_loss("factory_mod_a:not_a_module")


# -------------------------------------------------------------------------------------------- entry-point plugins
def test_loss_entry_points_load_lazily_and_name_a_broken_plugin(tmp_path, monkeypatch, isolated_loss_registry) -> None:
    _write(
        tmp_path / "plugmod_b.py",
        """\
        from torch import nn

        class PlugLoss(nn.Module):
            \"\"\"The plugin's loss.\"\"\"

            def forward(self, logits, target):
                return logits.mean() * 0
        """,
    )
    _dist_info(tmp_path, "lss_plugin_b", "[lss_vlm.losses]\nplug_loss = plugmod_b:PlugLoss\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugmod_b" not in sys.modules  # lazily: nothing imported before the registry is asked
    assert "plug_loss" in losses.available_losses()
    assert losses.loss_spec("plug_loss")["summary"] == "The plugin's loss."
    assert losses.loss_origin("plug_loss").startswith("plugin: entry point 'plug_loss = plugmod_b:PlugLoss'")
    assert isinstance(losses.build_loss("plug_loss"), nn.Module)

    _dist_info(tmp_path / "more", "lss_plugin_c", "[lss_vlm.losses]\nbroken_loss = not_there_xyz:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path / "more"))
    monkeypatch.setattr(loss_registry, "_plugins_loaded", False)
    with pytest.raises(LossConfigError, match=r"entry point 'broken_loss = not_there_xyz:Thing'.*lss_plugin_c"):
        losses.available_losses()
    sys.modules.pop("plugmod_b", None)


def test_a_broken_loss_plugin_is_one_cli_error_line(tmp_path, monkeypatch, capsys, isolated_loss_registry) -> None:
    _dist_info(tmp_path, "lss_plugin_d", "[lss_vlm.losses]\nbad = not_there_either_xyz:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list", "losses"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss plugin entry point 'bad = not_there_either_xyz:Thing'" in err[0], err


def test_model_registry_loads_its_entry_point_group(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "plugmod_e.py", "def tiny_model(width: int = 2):\n    '''A tiny model.'''\n    return width\n")
    _dist_info(tmp_path, "lss_plugin_e", "[lss_test.models]\ntiny = plugmod_e:tiny_model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[int] = Registry("model", entry_point_group="lss_test.models")
    assert registry.names() == ["tiny"]
    assert registry.build("tiny", width=5) == 5
    assert registry.origin("tiny").startswith("plugin: entry point 'tiny = plugmod_e:tiny_model'")
    with pytest.raises(ConfigError, match=r"unknown model 'tinny'.*did you mean tiny\?"):
        registry.get("tinny")
    sys.modules.pop("plugmod_e", None)


# ---------------------------------------------------------------------------------------- hooks are optional
def test_trainer_calls_only_the_hooks_a_loss_has() -> None:
    from lss_vlm.engine.trainer import Trainer

    calls: list[str] = []

    class OnlyEpochHook(nn.Module):
        def on_epoch_end(self) -> None:
            calls.append("epoch")

    trainer = Trainer.__new__(Trainer)
    trainer.loss = OnlyEpochHook()
    for hook in ("on_step_end", "on_epoch_end", "on_validation"):
        trainer._call_hook(hook, *(() if hook != "on_validation" else (torch.zeros(6),)))
    assert calls == ["epoch"]
    assert trainer._controller_row() == {}


# ---------------------------------------------------------------------------------- --import in tune's workers
def test_tune_workers_import_the_user_modules(tmp_path: Path) -> None:
    marker = tmp_path / "pids.txt"
    module = _write(tmp_path / "pid_marker.py", f"import os\nopen({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n")
    study = write_synthetic_study(tmp_path, epochs=1)
    result = run_tune(
        study,
        "--n-trials",
        "2",
        "--workers",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--no-figures",
        "--import",
        str(module),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pids = marker.read_text().split()
    assert len(set(pids)) == 3, pids  # the command's process and both spawned workers
