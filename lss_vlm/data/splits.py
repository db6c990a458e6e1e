"""Patient-level train/val/test splits, stratified and fixed by a seed."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError


def assign_splits(
    patient_ids: Sequence[str],
    seed: int = 0,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    strata: Mapping[str, Hashable] | None = None,
) -> dict[str, str]:
    """Map each distinct patient to ``train``/``val``/``test``; a patient's cases never straddle splits.

    Within each stratum (e.g. the patient's worst grade) patients are shuffled with ``seed`` and the first
    ``round(n · test_frac)`` go to test, the next ``round(n · val_frac)`` to val. When there are at least three patients
    and a fraction is positive, val and test each get at least one patient, so small datasets still evaluate.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(f"split fractions val={val_frac}, test={test_frac} must be in [0, 1) and sum to less than 1")
    patients = sorted(set(map(str, patient_ids)))
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for p in patients:
        groups.setdefault(repr((strata or {}).get(p)), []).append(p)
    split: dict[str, str] = {}
    for key in sorted(groups):
        members = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        n_test = int(round(len(members) * test_frac))
        n_val = int(round(len(members) * val_frac))
        for i, p in enumerate(members):
            split[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    _ensure_nonempty(split, patients, rng, val_frac, test_frac)
    return split


def _ensure_nonempty(
    split: dict[str, str], patients: list[str], rng: np.random.Generator, val_frac: float, test_frac: float
) -> None:
    if len(patients) < 3:
        return
    for name, frac in (("test", test_frac), ("val", val_frac)):
        if frac > 0 and name not in split.values():
            train = [p for p in patients if split[p] == "train"]
            split[train[int(rng.integers(len(train)))]] = name
