"""Geometry of the phantom: label maps and finer tissue maps of the mid-sagittal and the axial (disc-level) slices.

Everything is drawn analytically on pixel-centre coordinates in mm (vectorised numpy, no per-pixel loops), so
image and mask never need resampling and the dural-sac area is exact to the pixel.

Axial slices are drawn around the canal centre in polar coordinates ``(r, θ)`` (θ = 0 anterior, θ > 0 towards
the patient's left). The bony canal is an ellipse with a trefoil modulation; stenosis narrows the *free* canal
by a posterior disc bulge (anterior sector), ligamentum-flavum thickening (posterolateral leaves) and facet
hypertrophy (lateral). The thecal sac is the set of the ``k`` pixels with the smallest ``r / R_free(θ)``, where
``k = round(target_area / pixel_area)``: a star-shaped sac that fills the free canal and has the target area.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ...constants import LABEL_INDEX

BODY, DISC, SAC, POSTERIOR, LIGAMENTUM = (
    LABEL_INDEX[n] for n in ("vertebral_body", "disc", "thecal_sac", "posterior_elements", "ligamentum_flavum")
)
THETA = np.linspace(-np.pi, np.pi, 181)[:-1]
_DTHETA = THETA[1] - THETA[0]


class Tissue(IntEnum):
    """Tissue classes that set the MR signal (finer than the labels: e.g. cortex vs marrow, annulus vs nucleus)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    MARROW = 3
    CORTEX = 4
    ANNULUS = 5
    NUCLEUS = 6
    DEGENERATED_NUCLEUS = 7
    CSF = 8
    NERVE = 9
    LIGAMENTUM = 10
    SOFT_TISSUE = 11
    LIGAMENT = 12
    JOINT_FLUID = 13
    VESSEL = 14


@dataclass(frozen=True)
class CanalGeometry:
    """Polar radii (mm, sampled on :data:`THETA`) of one disc level's canal, and the midline numbers for sagittal."""

    r_bony: np.ndarray
    r_free: np.ndarray
    bulge: np.ndarray
    lf: np.ndarray
    gap: float
    severity: float


@dataclass(frozen=True)
class LevelAnatomy:
    """Patient anatomy at one disc level plus the stenosis causes (weights sum to 1) of that level."""

    canal_width: float
    canal_depth: float
    trefoil: float
    lf_base: float
    lf_asymmetry: float
    causes: tuple[float, float, float]  # disc bulge, LF thickening, facet hypertrophy
    disc_width: float
    disc_depth: float
    facet_radius: float
    facet_angle: float
    lamina_thickness: float
    spinous_length: float
    obliquity: float


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def design_canal(anatomy: LevelAnatomy, free_area: float, gap: float, cfg) -> CanalGeometry:
    """Choose the stenosis severity (and, if needed, the canal scale) so that the free canal has ``free_area`` mm².

    On :data:`THETA`: ``R_bony = scale · ellipse(W, D) · (1 + trefoil · cos 3(θ-π)) - facet``, ``R_free = R_bony -
    bulge - lf - gap``, where the disc bulge (anterior), LF thickness (posterolateral leaves) and facet growth
    (lateral) grow with the severity times the level's cause weights; free area ``½ ∫ R_free² dθ``.
    """
    t = THETA
    w_disc, w_lf, w_facet = anatomy.causes
    ellipse = 1.0 / np.sqrt((np.sin(t) / (anatomy.canal_width / 2)) ** 2 + (np.cos(t) / (anatomy.canal_depth / 2)) ** 2)
    base = ellipse * (1.0 + anatomy.trefoil * np.cos(3.0 * (t - np.pi)))
    bulge_shape = np.exp(-((t / 0.7) ** 2))
    facet_shape = w_facet * cfg.facet_hypertrophy_mm * np.exp(-(((np.abs(t) - 1.85) / 0.38) ** 2))
    leaf = _smoothstep((np.abs(t) - 1.15) / 0.55) * (1.0 + anatomy.lf_asymmetry * np.sign(t))
    lf_base = anatomy.lf_base * leaf
    lf_growth = w_lf * cfg.lf_thickening_mm * (0.65 + 0.7 * np.sin(t) ** 2) * leaf

    def build(severity: float, scale: float) -> CanalGeometry:
        r_bony = scale * base - severity * facet_shape
        bulge = (0.3 + severity * w_disc * cfg.disc_bulge_mm) * bulge_shape
        lf = lf_base + severity * lf_growth
        r_free = np.maximum(r_bony - bulge - lf - gap, 0.6)
        return CanalGeometry(r_bony, r_free, bulge, lf, gap, severity)

    def area(g: CanalGeometry) -> float:
        return float(0.5 * np.dot(g.r_free, g.r_free) * _DTHETA)

    max_severity = 1.6
    if area(build(0.0, 1.0)) < free_area:  # roomy target: widen the canal

        def family(p: float) -> CanalGeometry:
            return build(0.0, p)

        lo, hi, increasing = 1.0, 3.0, True
    elif area(build(max_severity, 1.0)) > free_area:  # very tight target: narrow the bony canal as well

        def family(p: float) -> CanalGeometry:
            return build(max_severity, p)

        lo, hi, increasing = 0.2, 1.0, True
    else:

        def family(p: float) -> CanalGeometry:
            return build(p, 1.0)

        lo, hi, increasing = 0.0, max_severity, False
    for _ in range(16):  # bisection on the free area, monotone in p
        mid = 0.5 * (lo + hi)
        if (area(family(mid)) > free_area) == increasing:
            hi = mid
        else:
            lo = mid
    return family(0.5 * (lo + hi))


def _polar(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius and angle from anterior (``-y``); θ > 0 towards ``+x``."""
    return np.hypot(x, y), np.arctan2(x, -y)


def _theta_weights(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights for periodic linear interpolation of :data:`THETA`-sampled values at ``theta``."""
    k = (theta - THETA[0]) / _DTHETA
    i0 = np.floor(k).astype(np.intp)
    frac = k - i0
    n = THETA.size
    return i0 % n, (i0 + 1) % n, frac


def _on_theta(values: np.ndarray, weights: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    i0, i1, frac = weights
    return values[i0] * (1.0 - frac) + values[i1] * frac


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    w = -(x - cx) * s + (y - cy) * c
    return (u / ax) ** 2 + (w / ay) ** 2


def render_axial(
    x: np.ndarray, y: np.ndarray, geom: CanalGeometry, anatomy: LevelAnatomy, sac_pixels: int, degenerated: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Label and tissue maps of an axial slice through a disc. ``x``/``y`` are pixel centres (mm, canal centre at 0,
    ``+y`` posterior, ``+x`` patient left). The sac gets exactly ``sac_pixels`` pixels."""
    labels = np.zeros(x.shape, np.uint8)
    tissue = np.full(x.shape, Tissue.SOFT_TISSUE, np.uint8)
    r, th = _polar(x, y)
    tw = _theta_weights(th)
    r_free, r_bony = _on_theta(geom.r_free, tw), _on_theta(geom.r_bony, tw)
    bulge, lf = _on_theta(geom.bulge, tw), _on_theta(geom.lf, tw)
    front = -geom.r_bony[np.argmin(np.abs(THETA))]  # y of the normal posterior disc margin
    back = geom.r_bony[0]  # r_bony at θ = -π: posterior canal wall on the midline

    # body wall, subcutaneous fat and air behind the back
    curve = 8.0 * (x / 40.0) ** 2  # the back is convex
    tissue[y > back + anatomy.spinous_length - 6.0 + curve] = Tissue.FAT
    tissue[y > back + anatomy.spinous_length + 14.0 + curve] = Tissue.AIR
    # psoas and paraspinal muscles, great vessels
    disc_cy = front - anatomy.disc_depth / 2 + 0.6
    for side in (-1.0, 1.0):
        psoas = _ellipse(x, y, side * (anatomy.disc_width / 2 + 8.0), disc_cy + 5.0, 9.0, 12.0, side * 0.3) <= 1
        tissue[psoas] = Tissue.MUSCLE
        erector = _ellipse(x, y, side * 17.0, back + 16.0, 14.0, 13.0) <= 1
        tissue[erector] = Tissue.MUSCLE
    disc_front = disc_cy - anatomy.disc_depth / 2
    tissue[_ellipse(x, y, 9.0, disc_front - 9.0, 8.0, 8.0) <= 1] = Tissue.VESSEL  # aorta (patient left)
    tissue[_ellipse(x, y, -13.0, disc_front - 8.0, 11.0, 7.0) <= 1] = Tissue.VESSEL  # inferior vena cava

    # disc (with an endplate crescent of vertebral body from slice obliquity) and nucleus
    disc = (_ellipse(x, y, 0.0, disc_cy, anatomy.disc_width / 2, anatomy.disc_depth / 2) <= 1) & (y <= front)
    endplate = disc_front + anatomy.obliquity * anatomy.disc_depth - 3.0 * (x / (anatomy.disc_width / 2)) ** 2
    body = disc & (y < endplate) & (anatomy.obliquity > 0)
    labels[disc], tissue[disc] = DISC, Tissue.ANNULUS
    nucleus = disc & (_ellipse(x, y, 0.0, disc_cy + 1.5, anatomy.disc_width * 0.3, anatomy.disc_depth * 0.28) <= 1)
    tissue[nucleus] = Tissue.DEGENERATED_NUCLEUS if degenerated else Tissue.NUCLEUS
    labels[body], tissue[body] = BODY, Tissue.MARROW
    tissue[body & (y > endplate - 1.0)] = Tissue.CORTEX  # endplate

    # posterior elements: facets (two articular processes split by the joint), lamina, spinous process
    outside = r >= r_bony
    for side in (-1.0, 1.0):
        angle = side * anatomy.facet_angle
        rb = float(np.interp(angle, THETA, geom.r_bony, period=2 * np.pi))
        size = anatomy.facet_radius + geom.severity * anatomy.causes[2] * 1.5
        dist = rb + 0.75 * size
        cx, cy = dist * np.sin(angle), -dist * np.cos(angle)
        tilt = side * 0.75
        q = _ellipse(x, y, cx, cy, size * 1.35, size, tilt)
        facet = (q <= 1) & outside
        joint = facet & (np.abs(-(x - cx) * np.sin(tilt) + (y - cy) * np.cos(tilt)) < 0.3) & (q < 0.8)
        labels[facet], tissue[facet] = POSTERIOR, Tissue.MARROW
        tissue[facet & (q > 0.72)] = Tissue.CORTEX
        labels[joint], tissue[joint] = 0, Tissue.JOINT_FLUID
    lamina = outside & (r < r_bony + anatomy.lamina_thickness) & (np.abs(th) > 2.25)
    spinous = (np.abs(x) < 3.2 - 1.2 * np.clip((y - back) / anatomy.spinous_length, 0, 1)) & (y > back)
    spinous &= y < back + anatomy.spinous_length
    lamina |= spinous
    labels[lamina], tissue[lamina] = POSTERIOR, Tissue.MARROW
    tissue[lamina & ((r < r_bony + 0.9) | (r > r_bony + anatomy.lamina_thickness - 0.9)) & ~spinous] = Tissue.CORTEX

    # canal contents: epidural fat, bulging disc, ligamentum flavum, then the sac
    canal = r < r_bony
    labels[canal], tissue[canal] = 0, Tissue.FAT
    band = canal & (r >= r_free + geom.gap)
    disc_band = band & (bulge >= lf) & (np.abs(th) < np.pi / 2)
    lf_band = band & (lf > bulge)
    labels[disc_band], tissue[disc_band] = DISC, Tissue.ANNULUS
    labels[lf_band], tissue[lf_band] = LIGAMENTUM, Tissue.LIGAMENTUM
    ratio = (r / r_free).ravel()
    sac = np.zeros(ratio.size, bool)
    sac[np.argpartition(ratio, sac_pixels - 1)[:sac_pixels]] = True
    sac = sac.reshape(x.shape)
    labels[sac], tissue[sac] = SAC, Tissue.CSF
    # cauda equina: nerve roots layered in the dependent (posterior) part of the sac
    roots = sac & (np.cos(6.0 * np.arctan2(x, y - back)) > 0.55) & (r > 0.35 * r_free) & (y > 0)
    tissue[roots] = Tissue.NERVE
    return labels, tissue


@dataclass(frozen=True)
class SpineAnatomy:
    """Patient-level sagittal anatomy (mm): lordosis radius, body/disc heights, depth, posterior elements."""

    lordosis_radius: float
    body_heights: tuple[float, ...]  # T12, L1, L2, L3, L4, L5, S1 (sacrum)
    disc_heights: tuple[float, ...]  # T12-L1, L1-L2, …, L5-S1
    body_depth: float
    sac_depth: float  # AP diameter of the sac behind the bodies
    anterior_gap: float
    spinous_length: float
    fat_thickness: float
    conus_level: float  # 0 = top of L1, 1 = bottom of L1


@dataclass(frozen=True)
class MidlineLevel:
    """Midline numbers of one stenosis level (from its axial geometry): disc margin → sac → LF, in mm."""

    bulge: float
    disc_to_sac: float
    sac_ap: float
    sac_to_lf: float
    lf_thickness: float
    degenerated: bool


def spine_layout(spine: SpineAnatomy) -> tuple[np.ndarray, np.ndarray]:
    """Arc-length centres (mm, caudal positive, L3 centre at 0) of the bodies and of the discs."""
    edges = [0.0]
    for i, h in enumerate(spine.body_heights):
        edges.append(edges[-1] + h)
        if i < len(spine.disc_heights):
            edges.append(edges[-1] + spine.disc_heights[i])
    edges = np.asarray(edges)
    bodies = 0.5 * (edges[0:-1:2] + edges[1::2])
    discs = 0.5 * (edges[1:-1:2] + edges[2::2])
    offset = bodies[3]
    return bodies - offset, discs - offset


def _nearest(s: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (sorted ``centres``) for every value of ``s``."""
    return np.searchsorted(0.5 * (centres[1:] + centres[:-1]), s)


def spine_coordinates(z: np.ndarray, a: np.ndarray, spine: SpineAnatomy) -> tuple[np.ndarray, np.ndarray]:
    """Arc length ``s`` along the posterior vertebral line (mm, caudal positive, L3 centre at 0) and distance ``v``
    behind it (mm, posterior positive) of the sagittal-plane points ``z`` (superior) / ``a`` (anterior)."""
    rc = spine.lordosis_radius
    da = a + rc
    return -rc * np.arctan2(z, da), rc - np.hypot(z, da)


def body_depth_at(spine: SpineAnatomy, lateral: float, half_width: float | None = None) -> float:
    """Antero-posterior depth (mm) of the vertebral bodies ``lateral`` mm off the midline: the body's axial
    outline is taken as an ellipse of half-width ``half_width`` (default :data:`BODY_HALF_WIDTH`) with a flat
    posterior wall, so the anterior margin recedes off-midline (exactly ``body_depth`` on the midline; 0 beyond
    ``half_width``)."""
    half_width = BODY_HALF_WIDTH if half_width is None else half_width
    return float(_elliptical_depth(spine.body_depth, lateral, half_width))


def _elliptical_depth(depth: float, lateral: float, half_width: float | np.ndarray) -> np.ndarray:
    """Depth (mm) of an axial outline that is an ellipse of half-width ``half_width`` and depth ``depth`` with a
    flat posterior wall, ``lateral`` mm off the midline: ``depth · sqrt(1 − (lateral / half_width)²)``, 0 beyond."""
    return depth * np.sqrt(np.clip(1.0 - (lateral / half_width) ** 2, 0.0, None))


#: Half-widths (mm) of the lumbar vertebral body, bony canal and dural sac, used off the midline (parasagittal
#: slices). Typical adult values: body 40-50 mm wide, interpedicular distance 20-25 mm, dural sac 15-18 mm wide.
BODY_HALF_WIDTH, CANAL_HALF_WIDTH, SAC_HALF_WIDTH = 25.0, 11.0, 8.5


@dataclass(frozen=True)
class VertebralOutline:
    """Coronal outline of the lumbar bodies and discs (phantom option ``vertebral_waist``), in mm.

    A lumbar body is waisted: its lateral cortex is concave between the endplate rims, so its half-width at
    mid-height is ``waist`` less than at the endplates; the disc's annulus reaches ``disc_overhang`` beyond the
    endplate rims (Panjabi et al., Spine 1992, 17:299, for the endplate widths; the waist and overhang ranges of
    :func:`sample_outline` are our reading of coronal images, not measured values). On a sagittal slice 20-27 mm
    off the midline the discs therefore stay while the bodies thin to their endplate rims or vanish, the look of
    the far-lateral slices of real sagittal series."""

    waist: float = 0.0
    disc_overhang: float = 0.0


def sample_outline(rng: np.random.Generator) -> VertebralOutline:
    """One case's outline: waist 1.5-4 mm, disc overhang 0.5-2 mm per side."""
    return VertebralOutline(waist=float(rng.uniform(1.5, 4.0)), disc_overhang=float(rng.uniform(0.5, 2.0)))


def render_sagittal(  # noqa: PLR0913
    z: np.ndarray,
    a: np.ndarray,
    spine: SpineAnatomy,
    levels: list[MidlineLevel],
    lateral: float = 0.0,
    outline: VertebralOutline | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label and tissue maps of a sagittal slice. ``z`` superior, ``a`` anterior (mm); the posterior
    vertebral line is a lordotic arc through the origin (L3 centre). Each pixel is tested against its nearest
    body / disc / spinous process only (vectorised gathers instead of a loop over structures).

    ``lateral``: distance of the slice from the midline (mm, sign ignored; 0 = the mid-sagittal slice). Off the
    midline the bodies and discs get shallower (:func:`body_depth_at`), the sac narrows and is gone beyond
    :data:`SAC_HALF_WIDTH`, beyond :data:`CANAL_HALF_WIDTH` the canal gives way to pedicles and neural foramina
    (fat around a nerve root), and the spinous processes give way to the shorter articular pillars. ``outline``
    (:class:`VertebralOutline`) waists the bodies and lets the discs overhang them; ``None`` draws both as one
    ellipse of half-width :data:`BODY_HALF_WIDTH`. Nothing of a body or disc is drawn beyond its half-width."""
    x = abs(float(lateral))
    s, v = spine_coordinates(z, a, spine)
    labels = np.zeros(z.shape, np.uint8)
    tissue = np.full(z.shape, Tissue.SOFT_TISSUE, np.uint8)
    body_s, disc_s = spine_layout(spine)
    body_h, disc_h = np.asarray(spine.body_heights), np.asarray(spine.disc_heights)
    depth = body_depth_at(spine, x)
    disc_depth = depth if outline is None else body_depth_at(spine, x, BODY_HALF_WIDTH + outline.disc_overhang)
    # per-disc midline numbers; index 0 is T12-L1 (never stenotic)
    bulges = np.array([0.3] + [lv.bulge for lv in levels])
    ant_lv = np.array([spine.anterior_gap] + [lv.bulge + lv.disc_to_sac for lv in levels])
    post_lv = np.array(
        [spine.anterior_gap + spine.sac_depth] + [lv.bulge + lv.disc_to_sac + lv.sac_ap for lv in levels]
    )
    gap_lf = np.array([2.0] + [lv.sac_to_lf for lv in levels])
    lf_t = np.array([2.0] + [lv.lf_thickness for lv in levels])
    degenerated = np.array([False] + [lv.degenerated for lv in levels])

    # sac walls along the spine, narrowing at each stenotic disc level (nearest disc only)
    d = _nearest(s, disc_s)
    ds = s - disc_s[d]
    hd = disc_h[d]
    ant0, post0 = spine.anterior_gap, spine.anterior_gap + spine.sac_depth
    w = np.exp(-((ds / (hd / 2 + 3.0)) ** 2))
    ant = ant0 + w * (ant_lv[d] - ant0)
    post = post0 + w * (post_lv[d] - post0)
    bump = np.clip(1.0 - (ds / (hd / 2 + 2.5)) ** 2, 0, None)
    ant = np.maximum(ant, bulges[d] * bump + 0.6)
    sac_end = body_s[-1] + 4.0  # dural sac ends at S2
    post = ant + (post - ant) * np.clip((sac_end - s) / 18.0, 0, 1)
    profile = np.sqrt(np.clip(1.0 - ((ds - 1.0) / (hd / 2 + 6.0)) ** 2, 0, None))
    lf_inner = post + gap_lf[d]
    lf_outer = np.where(profile > 0, lf_inner + lf_t[d] * profile, -np.inf)
    wall = np.maximum(post0 + 2.5, lf_outer + 0.3)

    # back: posterior elements (lamina + spinous process per vertebra), soft tissue, subcutaneous fat, air
    skin = post0 + 2.5 + spine.spinous_length + spine.fat_thickness
    tissue[v > post0] = Tissue.MUSCLE
    tissue[v > wall + spine.spinous_length + 1.0] = Tissue.FAT
    tissue[v > skin] = Tissue.AIR
    u = v - wall
    j = _nearest(s - 0.3 * np.clip(u, 0, None), body_s + 0.18 * body_h)
    h = body_h[j]
    reach = spine.spinous_length if x < 6.0 else min(spine.spinous_length, 16.0)  # articular pillars off-midline
    length = np.where(j == len(body_s) - 1, 0.5, 1.0) * reach
    half = 0.42 * h * (1.0 - 0.45 * np.clip((u - 5.0) / length, 0, 1)) * np.where(u < 6.0, 1.0, 0.8)
    off = np.abs(s - (body_s[j] + 0.18 * h + 0.3 * u))
    process = (u >= 0) & (u <= length) & (off <= half)
    labels[process], tissue[process] = POSTERIOR, Tissue.MARROW
    tissue[process & ((half - off < 1.0) | (length - u < 1.0) | (u < 1.0))] = Tissue.CORTEX

    # canal: epidural fat, ligamentum flavum, sac with CSF, conus and cauda equina
    canal = (v > 0) & (v <= wall) & (s < sac_end + 25.0)
    labels[canal], tissue[canal] = 0, Tissue.FAT
    lf = canal & (v > lf_inner) & (v <= lf_outer) & (s < sac_end)
    labels[lf], tissue[lf] = LIGAMENTUM, Tissue.LIGAMENTUM
    if x > 0:  # off the midline the sac is a chord of its (elliptic) cross-section
        mid, keep = 0.5 * (ant + post), float(np.sqrt(max(1.0 - (x / SAC_HALF_WIDTH) ** 2, 0.0)))
        ant, post = mid - keep * (mid - ant), mid + keep * (post - mid)
    sac = (v >= ant) & (v <= post) & (s < sac_end) & (post - ant > 0.8)
    labels[sac], tissue[sac] = SAC, Tissue.CSF
    conus_tip = body_s[1] - body_h[1] / 2 + spine.conus_level * body_h[1]
    cord_half = 4.0 * np.clip((conus_tip - s) / 25.0, 0, 1)
    tissue[sac & (np.abs(v - 0.5 * (ant + post) - 0.8) < cord_half)] = Tissue.NERVE
    roots = sac & (s > conus_tip) & (np.abs(v - (post - 0.3 * (post - ant))) < 0.45) & (s < sac_end - 10.0)
    tissue[roots] = Tissue.NERVE

    # discs (with posterior bulge) and vertebral bodies (drawn last: endplates win)
    if disc_depth > 0:
        q = (ds / (hd / 2 + 1.0)) ** 4 + ((v + disc_depth / 2) / (disc_depth / 2 + 1.2)) ** 4
        disc = ((q <= 1) & (v <= 0)) | ((bump > 0) & (v > -1.0) & (v <= bulges[d] * bump))
        labels[disc], tissue[disc] = DISC, Tissue.ANNULUS
        nucleus = (ds / (hd * 0.3)) ** 2 + ((v + disc_depth / 2 + 1.0) / (disc_depth * 0.3)) ** 2 <= 1
        tissue[nucleus] = np.where(degenerated[d], Tissue.DEGENERATED_NUCLEUS, Tissue.NUCLEUS)[nucleus]
    b = _nearest(s, body_s)
    bd = _body_depths(spine, x, s, b, body_s, body_h, outline) if outline is not None else depth
    bd = bd * np.where(b == len(body_s) - 1, 0.8, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # bd = 0 beyond the body: q is inf or nan, no body
        q = ((s - body_s[b]) / (body_h[b] / 2)) ** 4 + ((v + bd / 2) / (bd / 2)) ** 4
    body = (q <= 1) & (bd > 0)
    labels[body], tissue[body] = BODY, Tissue.MARROW
    tissue[body & (q > 0.72)] = Tissue.CORTEX
    if x > CANAL_HALF_WIDTH - 1.0:
        _foramina(labels, tissue, s, v, canal, wall, body_s, body_h, x)
    return labels, tissue


def _body_depths(  # noqa: PLR0913
    spine: SpineAnatomy,
    x: float,
    s: np.ndarray,
    b: np.ndarray,
    body_s: np.ndarray,
    body_h: np.ndarray,
    outline: VertebralOutline,
) -> np.ndarray:
    """Per-pixel depth (mm) of the waisted body ``b`` at slice offset ``x``: the half-width falls from
    :data:`BODY_HALF_WIDTH` at the endplates to ``BODY_HALF_WIDTH - waist`` at mid-height (a parabola in the
    height)."""
    rel = (s - body_s[b]) / (body_h[b] / 2)  # -1 upper endplate, 0 mid-height, 1 lower endplate
    half_width = BODY_HALF_WIDTH - outline.waist * np.clip(1.0 - rel**2, 0.0, 1.0)
    return _elliptical_depth(spine.body_depth, x, half_width)


def _foramina(labels, tissue, s, v, canal, wall, body_s, body_h, x: float) -> None:  # noqa: PLR0913
    """Lateral to the canal: a pedicle (bone bar from the upper half of each body back to the posterior elements)
    and below it the neural foramen (fat around the exiting nerve root). Edits ``labels``/``tissue`` in place."""
    b = _nearest(s, body_s)
    rel = (s - (body_s[b] - body_h[b] / 2)) / body_h[b]  # 0 at the body's upper endplate, 1 at its lower one
    lateral_part = canal & (b < len(body_s) - 1)
    if x < CANAL_HALF_WIDTH + 8.0:
        pedicle = lateral_part & (rel > 0.08) & (rel < 0.55)
        labels[pedicle], tissue[pedicle] = POSTERIOR, Tissue.MARROW
        rim = pedicle & ((rel < 0.14) | (rel > 0.49))
        tissue[rim] = Tissue.CORTEX
    root = lateral_part & (np.hypot((rel - 0.72) * body_h[b], v - 0.45 * wall) < 2.8) & (tissue == Tissue.FAT)
    tissue[root] = Tissue.NERVE
