"""The cohort: who has which study, stenosis grades per level, clinical values, and patient-level splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtri

from ...constants import GRADES, LEVELS
from ..splits import assign_splits
from .config import PhantomConfig

#: Followed-up patients only appear in cohorts at least this large (small test phantoms stay one study per patient).
MIN_CASES_FOR_FOLLOWUP = 20


@dataclass(frozen=True)
class Study:
    """One case: its index, ids, and which study of its patient it is (0 baseline, 1 follow-up)."""

    index: int
    case_id: str
    patient_index: int
    patient_id: str
    visit: int


def plan_studies(n_cases: int, seed: int, cfg: PhantomConfig) -> list[Study]:
    """Assign ``n_cases`` studies to patients; a share ``followup_fraction`` of patients has a second study."""
    rng = np.random.default_rng([seed, 101])
    followup = cfg.followup_fraction if n_cases >= MIN_CASES_FOR_FOLLOWUP else 0.0
    studies: list[Study] = []
    patient = 0
    width = max(4, len(str(n_cases)))
    while len(studies) < n_cases:
        visits = 2 if rng.random() < followup and len(studies) + 2 <= n_cases else 1
        for visit in range(visits):
            i = len(studies)
            studies.append(Study(i, f"ph{i:0{width}d}", patient, f"pt{patient:0{width}d}", visit))
        patient += 1
    return studies


def level_prevalence(cfg: PhantomConfig) -> np.ndarray:
    """``[L, G]`` grade probabilities per level: abnormal grades scaled by the level's relative risk (severe
    more strongly; PhantomConfig rejects a risk spread that leaves a level no normal share),
    normalised so that the average over levels equals ``cfg.prevalence``."""
    risk = np.asarray(cfg.level_risk, float)
    probs = np.zeros((len(LEVELS), len(GRADES)))
    for g in range(1, len(GRADES)):
        weight = risk ** (1.5 if g == len(GRADES) - 1 else 1.0)
        probs[:, g] = cfg.prevalence[g] * weight / weight.mean()
    probs[:, 0] = 1.0 - probs[:, 1:].sum(axis=1)
    return probs


def sample_grades(latent_patient: float, rng: np.random.Generator, cfg: PhantomConfig) -> np.ndarray:
    """Target grade per level from a Gaussian latent shared across levels (correlation ``level_correlation``).

    ``x_l = √ρ · z + √(1-ρ) · ε_l``, ``grade_l = #{thresholds_l < x_l}`` with thresholds ``Φ⁻¹`` of the cumulative
    per-level prevalence, so each level's marginal grade distribution is exactly :func:`level_prevalence`.
    """
    rho = cfg.level_correlation
    x = np.sqrt(rho) * latent_patient + np.sqrt(1 - rho) * rng.standard_normal(len(LEVELS))
    cumulative = np.cumsum(level_prevalence(cfg), axis=1)[:, :-1]
    thresholds = ndtri(np.clip(cumulative, 1e-12, 1 - 1e-12))
    return (x[:, None] > thresholds).sum(axis=1)


def clinical_values(grades: np.ndarray, patient_rng: np.random.Generator, rng: np.random.Generator, visit: int):
    """Age, sex (1 male), BMI, symptom months, claudication (0/1) and ODI (0-100), worse with more stenosis."""
    worst, burden = int(grades.max()), int(grades.sum())
    base_age, sex, base_bmi = patient_rng.normal(0, 9), float(patient_rng.random() < 0.5), patient_rng.normal(0, 3.5)
    age = float(np.clip(50 + 5.0 * worst + 1.2 * burden + base_age + 2.0 * visit, 22, 92))
    bmi = float(np.clip(25.5 + 0.9 * worst + base_bmi, 17, 48))
    months = float(np.round(np.exp(rng.normal(1.0 + 0.5 * worst, 0.6)), 1))
    claudication = float(rng.random() < expit(-2.3 + 1.3 * worst))
    odi = float(np.clip(np.round(6 + 11.0 * worst + 1.5 * burden + rng.normal(0, 7)), 0, 100))
    return {"age": round(age, 1), "sex": sex, "bmi": round(bmi, 1), "symptom_months": months,
            "claudication": claudication, "odi": odi}  # fmt: skip


def phantom_splits(patient_ids: list[str], worst_grades: list[int], seed: int, cfg: PhantomConfig) -> dict[str, str]:
    """Patient → split with :func:`lss_vlm.data.splits.assign_splits`, stratified by the patient's worst grade."""
    worst: dict[str, int] = {}
    for pid, g in zip(patient_ids, worst_grades):
        worst[pid] = max(worst.get(pid, 0), int(g))
    _, val, test = cfg.split_fractions
    return assign_splits(sorted(worst), seed=seed, val_frac=val, test_frac=test, strata=worst)
