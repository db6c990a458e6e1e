"""Domain randomisation of the phantom's acquisition, in the spirit of SynthSeg.

Billot, Greve, Puonti, Thielscher, Van Leemput, Fischl, Dalca, Iglesias (2023), "SynthSeg: Segmentation of brain MRI
scans of any contrast and resolution without retraining", Medical Image Analysis 86, 102789. A network trained on
images whose contrast, resolution and artefacts are random learns shape, not one scanner's appearance, and transfers
to real scans it never saw. Per case, the maps are deformed once (:func:`elastic_deform`, shared by
the views that share a mask); per view the intensities are drawn anew (:func:`randomised_acquire`):

1. **Elastic deformation** of the tissue and label maps together: a smooth random displacement field
   (``elastic_mm`` mm standard deviation, nearest-neighbour resampling, so labels stay exact).
2. **Per-label Gaussian mixture intensities**: each tissue class ``t`` gets a mean ``μ_t ~ U(0, 1)`` and a standard
   deviation ``σ_t ~ U(0, σ_max)`` drawn for this image; pixel values are ``N(μ_t, σ_t)`` (with probability
   ``realistic_share`` the means are the T1/T2 table of :mod:`.acquisition` instead, jittered). With
   ``texture_sd > 0`` each tissue's mean is also modulated by a smooth random field, ``μ_t · (1 + a_t · s(x, y))``
   with ``a_t ~ U(0, texture_sd)`` and ``s`` a unit-variance field of ~10-pixel blobs: marrow heterogeneity, a disc's
   nucleus and annulus, so that a tissue is not one flat grey as it never is on a real scan. Off by default.
3. **Slice thickness / resolution**: blur with a random Gaussian, stronger along one random in-plane axis
   (``σ ~ U(0, blur_px_max)`` px), mimicking thick or anisotropic acquisitions.
4. **Bias field**: ``exp(b · s(x, y))`` with ``s`` a smooth random field and ``b ~ U(0, bias_max)``.
5. **Gamma**: ``I ← I^γ`` on [0, 1] with ``log γ ~ N(0, gamma_log_sd)``.
6. **Noise**: Gaussian, ``σ ~ U(0, noise_max)`` relative to the [0, 1] range.

Output in the phantom's int16 scanner units (0-1000 for the brightest tissue), like :func:`.acquisition.acquire`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .acquisition import SIGNAL, smooth_field
from .anatomy import Tissue
from .prevertebral import EXTRA_SIGNAL


@dataclass(frozen=True)
class RandomisationRanges:
    """Upper bounds (and shares) of the random draws; documented in the module docstring."""

    elastic_mm: float = 3.0
    sigma_max: float = 0.06
    realistic_share: float = 0.2
    blur_px_max: float = 1.5
    bias_max: float = 0.5
    gamma_log_sd: float = 0.35
    noise_max: float = 0.06
    texture_sd: float = 0.0


def elastic_deform(
    maps: tuple[np.ndarray, ...], rng: np.random.Generator, sigma_px: float, cells: int = 6
) -> tuple[np.ndarray, ...]:
    """The same smooth random displacement (std ``sigma_px`` pixels per axis) applied to each integer map ``[H, W]``
    (nearest neighbour, border values repeated)."""
    if sigma_px <= 0:
        return maps
    shape = maps[0].shape
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    coords = np.stack(
        [rows + sigma_px * smooth_field(rng, shape, cells), cols + sigma_px * smooth_field(rng, shape, cells)]
    )
    return tuple(ndimage.map_coordinates(m, coords, order=0, mode="nearest").astype(m.dtype) for m in maps)


def randomised_acquire(
    tissue: np.ndarray,
    rng: np.random.Generator,
    ranges: RandomisationRanges = RandomisationRanges(),
    texture_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A domain-randomised image (int16 ``[H, W]``) of the tissue map ``tissue [H, W]`` (steps 2-6 of the module
    docstring; deform the maps first with :func:`elastic_deform`). ``texture_rng`` draws the texture (default
    ``rng``): a generator of its own keeps ``rng``'s stream, hence the anatomy drawn after, as without texture."""
    n = max(len(Tissue), int(tissue.max()) + 1)  # the prevertebral structures add classes after Tissue's
    if rng.random() < ranges.realistic_share:
        weighting = str(rng.choice(["t1", "t2"]))
        table = np.concatenate([SIGNAL[weighting], EXTRA_SIGNAL[weighting]])[:n]
        means = table * (1.0 + rng.normal(0.0, 0.15, n))
    else:
        means = rng.uniform(0.0, 1.0, n)
    means[0] = rng.uniform(0.0, 0.1)  # air outside the body stays dark, as on every real scan
    sigmas = rng.uniform(0.0, ranges.sigma_max, n)
    image = means[tissue] + sigmas[tissue] * rng.standard_normal(tissue.shape)
    if ranges.texture_sd > 0:  # drawn only when asked: the phantom without texture is unchanged
        texture_rng = rng if texture_rng is None else texture_rng
        amplitude = texture_rng.uniform(0.0, ranges.texture_sd, n)
        field = smooth_field(texture_rng, tissue.shape, cells=max(4, tissue.shape[0] // 10))
        image = image * (1.0 + amplitude[tissue] * field)
    sigma = rng.uniform(0.0, ranges.blur_px_max, 2)
    sigma[rng.integers(2)] *= 0.3  # thick-slice blur mostly along one in-plane axis
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest", truncate=3.0)
    image = image * np.exp(rng.uniform(0.0, ranges.bias_max) * smooth_field(rng, tissue.shape, cells=4))
    low, high = float(image.min()), float(image.max())
    image = (image - low) / max(high - low, 1e-6)
    image = image ** float(np.exp(rng.normal(0.0, ranges.gamma_log_sd)))
    image = np.abs(image + rng.normal(0.0, rng.uniform(0.0, ranges.noise_max), image.shape))
    return np.clip(np.rint(image * 1000.0), 0, np.iinfo(np.int16).max).astype(np.int16)
