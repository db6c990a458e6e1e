"""The axial views of a manifest as acquired: read, checked and turned to the canonical orientation, not resampled.

The loader resamples every view to the model's grid; the measurements a report quotes belong to the acquired grid
(:mod:`lss_vlm.data.native_grid`). :class:`AcquiredAxialViews` reads a case's axial images (and masks) the way the
loader does up to that point (:func:`~lss_vlm.data.transforms.read_view`, then MONAI's ``Orientationd`` to
:data:`~lss_vlm.data.transforms.CANONICAL_AXCODES`), so its pixels are the grid ``RecordNativeGridd`` records and
``to_native_grid`` resamples predictions onto. What it adds: lookup by ``(case_id, view)`` with a small cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
from monai.transforms import Orientation

from ..constants import AXIAL_VIEWS
from .dataset import case_records
from .manifest import read_manifest
from .transforms import CANONICAL_AXCODES, RAS_LABELS, image_key, mask_key, read_view


class AcquiredAxialViews:
    """Acquired axial views of the cases of ``manifest`` (``split``: only that split's cases; None = all).

    :meth:`get` returns ``(image [H, W] float32, label map [H, W] int64 or None)`` or None when the case has no such
    view. Raises :class:`~lss_vlm.errors.DataError` (from the readers) for a damaged file.
    """

    def __init__(self, manifest: str | Path, split: str | None = None) -> None:
        manifest = Path(manifest)
        table = read_manifest(manifest)
        if split is not None:
            table = table[table["split"] == split]
        self._records = {r["case_id"]: r for r in case_records(table, manifest.parent, str(manifest))}
        self._orient = Orientation(axcodes=CANONICAL_AXCODES["axial"], labels=RAS_LABELS)
        self.get = lru_cache(maxsize=64)(self._read)

    def __len__(self) -> int:
        return len(self._records)

    def _read(self, case_id: str, view: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        record = self._records.get(str(case_id))
        if record is None or view not in AXIAL_VIEWS or record.get(image_key(view)) is None:
            return None
        mask_path = record.get(mask_key(view))
        image, mask = read_view(Path(record[image_key(view)]), None if mask_path is None else Path(mask_path), "axial")
        image = np.asarray(self._orient(image))[0, ..., 0].astype(np.float32)
        labels = None if mask is None else np.asarray(self._orient(mask))[0, ..., 0].round().astype(np.int64)
        return image, labels

    def labelled(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(image, label map)`` of every axial view that has a mask."""
        for case_id in self._records:
            for view in AXIAL_VIEWS:
                found = self._read(case_id, view)
                if found is not None and found[1] is not None:
                    yield found[0], found[1]
