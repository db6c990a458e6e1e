"""Experiment config: schema defaults, YAML + --set overrides, clear errors, resolved dump."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.config import CONFIG_ROOT, ExperimentConfig, config_hash, dump_config, load_config
from lss_vlm.errors import ConfigError

QUICK = CONFIG_ROOT / "experiments" / "phantom_quick.yaml"


def test_shipped_experiments_and_presets_validate() -> None:
    for path in sorted((CONFIG_ROOT / "experiments").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.model.params["image_size"] == cfg.data.spatial_size, path
    for preset in sorted((CONFIG_ROOT / "models").glob("*.yaml")):
        cfg = load_config(None, [f"model.preset={preset.stem}"])
        assert cfg.model.name == yaml.safe_load(preset.read_text())["name"]


def test_overrides_are_parsed_as_yaml_and_type_checked() -> None:
    cfg = load_config(QUICK, ["train.lr=3e-4", "train.grad_clip=null", "loss.name=tversky", "loss.params.beta=0.7"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.grad_clip is None
    assert cfg.loss.name == "tversky" and cfg.loss.params["beta"] == pytest.approx(0.7)


def test_model_params_are_checked_by_the_type_of_their_default() -> None:
    """text_lora_rank=-1 / 1.5 / 'abc' and instruct_weight='abc' passed the config (and validate) and failed only
    when the model was built, after the run folder was written. Valid values still load."""
    cfg = load_config(
        QUICK, ["model.params.text_lora_rank=8", "model.params.instruct_weight=2", "model.params.gate_init=-0.5"]
    )
    assert cfg.model.params["text_lora_rank"] == 8 and cfg.model.params["instruct_weight"] == 2
    for override, expected in (
        ("model.params.text_lora_rank=-1", r"text_lora_rank: expected a whole number from 0 \(off\) to 4096, got -1"),
        ("model.params.report_lora_rank=1.5", r"report_lora_rank: .* got 1\.5"),
        ("model.params.text_lora_rank=abc", r"text_lora_rank: .* got 'abc'"),
        ("model.params.text_lora_rank=true", r"text_lora_rank: .* got True"),
        ("model.params.instruct_weight=-1", r"instruct_weight: expected a number >= 0, got -1"),
        ("model.params.lora_alpha=abc", r"lora_alpha: expected a number, got 'abc'"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_config(QUICK, [override])


def test_resolved_config_writes_every_default_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(QUICK, ["loss.name=pid_tversky"])
    path = tmp_path / "config.yaml"
    dump_config(cfg, path)
    written = yaml.safe_load(path.read_text())
    assert set(written) == set(ExperimentConfig.model_fields)
    assert set(written["train"]) == set(type(cfg.train).model_fields)
    assert "kp" in written["loss"]["params"]  # the loss's registered defaults are filled in
    assert "embed_dim" in written["model"]["params"]  # so are the model constructor's
    reloaded = load_config(path)
    assert config_hash(reloaded) == config_hash(cfg)
    assert config_hash(load_config(QUICK, ["train.seed=1"])) != config_hash(cfg)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", r"unknown config key 'train\.lrr'; allowed keys in train: epochs, lr"),
        ("trainx.lr=1", r"allowed keys in top level: name, data, model, loss, train, eval"),
        ("train.schedule=linear", r"train\.schedule: Input should be 'cosine', 'onecycle' or 'constant'"),
        ("train.epochs=abc", r"train\.epochs: Input should be a valid integer"),
        ("train.epochs=0", r"train\.epochs: Input should be greater than or equal to 1"),
        ("loss.name=nope", r"loss\.name: unknown loss 'nope'; choose one of: .*dice"),
        ("loss.params.bogus=1", r"loss\.params: .*bogus"),
        ("model.name=resnet", r"model\.name: unknown model 'resnet'; choose one of: .*spca_vlm"),
        ("model.params.foo=1", r"model\.params: unknown argument\(s\) foo .*valid: .*embed_dim"),
        ("model.preset=huge", r"model\.preset 'huge' not found; choose one of: .*spca_tiny"),
        ("model.params.image_size=32", r"image_size \(32\) must equal data\.spatial_size \(64\)"),
        ("train.lr.x=1", r"train\.lr is a value, not a section"),
        ("train.lr", r"expected KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_key_and_the_choices(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(QUICK, [override])


def test_bad_yaml_files_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'train\.epoch'; allowed here: epochs"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("train:\n  epochs: [3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(line \d+, column \d+: ") as caught:
        load_config(bad)
    assert "\n" not in str(caught.value)  # one line, however PyYAML formats its message
