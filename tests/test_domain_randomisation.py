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


def _maps(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A toy tissue/label pair: air on the right, soft tissue, and one labelled 'body' square of marrow."""
    from lss_vlm.data.phantom.anatomy import Tissue

    tissue = np.full((size, size), Tissue.SOFT_TISSUE, np.uint8)
    tissue[:, -8:] = Tissue.AIR
    labels = np.zeros((size, size), np.uint8)
    labels[16:32, 8:24] = LABEL_INDEX["vertebral_body"]
    tissue[labels > 0] = Tissue.MARROW
    return tissue, labels


def test_clutter_paints_only_unlabelled_tissue_and_is_seeded() -> None:
    from lss_vlm.data.phantom.anatomy import Tissue
    from lss_vlm.data.phantom.randomisation import RandomisationRanges, add_clutter

    tissue, labels = _maps()
    image = np.where(labels > 0, 0.7, 0.3) * (tissue != Tissue.AIR)
    ranges = RandomisationRanges(clutter_max=12, texture_max=0.0)
    changed = np.zeros(image.shape, bool)
    for seed in range(6):
        out = add_clutter(image, labels, tissue, np.random.default_rng(seed), ranges)
        assert np.array_equal(out[labels > 0], image[labels > 0])  # the labelled structure keeps its signal
        assert np.array_equal(out[tissue == Tissue.AIR], image[tissue == Tissue.AIR])  # air stays air
        changed |= out != image
    free = (labels == 0) & (tissue != Tissue.AIR)
    assert changed[free].mean() > 0.2  # clutter covers a good part of the background over a few draws
    again = add_clutter(image, labels, tissue, np.random.default_rng(5), ranges)
    assert np.array_equal(again, out)
    off = add_clutter(
        image, labels, tissue, np.random.default_rng(0), RandomisationRanges(clutter_max=0, texture_max=0)
    )
    assert np.array_equal(off, image)


def test_texture_modulates_every_tissue() -> None:
    from lss_vlm.data.phantom.randomisation import RandomisationRanges, add_clutter

    tissue, labels = _maps()
    image = np.full(tissue.shape, 0.5)
    out = add_clutter(
        image, labels, tissue, np.random.default_rng(1), RandomisationRanges(clutter_max=0, texture_max=0.3)
    )
    assert out[labels > 0].std() > 0.005  # texture inside the labelled body, not only in the background


def _area_ratios(profile: str, draws: int = 40) -> np.ndarray:
    """Area of a square mask after the profile's random affine, relative to before, over ``draws`` draws."""
    from monai.transforms import RandAffined

    from lss_vlm.data.transforms import augmentation_transforms, image_key, mask_key

    keys = [image_key("sag_t2"), mask_key("sag_t2")]
    affine = next(
        t for t in augmentation_transforms(64, profile) if isinstance(t, RandAffined) and t.keys == tuple(keys)
    )
    affine.set_random_state(0)
    affine.prob = 1.0  # every draw transforms (the profile's probability is below 1)
    mask = torch.zeros(1, 64, 64)
    mask[:, 24:40, 24:40] = 1
    ratios = []
    for _ in range(draws):
        out = affine({keys[0]: mask.clone(), keys[1]: mask.clone()})
        ratios.append(float(torch.as_tensor(out[keys[1]]).sum() / mask.sum()))
    return np.asarray(ratios)


def test_domain_randomisation_profile_draws_wider_scales_than_standard() -> None:
    standard, randomised = _area_ratios("standard"), _area_ratios("domain_randomisation")
    assert standard.min() > 0.75 and standard.max() < 1.3  # ±10 % per axis
    assert randomised.min() < 0.7 or randomised.max() > 1.35  # ±25 % per axis reaches beyond
    assert np.ptp(np.log(randomised)) > 1.5 * np.ptp(np.log(standard))
