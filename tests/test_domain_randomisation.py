"""SynthSeg-style domain randomisation (issue 14): the phantom option and the training augmentation profile."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from lss_vlm.constants import IGNORE_LABEL, LABEL_INDEX, NUM_LABELS
from lss_vlm.data.dataset import build_dataloader
from lss_vlm.data.phantom import synthesize


def _disc_to_body_ratios(manifest) -> np.ndarray:
    root = manifest.parent
    ratios = []
    for _, row in pd.read_csv(manifest).iterrows():
        image = np.asarray(nib.load(root / row["img_sag_t2"]).dataobj)[..., 0].astype(float)
        mask = np.asarray(nib.load(root / row["seg_sag_t2"]).dataobj)[..., 0]
        disc = image[mask == LABEL_INDEX["disc"]].mean()
        body = image[mask == LABEL_INDEX["vertebral_body"]].mean()
        ratios.append(disc / max(body, 1.0))
    return np.asarray(ratios)


@pytest.fixture(scope="module")
def randomised(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("dr"), n_cases=8, size=64, seed=3, domain_randomisation=True)


def test_randomised_phantom_contrast_varies_per_case_and_is_seeded(randomised, tiny_phantom, tmp_path) -> None:
    plain = _disc_to_body_ratios(tiny_phantom)
    ratios = _disc_to_body_ratios(randomised)
    # fixed T2 contrast: a narrow band of disc/body ratios; randomised: either way round, widely spread
    assert (ratios < 0.7).any() and (ratios > 1.3).any()
    assert np.std(np.log(ratios)) > 2 * np.std(np.log(plain))
    again = synthesize(tmp_path / "again", n_cases=8, size=64, seed=3, domain_randomisation=True)
    row = pd.read_csv(again).iloc[0]
    first = np.asarray(nib.load(again.parent / row["img_sag_t2"]).dataobj)
    same = np.asarray(nib.load(randomised.parent / row["img_sag_t2"]).dataobj)
    assert np.array_equal(first, same)


def test_domain_randomisation_augmentation_keeps_labels_and_changes_images(randomised) -> None:
    def batch(profile: str):
        loader = build_dataloader(
            randomised, "train", spatial_size=48, batch_size=2, augment=True, seed=0, augment_profile=profile,
            views=["sag_t2"],
        )  # fmt: skip
        return next(iter(loader))

    standard, randomised_batch = batch("standard"), batch("domain_randomisation")
    assert torch.isfinite(randomised_batch["views"]).all()
    values = set(torch.unique(randomised_batch["masks"]).tolist())
    assert values <= set(range(NUM_LABELS)) | {IGNORE_LABEL}
    assert not torch.allclose(standard["views"], randomised_batch["views"])
    assert randomised_batch["view_valid"][:, 1].all() and not randomised_batch["view_valid"][:, 2:].any()
    with pytest.raises(Exception, match="augment profile 'synthseg' is unknown"):
        build_dataloader(randomised, "train", spatial_size=48, augment=True, augment_profile="synthseg")
