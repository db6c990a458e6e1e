"""The axial views of a manifest as acquired: read, checked and turned to the canonical orientation, not resampled.

The loader resamples every view to the model's grid; the measurements a report quotes belong to the acquired grid
(:mod:`lss_vlm.data.native_grid`). :class:`AcquiredAxialViews` reads a case's axial images (and masks) the way the
loader does up to that point (:func:`~lss_vlm.data.transforms.read_view`, then MONAI's ``Orientationd`` to
:data:`~lss_vlm.data.transforms.CANONICAL_AXCODES`), so its pixels are the grid ``RecordNativeGridd`` records and
``to_native_grid`` resamples predictions onto. What it adds: lookup by ``(case_id, view)`` with a small cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from monai.transforms import Orientation

from ..constants import AXIAL_VIEWS
from .dataset import case_records
from .manifest import read_manifest, select_split
from .transforms import CANONICAL_AXCODES, RAS_LABELS, image_key, mask_key, read_view


class AcquiredView(NamedTuple):
    """One acquired axial view: ``image [H, W]`` float32, ``labels [H, W]`` int64 (None without a mask) and the
    voxel-to-world ``affine [4, 4]`` of that grid (what ``RecordNativeGridd`` records as ``native_affine``)."""

    image: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray


class AcquiredAxialViews:
    """Acquired axial views of the cases of ``manifest``.

    Args:
        manifest: a prepared dataset's ``manifest.csv``.
        split: ``train`` / ``val`` / ``test`` / ``all`` (:func:`~lss_vlm.data.manifest.select_split`).
        views: the axial views to read (default: all of :data:`~lss_vlm.constants.AXIAL_VIEWS`; ``data.views``).

    :meth:`get` returns an :class:`AcquiredView`, or None when the case or view is not there. Raises
    :class:`~lss_vlm.errors.DataError` for an unknown or empty split and (from the readers) for a damaged file.
    """

    def __init__(self, manifest: str | Path, split: str = "all", views: Sequence[str] | None = None) -> None:
        manifest = Path(manifest)
        table = select_split(read_manifest(manifest), split, str(manifest))
        self.views = tuple(v for v in AXIAL_VIEWS if views is None or v in views)
        self._records = {r["case_id"]: r for r in case_records(table, manifest.parent, str(manifest))}
        self._orient = Orientation(axcodes=CANONICAL_AXCODES["axial"], labels=RAS_LABELS)
        self.get = lru_cache(maxsize=64)(self._read)

    def __len__(self) -> int:
        return len(self._records)

    def _read(self, case_id: str, view: str) -> AcquiredView | None:
        record = self._records.get(str(case_id))
        if record is None or view not in self.views or record.get(image_key(view)) is None:
            return None
        mask_path = record.get(mask_key(view))
        image, mask = read_view(Path(record[image_key(view)]), None if mask_path is None else Path(mask_path), "axial")
        oriented = self._orient(image)
        labels = None if mask is None else np.asarray(self._orient(mask))[0, ..., 0].round().astype(np.int64)
        affine = np.asarray(oriented.affine, dtype=np.float64)
        return AcquiredView(np.asarray(oriented)[0, ..., 0].astype(np.float32), labels, affine)

    def labelled(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(image, label map)`` of every axial view that has a mask."""
        for case_id in self._records:
            for view in self.views:
                found = self._read(case_id, view)
                if found is not None and found.labels is not None:
                    yield found.image, found.labels
