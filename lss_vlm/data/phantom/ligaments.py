"""The thin fibrous layers that line the vertebral bodies and discs on a sagittal slice (phantom option
``spinal_ligaments``, domain-randomised phantom only).

On a real T2 (and T1) sagittal slice every vertebral body is framed by dark lines: its cortex, then outside it the
**anterior longitudinal ligament** (ALL, in front of bodies and discs) and the **posterior longitudinal ligament**
(PLL, behind them, in the canal's midline), and towards each disc the **cartilaginous endplate**, a layer of hyaline
cartilage that belongs to the disc (Standring, *Gray's Anatomy*, 42nd ed., ch. 42; Modic & Ross, Radiology 2007).
Without them the phantom's only dark frame is the cortex, which is labelled vertebral body; a model trained on it
labels the whole dark band of a real scan as body: on most midline slices of the MIT sagittal set its bodies were
6-22 % too large and its discs 3-15 % too thin. With this option the zero-shot disc Dice there did not improve
(docs/results.md, "Real MRI"); it is off in ``configs/experiments/sim2real.yaml``.

All three are drawn with the tissue :attr:`Tissue.LIGAMENT` (own random intensity under domain randomisation,
dark in the realistic T1/T2 table) and never change a label: the ALL and the PLL replace background tissue just
outside the bone and disc (label 0), the cartilaginous endplate replaces annulus inside the disc label next to each
body. Thicknesses are drawn per case (:func:`sample_ligaments`): ALL 0.8-2.0 mm, PLL 0.6-1.5 mm (only within
``PLL_HALF_WIDTH`` mm of the midline), endplate 0.5-1.2 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy import BODY, DISC, SpineAnatomy, Tissue, body_depth_at, spine_coordinates

#: Half-width (mm) of the posterior longitudinal ligament: a midline band, wider over the discs than the bodies.
PLL_HALF_WIDTH = 8.0


@dataclass(frozen=True)
class LigamentAnatomy:
    """Per-case thicknesses (mm) of the anterior / posterior longitudinal ligaments and the cartilaginous
    endplates."""

    anterior: float
    posterior: float
    endplate: float


def sample_ligaments(rng: np.random.Generator) -> LigamentAnatomy:
    """Draw one case's thicknesses (ranges in the module docstring)."""
    return LigamentAnatomy(
        anterior=float(rng.uniform(0.8, 2.0)),
        posterior=float(rng.uniform(0.6, 1.5)),
        endplate=float(rng.uniform(0.5, 1.2)),
    )


def _spacing(z: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """Row and column pixel spacing (mm) of the pixel-centre grids ``z``/``a`` ``[H, W]``."""
    return (
        float(np.hypot(z[1, 0] - z[0, 0], a[1, 0] - a[0, 0])),
        float(np.hypot(z[0, 1] - z[0, 0], a[0, 1] - a[0, 0])),
    )


def paint_ligaments(
    tissue: np.ndarray,
    labels: np.ndarray,
    z: np.ndarray,
    a: np.ndarray,
    spine: SpineAnatomy,
    anatomy: LigamentAnatomy,
    lateral: float = 0.0,
) -> None:
    """Paint the ALL, the PLL and the cartilaginous endplates into the sagittal ``tissue [H, W]`` map of the slice
    ``lateral`` mm off the midline, in place (``z``/``a``: pixel centres in mm, superior / anterior, as for
    :func:`lss_vlm.data.phantom.anatomy.render_sagittal`). ``labels`` is read, never changed."""
    _, v = spine_coordinates(z, a, spine)
    depth = body_depth_at(spine, abs(lateral))
    sampling = _spacing(z, a)
    bone = (labels == BODY) | (labels == DISC)
    if not bone.any():
        return
    # distance from a pixel centre to the nearest bone pixel centre; the bone's edge lies half a pixel beyond that
    # centre, so a layer of thickness t covers the pixels within t + half a pixel (a layer thinner than a pixel
    # shows wherever it covers half of one, as partial volume would draw it)
    edge = 0.5 * min(sampling)
    outside = ndimage.distance_transform_edt(~bone, sampling=sampling) - edge
    soft = (labels == 0) & np.isin(tissue, (Tissue.SOFT_TISSUE, Tissue.FAT, Tissue.MUSCLE))
    front = soft & (v < -depth / 2) & (outside <= anatomy.anterior)
    back = soft & (v > -depth / 2) & (outside <= anatomy.posterior) & (abs(lateral) < PLL_HALF_WIDTH)
    inside_disc = ndimage.distance_transform_edt(labels != BODY, sampling=sampling) - edge
    endplate = (labels == DISC) & (tissue == Tissue.ANNULUS) & (inside_disc <= anatomy.endplate)
    tissue[front | back | endplate] = Tissue.LIGAMENT
