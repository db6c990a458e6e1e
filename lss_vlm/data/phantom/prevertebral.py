"""Structures in front of the lumbar spine for the domain-randomised sagittal slice: aorta, inferior vena cava,
psoas muscles and bowel loops (option ``prevertebral``).

The plain phantom fills everything in front of the vertebral bodies with one soft tissue. On real sagittal T2 the
prevertebral space holds the great vessels (flow voids or bright slow flow), the psoas muscles (off the midline) and,
further forward, bowel with fluid and gas. Each structure is drawn where it lies (in the spine's arc coordinates,
:func:`.anatomy.spine_coordinates`), gets its own tissue class, and so its own random intensity under domain
randomisation, and is **background** in the label map. Only in front of the spine and only over the plain soft
tissue: bodies, discs and everything behind the posterior vertebral line are left as they are, so the front/back
layout of the spine stays learnable.

Placement (adult lumbar anatomy, e.g. Gray's Anatomy, 42nd ed., ch. "Posterior abdominal wall"):

- **aorta**: round, radius 8-12.5 mm, 2-14 mm left of the midline, 1-5 mm in front of the bodies; it ends at the
  bifurcation at the level of L4;
- **inferior vena cava**: flattened (10-14 mm wide, 5-9 mm deep), 12-24 mm right of the midline, in front of the
  bodies down to its confluence at L5;
- **psoas**: one per side, beside and in front of the bodies from L1 down, its radius growing from 3 mm to
  15-22 mm at L5;
- **bowel**: 3-9 loops, 8-25 mm semi-axes, at least 25 mm in front of the bodies, some with a gas pocket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .anatomy import BODY_HALF_WIDTH, SpineAnatomy, Tissue, body_depth_at, spine_coordinates, spine_layout


class ExtraTissue(IntEnum):
    """Tissue classes that only the domain-randomised phantom draws (they follow :class:`.anatomy.Tissue`)."""

    BOWEL = len(Tissue)
    BOWEL_GAS = len(Tissue) + 1


#: Relative signal of :class:`ExtraTissue` on T1/T2 (bowel content, gas), for the realistic-contrast draws of
#: :mod:`.randomisation`.
EXTRA_SIGNAL: dict[str, np.ndarray] = {"t1": np.array([0.35, 0.02]), "t2": np.array([0.55, 0.02])}


@dataclass(frozen=True)
class PrevertebralAnatomy:
    """Random placement of the prevertebral structures of one case (mm; lateral positive = patient's left)."""

    aorta_radius: float
    aorta_lateral: float
    aorta_gap: float
    ivc_half_width: float
    ivc_half_depth: float
    ivc_lateral: float
    ivc_gap: float
    psoas_radius: float
    bowel: tuple[tuple[float, float, float, float, float, bool], ...]  # s, v, half-s, half-v, angle, gas pocket


def sample_prevertebral(rng: np.random.Generator, spine: SpineAnatomy) -> PrevertebralAnatomy:
    """Draw the prevertebral structures of one case (ranges in the module docstring)."""
    loops = []
    for _ in range(int(rng.integers(3, 10))):
        loops.append(
            (
                float(rng.uniform(-120.0, 120.0)),
                float(-spine.body_depth - rng.uniform(25.0, 110.0)),
                float(rng.uniform(8.0, 25.0)),
                float(rng.uniform(8.0, 25.0)),
                float(rng.uniform(0.0, np.pi)),
                bool(rng.random() < 0.4),
            )
        )
    return PrevertebralAnatomy(
        aorta_radius=float(rng.uniform(8.0, 12.5)),
        aorta_lateral=float(rng.uniform(2.0, 14.0)),
        aorta_gap=float(rng.uniform(1.0, 5.0)),
        ivc_half_width=float(rng.uniform(10.0, 14.0)),
        ivc_half_depth=float(rng.uniform(5.0, 9.0)),
        ivc_lateral=float(-rng.uniform(12.0, 24.0)),
        ivc_gap=float(rng.uniform(1.0, 5.0)),
        psoas_radius=float(rng.uniform(15.0, 22.0)),
        bowel=tuple(loops),
    )


def _chord(half_width: float, offset: float) -> float:
    """Half-length of the chord that a plane ``offset`` mm from the centre cuts from a width ``2·half_width``."""
    return float(np.sqrt(max(half_width**2 - offset**2, 0.0)))


def paint_prevertebral(
    tissue: np.ndarray,
    labels: np.ndarray,
    z: np.ndarray,
    a: np.ndarray,
    spine: SpineAnatomy,
    anatomy: PrevertebralAnatomy,
    lateral: float = 0.0,
) -> None:
    """Paint the structures into the sagittal ``tissue [H, W]`` map of the slice ``lateral`` mm off the midline
    (signed, positive = left), in place, on background soft tissue in front of the spine only; ``labels`` is read,
    never changed (everything painted stays background)."""
    s, v = spine_coordinates(z, a, spine)
    body_s, _ = spine_layout(spine)
    heights = np.asarray(spine.body_heights)
    free = (labels == 0) & (tissue == Tissue.SOFT_TISSUE) & (v < 0)

    def paint(mask: np.ndarray, value: int) -> None:
        tissue[mask & free] = value

    for cs, cv, hs, hv, angle, gas in anatomy.bowel:  # bowel first: the vessels and psoas lie behind it and win
        c, n = np.cos(angle), np.sin(angle)
        q = (((s - cs) * c + (v - cv) * n) / hs) ** 2 + ((-(s - cs) * n + (v - cv) * c) / hv) ** 2
        paint(q <= 1, ExtraTissue.BOWEL)
        if gas:
            paint(q <= 0.3, ExtraTissue.BOWEL_GAS)
    top = body_s[1] - heights[1] / 2  # psoas origin: upper endplate of L1
    grow = np.clip((s - top) / (body_s[5] + heights[5] / 2 - top), 0.0, 1.0)
    radius = 3.0 + (anatomy.psoas_radius - 3.0) * grow
    psoas_lateral = BODY_HALF_WIDTH + 0.5 * radius
    half = np.sqrt(np.clip(radius**2 - (abs(lateral) - psoas_lateral) ** 2, 0.0, None))
    paint((s > top) & (np.abs(v + 0.6 * spine.body_depth) < half), Tissue.MUSCLE)
    aorta = _chord(anatomy.aorta_radius, lateral - anatomy.aorta_lateral)
    centre = -body_depth_at(spine, min(abs(anatomy.aorta_lateral), BODY_HALF_WIDTH)) - anatomy.aorta_gap
    centre -= anatomy.aorta_radius
    paint((np.abs(v - centre) < aorta) & (s < body_s[4]), Tissue.VESSEL)
    ivc = anatomy.ivc_half_depth * _chord(1.0, (lateral - anatomy.ivc_lateral) / anatomy.ivc_half_width)
    centre = -body_depth_at(spine, min(abs(anatomy.ivc_lateral), BODY_HALF_WIDTH)) - anatomy.ivc_gap
    centre -= anatomy.ivc_half_depth
    paint((np.abs(v - centre) < ivc) & (s < body_s[5]), Tissue.VESSEL)
