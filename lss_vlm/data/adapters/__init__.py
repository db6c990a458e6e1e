"""Dataset adapters: real datasets → 2D views + the same manifest the phantom writes.

``prepare_dataset(name, root, out, ...)`` runs the adapter registered as ``name`` in :data:`DATASETS`:
``nifti`` (users' own images), ``images`` (2D PNG/NumPy/NIfTI slices in display orientation),
``rsna2024`` (RSNA 2024 Lumbar Spine, DICOM), ``spider`` (SPIDER, .mha) and
``mendeley`` (Lumbar Spine MRI Dataset, axial T2 + label images).
"""

from __future__ import annotations

from . import images, mendeley, nifti, rsna2024, spider  # noqa: F401  (registers the adapters)
from .base import DATASETS, MANIFEST_NAME, SUMMARY_NAME, PrepareResult, PrepareSummary, format_summary, prepare_dataset

__all__ = [
    "DATASETS",
    "MANIFEST_NAME",
    "SUMMARY_NAME",
    "PrepareResult",
    "PrepareSummary",
    "format_summary",
    "prepare_dataset",
]
