"""Options of the phantom (:class:`PhantomConfig`) and the named distribution-shift presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...constants import AREA_CUTOFFS_MM2, GRADES, LEVELS
from ...errors import ConfigError

Range = tuple[float, float]


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that shapes the phantom. Ranges ``(low, high)`` are sampled uniformly per case (or per level).

    Cohort
        ``prevalence``: share of each grade (normal, mild, moderate, severe) over all levels.
        ``level_risk``: relative risk of a non-normal grade per level L1-L2 … L5-S1 (real LSS is most common at
        L4-L5, then L3-L4); the per-level prevalences average back to ``prevalence``.
        ``level_correlation``: correlation of the latent severity across the levels of one case (degeneration is
        a patient-wide process). ``followup_fraction``: share of patients with a second (follow-up) study; a
        patient's studies always share a split. ``split_fractions``: train/val/test shares (patient level,
        stratified by the worst grade).
    Anatomy (mm)
        ``normal_area_mm2``: target dural-sac area range of normal levels; abnormal grades use their cut-off
        range (``AREA_CUTOFFS_MM2``) shrunk by ``area_margin_mm2`` on each side, severe down to ``min_area_mm2``.
        ``lf_thickness_mm``: normal ligamentum-flavum thickness; ``lf_thickening_mm``, ``disc_bulge_mm``,
        ``facet_hypertrophy_mm``: the largest extra thickness / bulge / facet growth a stenotic level gets.
        ``epidural_gap_mm``: fat between the sac and its neighbours. ``sac_fill``: share of the free canal the sac
        fills.
    Acquisition
        ``sagittal_fov_mm`` / ``axial_fov_mm``: field of view (pixel spacing = FOV / size, so 0.7-1.0 mm axial and
        1.5-1.8 mm sagittal at 128 px). ``anisotropy``: column/row spacing ratio. ``slice_thickness_mm``.
        ``noise_sigma``: Rician noise level relative to the CSF signal. ``bias_field``: amplitude of the smooth
        multiplicative coil shading (log scale). ``rotation_deg`` / ``shift_mm``: in-plane positioning jitter.
        ``blur_px``: partial-volume blur. ``axial_weighting``: ``"t2"`` (default) or ``"t1"`` for the axial views.
        ``contrast_jitter``: per-case relative jitter of each tissue's signal.
        ``domain_randomisation``: SynthSeg-style acquisition instead (Billot et al. 2023, see
        :mod:`lss_vlm.data.phantom.randomisation`): per-case elastic deformation, per-label Gaussian-mixture
        intensities, random blur (slice thickness), bias field, gamma and noise, so that a model learns shape, not
        one contrast. Off by default (the phantom is then unchanged).
        With domain randomisation only: ``prevertebral`` draws the aorta, inferior vena cava, psoas and bowel loops
        in front of the spine in the sagittal slice (:mod:`lss_vlm.data.phantom.prevertebral`; background label,
        own random intensities); ``parasagittal_share`` of the cases get a sagittal slice ``parasagittal_mm`` off
        the midline instead of the mid-sagittal one (narrower or no sac, pedicles and foramina, articular
        pillars; see :func:`lss_vlm.data.phantom.anatomy.render_sagittal`); ``texture_sd``: each tissue's intensity
        varies smoothly inside it by a random relative amount up to this (marrow heterogeneity; 0 = flat tissues);
        ``spinal_ligaments`` draws the anterior and posterior longitudinal ligaments and the cartilaginous endplates
        in the sagittal slice (:mod:`lss_vlm.data.phantom.ligaments`; thin dark layers, no label changes), so that
        the dark frame of a real vertebral body is not all labelled body; ``vertebral_waist`` waists the vertebral
        bodies (concave lateral cortex) and lets the discs overhang them
        (:class:`lss_vlm.data.phantom.anatomy.VertebralOutline`), so that a slice near the lateral margin of the
        spine (``parasagittal_mm`` up to ~27) shows discs with thin or no bodies between them.
    Output
        ``reports_per_case``: reference reports per case (≥ 3).
    """

    size: int = 128
    prevalence: tuple[float, float, float, float] = (0.55, 0.25, 0.14, 0.06)
    level_risk: tuple[float, float, float, float, float] = (0.40, 0.75, 1.20, 1.55, 1.10)
    level_correlation: float = 0.5
    followup_fraction: float = 0.15
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    normal_area_mm2: Range = (104.0, 185.0)
    area_margin_mm2: float = 2.0
    min_area_mm2: float = 18.0
    lf_thickness_mm: Range = (1.8, 3.0)
    lf_thickening_mm: float = 4.5
    disc_bulge_mm: float = 5.5
    facet_hypertrophy_mm: float = 3.5
    epidural_gap_mm: float = 0.9
    sac_fill: Range = (0.84, 0.96)
    sagittal_fov_mm: Range = (190.0, 225.0)
    axial_fov_mm: Range = (95.0, 125.0)
    anisotropy: Range = (1.0, 1.0)
    slice_thickness_mm: Range = (3.0, 4.5)
    noise_sigma: Range = (0.015, 0.04)
    bias_field: float = 0.25
    rotation_deg: float = 6.0
    shift_mm: float = 4.0
    blur_px: float = 0.6
    axial_weighting: str = "t2"
    contrast_jitter: float = 0.07
    domain_randomisation: bool = False
    prevertebral: bool = False
    parasagittal_share: float = 0.0
    parasagittal_mm: Range = (4.0, 22.0)
    texture_sd: float = 0.0
    spinal_ligaments: bool = False
    vertebral_waist: bool = False
    reports_per_case: int = 3

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 1024:
            raise ConfigError(f"phantom size must be 32-1024 pixels, got {self.size}")
        if len(self.prevalence) != len(GRADES) or min(self.prevalence) < 0 or abs(sum(self.prevalence) - 1) > 1e-6:
            raise ConfigError(
                f"prevalence must be {len(GRADES)} non-negative shares summing to 1, got {self.prevalence}"
            )
        if len(self.level_risk) != len(LEVELS) or min(self.level_risk) <= 0:
            raise ConfigError(f"level_risk must be {len(LEVELS)} positive numbers, got {self.level_risk}")
        from .cohort import level_prevalence

        if (level_prevalence(self)[:, 0] <= 0).any():
            raise ConfigError(
                f"prevalence {self.prevalence} × level_risk {self.level_risk} leaves a level with no normal cases; "
                "use a flatter level_risk (e.g. all 1.0)"
            )
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ConfigError(f"split_fractions must be 3 shares summing to 1, got {self.split_fractions}")
        if not 0 <= self.level_correlation < 1:
            raise ConfigError(f"level_correlation must be in [0, 1), got {self.level_correlation}")
        if not 0 <= self.followup_fraction <= 0.5:
            raise ConfigError(f"followup_fraction must be in [0, 0.5], got {self.followup_fraction}")
        if self.normal_area_mm2[0] <= AREA_CUTOFFS_MM2[0]:
            raise ConfigError(f"normal_area_mm2 must start above {AREA_CUTOFFS_MM2[0]} mm², got {self.normal_area_mm2}")
        if self.axial_weighting not in ("t1", "t2"):
            raise ConfigError(f"axial_weighting must be 't1' or 't2', got {self.axial_weighting!r}")
        if self.reports_per_case < 1:
            raise ConfigError(f"reports_per_case must be ≥ 1, got {self.reports_per_case}")
        if not 0 <= self.parasagittal_share <= 1:
            raise ConfigError(f"parasagittal_share must be in [0, 1], got {self.parasagittal_share}")
        if not 0 <= self.texture_sd <= 1:
            raise ConfigError(f"texture_sd must be in [0, 1], got {self.texture_sd}")
        changed = [name for name in LATER_OPTIONS if _differs_from_default(self, name)]
        if changed and not self.domain_randomisation:
            raise ConfigError(
                f"{', '.join(changed)}: {', '.join(LATER_OPTIONS)} need domain_randomisation: true (they only exist "
                "in the domain-randomised phantom)"
            )
        ranges = ("sagittal_fov_mm", "axial_fov_mm", "anisotropy", "slice_thickness_mm", "noise_sigma", "sac_fill")
        for name in (*ranges, "parasagittal_mm"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")

    def area_range(self, grade: int) -> Range:
        """Target dural-sac area range (mm²) of a grade, kept ``area_margin_mm2`` away from the cut-offs."""
        normal, mild, moderate = AREA_CUTOFFS_MM2
        m = self.area_margin_mm2
        return (
            self.normal_area_mm2,
            (mild + m, normal - m),
            (moderate + m, mild - m),
            (self.min_area_mm2, moderate - m),
        )[grade]

    def replace(self, **changes: Any) -> PhantomConfig:
        """Copy with some options changed; unknown option names are a :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown phantom option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the options added after phantom version 2 while they hold their defaults, so
        that phantom folders written before those options existed stay valid (their content is unchanged)."""
        defaults = PhantomConfig()
        return {k: v for k, v in self.to_dict().items() if k not in LATER_OPTIONS or v != getattr(defaults, k)}


def _differs_from_default(config: PhantomConfig, name: str) -> bool:
    """Whether option ``name`` holds another value than its default (a YAML list equals the same tuple)."""
    value = getattr(config, name)
    default = next(f.default for f in dataclasses.fields(config) if f.name == name)
    return (tuple(value) if isinstance(value, list) else value) != default


#: Options added after phantom version 2; at their defaults they change nothing and stay out of the fingerprint.
#: All of them exist only in the domain-randomised phantom.
LATER_OPTIONS: tuple[str, ...] = (
    "prevertebral",
    "parasagittal_share",
    "parasagittal_mm",
    "texture_sd",
    "spinal_ligaments",
    "vertebral_waist",
)


#: Named acquisition shifts for the out-of-distribution suite: name → (description, option overrides).
SHIFT_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "t1_contrast": (
        "axial views acquired T1-weighted instead of T2 (CSF dark, fat bright): a contrast shift the model never "
        "saw in training",
        {"axial_weighting": "t1"},
    ),
    "low_field_noise": (
        "low-field (0.3-0.5 T) scanner: 3-4x the noise, coarser pixels (larger field of view) and more blur",
        {
            "noise_sigma": (0.08, 0.14),
            "blur_px": 1.1,
            "axial_fov_mm": (120.0, 140.0),
            "sagittal_fov_mm": (215.0, 240.0),
        },
    ),
    "anisotropic": (
        "anisotropic acquisition: columns 1.6-2.2x coarser than rows (non-square pixels) and thick 6-8 mm slices",
        {"anisotropy": (1.6, 2.2), "slice_thickness_mm": (6.0, 8.0), "blur_px": 0.9},
    ),
    "bias_field": (
        "strong surface-coil shading: a multiplicative bias field 4x stronger than in training",
        {"bias_field": 1.0},
    ),
}


def resolve_config(shift: str | None = None, **options: Any) -> PhantomConfig:
    """Build the config: defaults, then the shift preset's overrides, then explicit ``options``."""
    config = PhantomConfig()
    if shift is not None:
        if shift not in SHIFT_PRESETS:
            raise ConfigError(f"unknown shift {shift!r}; valid shifts: {', '.join(SHIFT_PRESETS)}")
        config = config.replace(**SHIFT_PRESETS[shift][1])
    return config.replace(**options) if options else config
