"""``load_weights``: weights of another model or a damaged file give one DataError naming the file and the likely
cause (an edited config.yaml or a run of another lss-vlm version), never a torch traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from lss_vlm.engine.checkpoints import load_weights, save_weights
from lss_vlm.errors import DataError


def test_weights_of_another_model_name_the_file_and_the_causes(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(nn.Linear(4, 3), path)
    with pytest.raises(DataError) as info:
        load_weights(nn.Linear(4, 5), path)
    message = str(info.value)
    assert message.startswith(f"{path}: the weights do not fit the model")
    assert "config.yaml edited after training" in message and "another lss-vlm version" in message
    load_weights(nn.Linear(4, 3), path)  # the right model loads


def test_a_damaged_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not safetensors")
    with pytest.raises(DataError, match=r"damaged or not a safetensors file"):
        load_weights(nn.Linear(4, 3), path)
