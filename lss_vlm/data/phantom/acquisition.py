"""MR acquisition model: tissue → T1/T2 signal, texture, partial-volume blur, coil bias field, Rician noise."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from .anatomy import Tissue

#: Relative signal of each tissue (index = :class:`Tissue`) on T1- and T2-weighted fast spin echo.
SIGNAL: dict[str, np.ndarray] = {
    "t1": np.array([0.0, 0.95, 0.35, 0.68, 0.06, 0.36, 0.40, 0.33, 0.14, 0.48, 0.30, 0.40, 0.10, 0.22, 0.10]),
    "t2": np.array([0.0, 0.72, 0.24, 0.46, 0.05, 0.24, 0.86, 0.34, 1.00, 0.30, 0.16, 0.36, 0.08, 0.65, 0.04]),
}
assert all(len(v) == len(Tissue) for v in SIGNAL.values())


@functools.lru_cache(maxsize=16)
def _bumps(n: int, cells: int) -> np.ndarray:
    """``[n, cells]`` Gaussian interpolation weights (rows sum to 1) from ``cells`` knots to ``n`` pixels."""
    pos = np.linspace(0, cells - 1, n)[:, None] - np.arange(cells)[None, :]
    w = np.exp(-0.5 * (pos / 0.7) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int = 8) -> np.ndarray:
    """Smooth random field: a ``cells × cells`` standard-normal grid interpolated with Gaussian weights."""
    coarse = rng.standard_normal((cells, cells))
    field = _bumps(shape[0], cells) @ coarse @ _bumps(shape[1], cells).T
    return field / max(float(field.std()), 1e-6)


def bias_field(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Multiplicative coil shading ``exp(strength · p(x, y))`` with ``p`` a random quadratic in [-1, 1]²."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    c = rng.normal(0.0, 1.0, 5)
    poly = c[0] * xx + c[1] * yy + 0.5 * c[2] * xx**2 + 0.5 * c[3] * yy**2 + 0.5 * c[4] * xx * yy
    return np.exp(strength * poly / 2.0)


def acquire(
    tissue: np.ndarray,
    weighting: str,
    rng: np.random.Generator,
    tissue_gain: np.ndarray,
    noise_sigma: float,
    bias_strength: float,
    blur_px: tuple[float, float],
) -> np.ndarray:
    """Simulated magnitude image of a tissue map (int16 scanner units, CSF on T2 ≈ 1000)."""
    signal = (SIGNAL[weighting] * tissue_gain)[tissue]
    texture = 1.0 + 0.06 * smooth_field(rng, tissue.shape, cells=16) + 0.04 * smooth_field(rng, tissue.shape, 5)
    image = signal * texture
    if max(blur_px) > 0:
        image = ndimage.gaussian_filter(image, sigma=blur_px, mode="nearest", truncate=3.0)
    image = image * bias_field(rng, tissue.shape, bias_strength)
    real = image + rng.normal(0.0, noise_sigma, tissue.shape)
    imag = rng.normal(0.0, noise_sigma, tissue.shape)
    magnitude = np.hypot(real, imag)  # Rician noise of a magnitude reconstruction
    scaled = magnitude * rng.uniform(800.0, 1200.0)
    return np.clip(np.rint(scaled), 0, np.iinfo(np.int16).max).astype(np.int16)
