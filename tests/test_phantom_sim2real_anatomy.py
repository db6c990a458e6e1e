"""Sim-to-real anatomy of the domain-randomised phantom (issue 14): prevertebral structures and parasagittal slices.

Both are options of the domain-randomised phantom only; the default phantom (and the domain-randomised one without
them) must stay bit-identical, because the other suites' numbers depend on it.
"""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lss_vlm.constants import LABEL_INDEX
from lss_vlm.data.phantom import PhantomConfig, synthesize
from lss_vlm.data.phantom.anatomy import (
    BODY_HALF_WIDTH,
    CANAL_HALF_WIDTH,
    SAC_HALF_WIDTH,
    MidlineLevel,
    Tissue,
    VertebralOutline,
    render_sagittal,
    spine_coordinates,
    spine_layout,
)
from lss_vlm.data.phantom.generate import _grid, _spine_anatomy
from lss_vlm.data.phantom.ligaments import PLL_HALF_WIDTH, LigamentAnatomy, paint_ligaments
from lss_vlm.data.phantom.prevertebral import ExtraTissue, paint_prevertebral, sample_prevertebral
from lss_vlm.data.phantom.randomisation import RandomisationRanges, randomised_acquire
from lss_vlm.errors import ConfigError

BODY, DISC, SAC, POSTERIOR = (LABEL_INDEX[n] for n in ("vertebral_body", "disc", "thecal_sac", "posterior_elements"))

#: sha256 of the image and mask arrays of ``synthesize(n_cases=6, size=48, seed=5)`` (every view, manifest order),
#: of its manifest.csv and its fingerprint, computed with the code of commit 48549a5, before these options existed.
DEFAULT_DIGESTS = (
    "d9ede05da65e3ee7c4195fe093d08c983e5b0909dfb8d01007cdfe074dd4ffc5",
    "b08a379b46a1bde53baedff1e762359362f632088d169c150d88eb16347ea492",
    "bdde4086ab0e209e366782f2e1d5a9e79d45610f3a9fe24d2140ff800b5fe2ec",
)
#: Same for ``synthesize(n_cases=5, size=48, seed=5, domain_randomisation=True)`` (sag_t2, its mask, ax_l4_l5).
RANDOMISED_DIGEST = "81074a19308349bb4031a1055dee2c4992780937511770ea92a74dd3c68b2195"


def _array(path) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj))


def _digest(manifest, columns=None) -> str:
    df = pd.read_csv(manifest, dtype=str)
    columns = columns or sorted(c for c in df.columns if c.startswith(("img_", "seg_")))
    h = hashlib.sha256()
    for _, row in df.iterrows():
        for c in columns:
            h.update(_array(manifest.parent / row[c]).tobytes())
    return h.hexdigest()


def test_default_and_plain_randomised_phantoms_are_bit_identical_to_before(tmp_path) -> None:
    manifest = synthesize(tmp_path / "default", n_cases=6, size=48, seed=5)
    df = pd.read_csv(manifest, dtype=str)
    fingerprint = json.loads((manifest.parent / "phantom.json").read_text())["fingerprint"]
    got = (_digest(manifest), hashlib.sha256(df.to_csv(index=False).encode()).hexdigest(), fingerprint)
    assert got == DEFAULT_DIGESTS
    randomised = synthesize(tmp_path / "dr", n_cases=5, size=48, seed=5, domain_randomisation=True)
    assert _digest(randomised, ["img_sag_t2", "seg_sag_t2", "img_ax_l4_l5"]) == RANDOMISED_DIGEST


@pytest.fixture(scope="module")
def slice_setup():
    spine = _spine_anatomy(np.random.default_rng(1), np.zeros(5))
    levels = [MidlineLevel(0.5, 1.0, 13.0, 1.0, 2.5, False) for _ in range(5)]
    u, w = _grid(128, (1.6, 1.6), 0.0, (-4.0, 5.0))
    return spine, levels, -w, -u


def test_prevertebral_structures_are_background_and_lie_in_front_of_the_bodies(slice_setup) -> None:
    spine, levels, z, a = slice_setup
    anatomy = sample_prevertebral(np.random.default_rng(2), spine)
    for lateral in (0.0, 8.0, -16.0, 20.0):
        labels, tissue = render_sagittal(z, a, spine, levels, lateral)
        painted_labels, painted = labels.copy(), tissue.copy()
        paint_prevertebral(painted, painted_labels, z, a, spine, anatomy, lateral)
        assert np.array_equal(painted_labels, labels)  # labels are never touched
        changed = painted != tissue
        assert changed.sum() > 100
        assert (labels[changed] == 0).all() and (tissue[changed] == Tissue.SOFT_TISSUE).all()
        _, v = spine_coordinates(z, a, spine)
        body_front = v[labels == BODY].min()
        assert (v[changed] < 0).all()  # nothing behind the posterior vertebral line
        vessel = changed & np.isin(painted, [Tissue.VESSEL, ExtraTissue.BOWEL, ExtraTissue.BOWEL_GAS])
        assert (v[vessel] < body_front + 1.0).all()  # vessels and bowel: in front of the bodies
    # the psoas shows only off the midline, the aorta (left of the midline here) only where its tube is cut
    mid_labels, mid = render_sagittal(z, a, spine, levels, 0.0)
    lat_labels, lat = render_sagittal(z, a, spine, levels, 22.0)
    paint_prevertebral(mid, mid_labels, z, a, spine, anatomy, 0.0)
    paint_prevertebral(lat, lat_labels, z, a, spine, anatomy, 22.0)
    _, v = spine_coordinates(z, a, spine)
    assert not ((mid == Tissue.MUSCLE) & (v < 0)).any()
    assert ((lat == Tissue.MUSCLE) & (v < 0)).sum() > 20


def test_parasagittal_slice_narrows_then_loses_the_sac_and_shows_pedicles(slice_setup) -> None:
    spine, levels, z, a = slice_setup
    maps = {x: render_sagittal(z, a, spine, levels, x) for x in (0.0, 6.0, -6.0, SAC_HALF_WIDTH + 1, 14.0)}
    sac = {x: int((labels == SAC).sum()) for x, (labels, _) in maps.items()}
    assert sac[0.0] > sac[6.0] > 0 and sac[SAC_HALF_WIDTH + 1] == 0 and sac[14.0] == 0
    assert np.array_equal(maps[6.0][0], maps[-6.0][0])  # the side does not matter for the spine
    body = {x: int((labels == BODY).sum()) for x, (labels, _) in maps.items()}
    assert body[14.0] < body[0.0] and body[14.0] > 0.5 * body[0.0]  # shallower bodies, still there
    assert (maps[14.0][0] == DISC).any()
    # pedicles: posterior elements between the bodies and the posterior canal wall, only lateral to the canal
    _, v = spine_coordinates(z, a, spine)
    front_band = (v > 0) & (v < 8.0)
    assert 14.0 > CANAL_HALF_WIDTH
    assert ((maps[14.0][0] == POSTERIOR) & front_band).sum() > 20
    assert not ((maps[0.0][0] == POSTERIOR) & front_band).any()
    assert ((maps[14.0][1] == Tissue.NERVE) & front_band).any()  # exiting nerve roots in the foramina


def test_randomised_phantom_with_prevertebral_keeps_masks_and_parasagittal_changes_some(tmp_path) -> None:
    common = {"n_cases": 5, "size": 48, "seed": 5, "domain_randomisation": True}
    plain = synthesize(tmp_path / "plain", **common)
    front = synthesize(tmp_path / "front", prevertebral=True, **common)
    side = synthesize(tmp_path / "side", parasagittal_share=1.0, **common)
    rows = pd.read_csv(plain)
    masks = {name: [_array(m.parent / r) for r in rows["seg_sag_t2"]] for name, m in (("plain", plain),
             ("front", front), ("side", side))}  # fmt: skip
    images = [_array(front.parent / r) for r in rows["img_sag_t2"]]
    assert all(np.array_equal(p, f) for p, f in zip(masks["plain"], masks["front"]))
    assert not all(np.array_equal(i, _array(plain.parent / r)) for i, r in zip(images, rows["img_sag_t2"]))
    assert sum(int((m == SAC).sum()) for m in masks["side"]) < sum(int((m == SAC).sum()) for m in masks["plain"])
    assert (
        _array(side.parent / rows["seg_ax_l4_l5"][0]).tobytes()
        == _array(plain.parent / rows["seg_ax_l4_l5"][0]).tobytes()
    )


def test_new_options_need_domain_randomisation_and_valid_ranges() -> None:
    with pytest.raises(ConfigError, match="need domain_randomisation"):
        PhantomConfig(prevertebral=True)
    with pytest.raises(ConfigError, match="need domain_randomisation"):
        PhantomConfig(parasagittal_share=0.3)
    with pytest.raises(ConfigError, match="parasagittal_share must be in"):
        PhantomConfig(domain_randomisation=True, parasagittal_share=1.5)
    with pytest.raises(ConfigError, match="parasagittal_mm"):
        PhantomConfig(domain_randomisation=True, parasagittal_mm=(20.0, 4.0))
    assert "prevertebral" not in PhantomConfig().fingerprint_dict()
    assert PhantomConfig(domain_randomisation=True, prevertebral=True).fingerprint_dict()["prevertebral"] is True


def test_texture_varies_intensity_inside_a_tissue_and_leaves_masks_and_default_alone(tmp_path) -> None:
    """``texture_sd``: a smooth random modulation of each tissue's intensity; masks unchanged, off by default."""
    with pytest.raises(ConfigError, match="need domain_randomisation"):
        PhantomConfig(texture_sd=0.3)
    with pytest.raises(ConfigError, match="texture_sd must be in"):
        PhantomConfig(domain_randomisation=True, texture_sd=1.5)
    assert "texture_sd" not in PhantomConfig(domain_randomisation=True).fingerprint_dict()

    def phantom(name: str, texture: float):
        return synthesize(tmp_path / name, n_cases=6, size=64, seed=2, domain_randomisation=True, texture_sd=texture)

    flat, textured = phantom("flat", 0.0), phantom("textured", 0.6)
    for _, row in pd.read_csv(flat).iterrows():  # texture has its own random stream: the anatomy is unchanged
        assert np.array_equal(_array(flat.parent / row["seg_sag_t2"]), _array(textured.parent / row["seg_sag_t2"]))
        assert not np.array_equal(_array(flat.parent / row["img_sag_t2"]), _array(textured.parent / row["img_sag_t2"]))

    # with every other draw switched off, a tissue is one grey without texture and a smooth pattern with it
    tissue = np.zeros((64, 64), dtype=np.int64)
    tissue[8:56, 8:56] = 1
    quiet = dict(sigma_max=0.0, blur_px_max=0.0, bias_max=0.0, gamma_log_sd=0.0, noise_max=0.0, realistic_share=0.0)
    plain = randomised_acquire(tissue, np.random.default_rng(0), RandomisationRanges(**quiet)).astype(float)
    rough = randomised_acquire(tissue, np.random.default_rng(0), RandomisationRanges(**quiet, texture_sd=0.5))
    inside, rough = tissue == 1, rough.astype(float)
    assert plain[inside].std() == 0
    assert rough[inside].std() > 0.05 * rough[inside].mean()
    step = np.abs(np.diff(rough[8:56, 8:56], axis=1)).mean()  # smooth: neighbours differ far less than the spread
    assert step < 0.3 * rough[inside].std()


def test_spinal_ligaments_frame_bodies_and_discs_without_touching_a_label(slice_setup) -> None:
    """ALL in front of the bone, PLL behind it near the midline only, cartilaginous endplates inside the discs next
    to each body: all of the tissue LIGAMENT, all within their thickness of the bone, no label changed."""
    spine, levels, _, _ = slice_setup
    u, w = _grid(256, (0.8, 0.8), 0.0, (-4.0, 5.0))  # 0.8 mm pixels: the PLL fits in the 1 mm epidural gap
    z, a = -w, -u
    _, v = spine_coordinates(z, a, spine)
    anatomy = LigamentAnatomy(anterior=1.8, posterior=1.4, endplate=1.0)
    for lateral in (0.0, 5.0, 14.0):
        labels, tissue = render_sagittal(z, a, spine, levels, lateral)
        painted_labels, painted = labels.copy(), tissue.copy()
        paint_ligaments(painted, painted_labels, z, a, spine, anatomy, lateral)
        assert np.array_equal(painted_labels, labels)
        changed = painted != tissue
        assert (painted[changed] == Tissue.LIGAMENT).all() and not (tissue == Tissue.LIGAMENT).any()
        assert np.isin(labels[changed], [0, DISC]).all()
        bone = (labels == BODY) | (labels == DISC)
        near = ndimage.distance_transform_edt(~bone, sampling=(0.8, 0.8)) <= 1.8 + 0.4  # + half a pixel
        assert near[changed & (labels == 0)].all()  # the ligaments hug the bone
        front = changed & (labels == 0) & (v < 0)
        back = changed & (labels == 0) & (v >= 0)
        assert front.sum() > 150  # a line along the front of the column
        assert (back.sum() > 40) == (lateral < PLL_HALF_WIDTH)  # the PLL is a midline band
        endplates = changed & (labels == DISC)
        assert endplates.sum() > 100
        inside = ndimage.distance_transform_edt(labels != BODY, sampling=(0.8, 0.8))
        assert (inside[endplates] <= 1.0 + 0.4).all()  # within the endplate's thickness of a body's edge


def test_spinal_ligaments_option_changes_images_not_masks_and_is_off_by_default(tmp_path) -> None:
    with pytest.raises(ConfigError, match="need domain_randomisation"):
        PhantomConfig(spinal_ligaments=True)
    assert "spinal_ligaments" not in PhantomConfig(domain_randomisation=True).fingerprint_dict()
    # 128 px (1.5-1.8 mm pixels): at the 48 px of the other tests a 1-2 mm layer covers no pixel
    common = {"n_cases": 5, "size": 128, "seed": 5, "domain_randomisation": True, "prevertebral": True}
    plain = synthesize(tmp_path / "plain", **common)
    lined = synthesize(tmp_path / "lined", spinal_ligaments=True, **common)
    rows = pd.read_csv(plain)
    for column in ("seg_sag_t2", "seg_ax_l4_l5", "img_ax_l4_l5"):
        assert all(np.array_equal(_array(plain.parent / r), _array(lined.parent / r)) for r in rows[column])
    assert not all(np.array_equal(_array(plain.parent / r), _array(lined.parent / r)) for r in rows["img_sag_t2"])


def test_spinal_ligaments_thinner_than_a_pixel_still_show(slice_setup) -> None:
    """A 1 mm layer on 1.6 mm pixels covers more than half of the pixels along the bone: it must be drawn (a
    pixel-centre test alone drew none of the three layers at the sim2real resolution)."""
    spine, levels, z, a = slice_setup
    _, v = spine_coordinates(z, a, spine)
    labels, tissue = render_sagittal(z, a, spine, levels, 0.0)
    painted = tissue.copy()
    paint_ligaments(painted, labels, z, a, spine, LigamentAnatomy(1.0, 1.0, 1.0))
    changed = painted != tissue
    assert (changed & (labels == 0) & (v < 0)).sum() > 40  # ALL
    assert (changed & (labels == 0) & (v >= 0)).sum() > 20  # PLL
    assert (changed & (labels == DISC)).sum() > 40  # cartilaginous endplates
    thinner = tissue.copy()  # a layer under half a pixel is left to the blur, as partial volume would
    paint_ligaments(thinner, labels, z, a, spine, LigamentAnatomy(0.5, 0.5, 0.5))
    assert np.array_equal(thinner, tissue)


def test_waisted_bodies_leave_discs_alone_on_a_far_lateral_slice(slice_setup) -> None:
    """``vertebral_waist``: the midline is unchanged; 23 mm off it the bodies keep only their endplate rims (no
    body pixel near mid-height) while the discs stay; beyond the bodies' half-width only the overhanging discs are
    left, and beyond those nothing of either."""
    spine, levels, z, a = slice_setup
    outline = VertebralOutline(waist=3.0, disc_overhang=1.5)
    for x in (0.0, 10.0):
        assert np.array_equal(render_sagittal(z, a, spine, levels, x)[0], render_sagittal(z, a, spine, levels, x,
                              VertebralOutline())[0])  # fmt: skip
    assert np.array_equal(render_sagittal(z, a, spine, levels, 0.0)[0], render_sagittal(z, a, spine, levels, 0.0,
                          outline)[0])  # fmt: skip
    plain, _ = render_sagittal(z, a, spine, levels, 23.0)
    waisted, _ = render_sagittal(z, a, spine, levels, 23.0, outline)
    s, _ = spine_coordinates(z, a, spine)
    body_s, _ = spine_layout(spine)
    mid_height = np.abs(s[..., None] - body_s[:-1]).min(-1) < 2.0  # within 2 mm of a lumbar body's centre
    assert ((plain == BODY) & mid_height).sum() > 20 and not ((waisted == BODY) & mid_height).any()
    assert 0 < (waisted == BODY).sum() < 0.5 * (plain == BODY).sum()
    assert (waisted == DISC).sum() >= (plain == DISC).sum() > 20
    beyond, _ = render_sagittal(z, a, spine, levels, BODY_HALF_WIDTH + 0.5, outline)
    assert not (beyond == BODY).any() and (beyond == DISC).sum() > 10
    for labels in (render_sagittal(z, a, spine, levels, BODY_HALF_WIDTH + 0.5)[0],
                   render_sagittal(z, a, spine, levels, BODY_HALF_WIDTH + 2.0, outline)[0]):  # fmt: skip
        assert not np.isin(labels, [BODY, DISC]).any()


def test_vertebral_waist_changes_only_off_midline_masks_and_needs_randomisation(tmp_path) -> None:
    common = {"n_cases": 5, "size": 48, "seed": 5, "domain_randomisation": True, "prevertebral": True}
    plain = synthesize(tmp_path / "plain", **common)
    waisted = synthesize(tmp_path / "waisted", vertebral_waist=True, **common)
    rows = pd.read_csv(plain)
    for image in ("img_sag_t2", "seg_sag_t2"):  # all midline slices: the waist changes nothing there
        assert all(np.array_equal(_array(plain.parent / r), _array(waisted.parent / r)) for r in rows[image])
    far = {"parasagittal_share": 1.0, "parasagittal_mm": (22.0, 26.0)}
    plain = synthesize(tmp_path / "plain_far", **common, **far)
    waisted = synthesize(tmp_path / "waisted_far", vertebral_waist=True, **common, **far)
    bodies = [int((_array(m.parent / r) == BODY).sum()) for m in (plain, waisted) for r in rows["seg_sag_t2"]]
    assert sum(bodies[5:]) < sum(bodies[:5])  # far lateral: the waisted bodies thin out
    with pytest.raises(ConfigError, match="vertebral_waist"):
        PhantomConfig(vertebral_waist=True)
