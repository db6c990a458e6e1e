r"""Clinical tabular fusion: the image feature of a level and the case's clinical vector, fused linearly.

Following the CNN+LLM report-generation design that concatenates a CNN's image feature with tabular clinical data
before its classifier and report generator, for level :math:`l` of a case with image feature
:math:`f_l \in \mathbb{R}^{D}` (the grade head's attention-pooled ``[sag_t1; sag_t2; ax_l]`` vector) and clinical
vector :math:`x \in \mathbb{R}^{F}`:

.. math::

    \tilde x_j = \begin{cases} \mathrm{clip}\big((x_j - \mu_j) / \sigma_j,\ \pm 5\big) & x_j \text{ observed} \\
                 m_j & x_j \text{ missing (NaN)} \end{cases}, \qquad
    z_l = W_f f_l + W_x \tilde x + b

* :math:`\mu_j, \sigma_j`: mean and standard deviation of column :math:`j` over the training split's cases where it
  is known (:func:`fit_clinical_stats`; a constant or never-observed column gets :math:`\sigma = 1`). They are
  buffers of the model, so they are saved in ``model.safetensors`` and an evaluation normalises exactly as training.
* :math:`m_j`: a learned **mask token** per feature (a missing value is not a silent zero, which would read as "the
  training mean"); initialised from :math:`\mathcal N(0, 1)`, i.e. a plausible standardised value.
* :math:`W_f` starts at the identity (:math:`b = 0`), so :math:`z_l` starts as the image feature plus a clinical
  offset; :math:`W_x` has PyTorch's default ``Linear`` initialisation.

:math:`z_l` replaces :math:`f_l` as the input of the grade classifier, and :math:`W_r z_l` (one token per level) is
appended to the report decoder's visual memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..constants import CLINICAL_COLUMNS
from ..errors import ConfigError

#: Standardised clinical values are clipped to ±CLIP (a unit error such as a BMI of 2500 cannot blow up the logits).
CLIP = 5.0


def fit_clinical_stats(values: np.ndarray | Sequence[Sequence[float]], columns: Sequence[str]) -> dict[str, Any]:
    """Mean and standard deviation per column over the known (non-NaN) values of ``values [N, F]``.

    Returns ``{"columns": [...], "mean": [...], "std": [...]}`` (JSON-friendly). A column without any known value
    gets mean 0; a column with fewer than two distinct values (or none) gets std 1.
    """
    table = np.asarray(values, dtype=np.float64).reshape(-1, len(columns))
    known = ~np.isnan(table)
    count = known.sum(axis=0)
    filled = np.where(known, table, 0.0)
    mean = np.divide(filled.sum(axis=0), count, out=np.zeros(len(columns)), where=count > 0)
    var = np.divide(
        (np.where(known, table - mean, 0.0) ** 2).sum(axis=0), count, out=np.zeros(len(columns)), where=count > 0
    )
    std = np.sqrt(var)
    std = np.where(std > 1e-8, std, 1.0)
    return {"columns": list(columns), "mean": mean.tolist(), "std": std.tolist()}


def check_clinical_stats(stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """The validated ``clinical_stats`` of a model (``None`` → the six phantom columns, mean 0, std 1).

    Raises :class:`ConfigError` naming ``model.params.clinical_stats`` when it is not ``{columns, mean, std}`` of
    equal lengths with finite numbers and positive std.
    """
    if stats is None:
        n = len(CLINICAL_COLUMNS)
        return {"columns": list(CLINICAL_COLUMNS), "mean": [0.0] * n, "std": [1.0] * n}
    key = "model.params.clinical_stats"
    if not isinstance(stats, Mapping) or set(stats) != {"columns", "mean", "std"}:
        raise ConfigError(f"{key}: expected a mapping with keys columns, mean, std")
    columns, mean, std = list(stats["columns"]), list(stats["mean"]), list(stats["std"])
    if not columns or not len(columns) == len(mean) == len(std):
        raise ConfigError(f"{key}: columns, mean and std must be non-empty lists of the same length")
    try:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: mean and std must hold numbers") from None
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
        raise ConfigError(f"{key}: mean must be finite and std finite and > 0")
    return {"columns": [str(c) for c in columns], "mean": mean, "std": std}


class ClinicalFusion(nn.Module):
    """``z = W_f f + W_x x̃ + b`` per level (module docstring), plus the report-memory projection :math:`W_r`.

    Args:
        feature_dim: :math:`D`, width of the level feature ``f``. memory_dim: width of a report-memory token.
        stats: ``{"columns", "mean", "std"}`` from :func:`fit_clinical_stats` (``None``: the six phantom columns,
            identity normalisation; a run always passes the training split's).
    """

    def __init__(self, feature_dim: int, memory_dim: int, stats: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        stats = check_clinical_stats(stats)
        self.columns: list[str] = stats["columns"]
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32))
        self.mask_token = nn.Parameter(torch.randn(len(self.columns)))
        self.image_proj = nn.Linear(feature_dim, feature_dim)  # W_f, b
        self.clinical_proj = nn.Linear(len(self.columns), feature_dim, bias=False)  # W_x
        self.to_memory = nn.Linear(feature_dim, memory_dim)  # W_r
        with torch.no_grad():
            self.image_proj.weight.copy_(torch.eye(feature_dim))
            self.image_proj.bias.zero_()

    def standardise(self, clinical: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``clinical [B, F]`` (NaN = missing; ``None`` = all missing) → ``x̃ [B, F]``.

        Raises :class:`ConfigError` when ``F`` is not the number of columns the model was built with."""
        n = len(self.columns)
        if clinical is None:
            clinical = torch.full((batch, n), math.nan, device=self.mean.device)
        if clinical.ndim != 2 or clinical.shape[1] != n:
            raise ConfigError(
                f"clinical input must be [B, {n}] (columns {', '.join(self.columns)}), got {tuple(clinical.shape)}"
            )
        clinical = clinical.to(self.mean.device, torch.float32)
        missing = torch.isnan(clinical)
        scaled = ((torch.nan_to_num(clinical) - self.mean) / self.std).clamp(-CLIP, CLIP)
        return torch.where(missing, self.mask_token.expand_as(scaled), scaled)

    def forward(self, features: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
        """``features [B, L, D]``, ``clinical [B, F]`` → ``z [B, L, D]``."""
        x = self.standardise(clinical, features.shape[0]).to(features.dtype)
        return self.image_proj(features) + self.clinical_proj(x)[:, None, :]
