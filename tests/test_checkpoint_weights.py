"""``load_weights``: weights of another model or a damaged file give one DataError naming the file and the likely
cause (an edited config.yaml or a run of another lss-vlm version), never a torch traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lss_vlm.engine.checkpoints import load_matching_weights, load_weights, save_weights
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


class _Tiny(nn.Module):
    """Embedding tied to the output layer (as the report decoder's), an encoder and a head of ``n_out`` outputs."""

    def __init__(self, vocab: int = 7, n_out: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8))
        self.embed = nn.Embedding(vocab, 8)
        self.lm_head = nn.Linear(8, vocab, bias=False)
        self.lm_head.weight = self.embed.weight
        self.head = nn.Linear(8, n_out)


def test_fine_tuning_loads_what_fits_and_names_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    source = _Tiny(vocab=7, n_out=3)
    save_weights(source, path)
    target = _Tiny(vocab=9, n_out=3)  # another report vocabulary: the tied embedding no longer fits
    loaded, skipped = load_matching_weights(target, path)
    assert torch.equal(target.encoder[1].weight, source.encoder[1].weight)
    assert torch.equal(target.head.bias, source.head.bias)
    assert not torch.equal(target.embed.weight[:7], source.embed.weight)  # kept fresh
    assert sorted(s.split(" ")[0] for s in skipped) == ["embed.weight", "lm_head.weight"]
    assert any("shape 7x8 in the file, 9x8 here" in s for s in skipped)
    assert loaded == len(target.state_dict()) - 2

    same = _Tiny(vocab=7, n_out=3)  # same shapes: everything, the tied tensor stored once included
    assert load_matching_weights(same, path)[1] == []
    assert torch.equal(same.lm_head.weight, source.embed.weight)

    words = _Tiny(vocab=7, n_out=3)  # same size, other words: the caller keeps the embedding fresh
    _, skipped = load_matching_weights(words, path, fresh=("embed.weight", "lm_head.weight"))
    assert len(skipped) == 2 and "vocabularies differ" in skipped[0]
    assert not torch.equal(words.embed.weight, source.embed.weight)


def test_fine_tuning_from_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(nn.Linear(4, 3), path)
    with pytest.raises(DataError, match=r"only 0 of the model's \d+ tensors fit"):
        load_matching_weights(_Tiny(), path)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="damaged"):
        load_matching_weights(_Tiny(), tmp_path / "bad.safetensors")
