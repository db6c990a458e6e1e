"""Clinical fusion in a run: the training split's normalisation, and the clinical/grade correlation figure.

* ``clinical_stats.json`` (run directory): ``{"columns", "mean", "std"}`` of the clinical columns over the training
  split's cases (:func:`lss_vlm.models.clinical.fit_clinical_stats`). The same numbers are buffers of the model (in
  ``model.safetensors``); the file names the columns, which ``lss-bench evaluate`` needs to build the model and its
  loader before it loads the weights.
* ``clinical_predictions.csv``: one row per evaluated case, its clinical values and ``p_<grade>``, the predicted
  probability of each grade averaged over the case's levels.
* ``figures/clinical_correlation.png``: the Pearson correlation matrix (``pandas.DataFrame.corr``) of those columns,
  the plot of the CNN+LLM report-generation paper's Fig. 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lss_vlm.constants import GRADES
from lss_vlm.io import atomic_path, atomic_write_json

from .config import ExperimentConfig
from .data import resolve_manifest
from .run_loading import CLINICAL_STATS_FILE as STATS_FILE
from .run_loading import read_clinical_stats  # noqa: F401  (re-exported: the clinical outputs of a run)

PREDICTIONS_FILE = "clinical_predictions.csv"
FIGURE_FILE = Path("figures") / "clinical_correlation.png"


def uses_clinical_fusion(cfg: ExperimentConfig) -> bool:
    """Whether the config's model fuses clinical values (``model.params.clinical_fusion``)."""
    return bool(cfg.model.params.get("clinical_fusion", False))


def build_clinical_stats(cfg: ExperimentConfig, out_dir: Path | None) -> dict[str, Any] | None:
    """The normalisation of the clinical columns over the training split (module docstring); written to
    ``out_dir/clinical_stats.json`` unless ``out_dir`` is None. None for a model without clinical fusion."""
    from lss_vlm.data.manifest import clinical_columns, read_manifest
    from lss_vlm.models.clinical import fit_clinical_stats

    if not uses_clinical_fusion(cfg):
        return None
    table = read_manifest(resolve_manifest(cfg.data))
    columns = list(clinical_columns(table))
    train = table[table["split"] == "train"].reindex(columns=columns)
    stats = fit_clinical_stats(train.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float), columns)
    if out_dir is not None:
        atomic_write_json(out_dir / STATS_FILE, stats)
    return stats


@torch.no_grad()
def clinical_predictions(model: torch.nn.Module, loader: Any, device: torch.device) -> pd.DataFrame:
    """One row per case of ``loader``: ``case_id``, the model's clinical columns and ``p_<grade>`` (mean over the
    case's levels of the predicted probability of that grade)."""
    from lss_vlm.engine.validation import predict

    columns = list(model.clinical_columns or [])
    rows = []
    for batch, out in predict(model, loader, device):
        probs = out["grade_logits"].float().softmax(-1).mean(dim=1).cpu().numpy()  # [B, 4]
        values = batch["clinical"].float().cpu().numpy()
        for i, case_id in enumerate(batch["case_id"]):
            row = {"case_id": case_id, **dict(zip(columns, values[i].tolist()))}
            row.update({f"p_{grade}": float(p) for grade, p in zip(GRADES, probs[i])})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_clinical_correlation(frame: pd.DataFrame, path: Path) -> Path | None:
    """The Pearson correlation matrix of every numeric column of ``frame`` but ``case_id`` (constant or empty columns
    dropped: their correlation is undefined), drawn as an annotated heat map; None when fewer than two columns or
    three cases remain."""
    from .plots import _plt, _save

    data = frame.drop(columns=["case_id"], errors="ignore").apply(pd.to_numeric, errors="coerce")
    data = data.loc[:, data.nunique(dropna=True) > 1]
    if data.shape[1] < 2 or len(data) < 3:
        return None
    corr = data.corr(method="pearson")
    plt = _plt()
    n = len(corr)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.6 + 0.65 * n))
    image = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), corr.index)
    for (r, c), value in np.ndenumerate(corr.to_numpy()):
        if np.isfinite(value):
            ax.text(
                c,
                r,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if abs(value) > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    ax.set_title(f"Clinical values and predicted grade probability ({len(data)} cases)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def write_clinical_outputs(model: torch.nn.Module, loader: Any, device: torch.device, out_dir: Path) -> Path | None:
    """``clinical_predictions.csv`` and ``figures/clinical_correlation.png`` of a model with clinical fusion (module
    docstring); returns the figure's path (None when there is nothing to correlate)."""
    frame = clinical_predictions(model, loader, device)
    with atomic_path(out_dir / PREDICTIONS_FILE) as tmp:
        frame.to_csv(tmp, index=False)
    return plot_clinical_correlation(frame, out_dir / FIGURE_FILE)
