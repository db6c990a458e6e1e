"""Case generation and :func:`synthesize`: sample a case, draw its views, write NIfTI files and the manifest."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ...constants import AXIAL_VIEWS, CAUSES, FINDINGS_COLUMN, LEVELS, grade_from_area, level_key
from ...errors import ConfigError
from ...io import atomic_write_json, remove_stale_staging
from ...reports.composer import measure_level
from ...reports.writer import write_reports
from ..manifest import write_manifest
from .acquisition import acquire
from .anatomy import (
    THETA,
    CanalGeometry,
    LevelAnatomy,
    MidlineLevel,
    SpineAnatomy,
    Tissue,
    design_canal,
    render_axial,
    render_sagittal,
    sample_outline,
)
from .cohort import Study, clinical_values, phantom_splits, plan_studies, sample_grades
from .config import PhantomConfig, resolve_config
from .ligaments import paint_ligaments, sample_ligaments
from .prevertebral import paint_prevertebral, sample_prevertebral
from .randomisation import RandomisationRanges, elastic_deform, randomised_acquire

PHANTOM_VERSION = 2  # 2: reference reports are equal-length paraphrases quoting area and AP diameter
MIN_CASES = 5  # enough patients for a non-empty train, val and test split
_ANTERIOR, _POSTERIOR = int(np.argmin(np.abs(THETA))), 0  # THETA indices of θ = 0 and θ = -π


def _spine_anatomy(rng: np.random.Generator, degenerated: np.ndarray) -> SpineAnatomy:
    heights = np.array([24.0, 25.0, 26.0, 27.0, 27.5, 26.5, 40.0]) * rng.uniform(0.92, 1.08)
    discs = np.array([8.0, 9.0, 10.0, 11.0, 11.5, 10.5]) * rng.uniform(0.88, 1.1)
    discs[1:] *= 1.0 - 0.3 * degenerated
    return SpineAnatomy(
        lordosis_radius=float(rng.uniform(200, 320)),
        body_heights=tuple(heights),
        disc_heights=tuple(discs),
        body_depth=float(rng.uniform(32, 38)),
        sac_depth=float(rng.uniform(12.5, 15.5)),
        anterior_gap=float(rng.uniform(0.8, 1.6)),
        spinous_length=float(rng.uniform(22, 30)),
        fat_thickness=float(rng.uniform(8, 30)),
        conus_level=float(rng.uniform(0.1, 1.3)),
    )


def _level_anatomy(level: int, patient: dict[str, float], rng: np.random.Generator, cfg: PhantomConfig):
    causes = rng.dirichlet((1.2, 1.2, 1.2))
    return LevelAnatomy(
        canal_width=patient["canal_width"] + 0.6 * level,
        canal_depth=patient["canal_depth"] - 0.3 * level,
        trefoil=0.05 + 0.03 * level + rng.uniform(0, 0.04),
        lf_base=float(rng.uniform(*cfg.lf_thickness_mm)),
        lf_asymmetry=float(rng.uniform(-0.12, 0.12)),
        causes=(float(causes[0]), float(causes[1]), float(causes[2])),
        disc_width=patient["disc_width"] + 1.5 * level,
        disc_depth=patient["disc_depth"] + 0.4 * level,
        facet_radius=float(rng.uniform(4.8, 6.2)),
        facet_angle=float(2.05 + rng.uniform(-0.12, 0.12)),
        lamina_thickness=float(rng.uniform(4.5, 6.0)),
        spinous_length=patient["spinous_length"],
        obliquity=float(rng.uniform(0.08, 0.3)) if rng.random() < 0.6 else 0.0,
    )


def _grid(size: int, spacing: tuple[float, float], rotation: float, centre: tuple[float, float]):
    """Pixel-centre coordinates (mm) of an image, rotated and shifted: ``(u, w)`` along (columns, rows)."""
    offs = (np.arange(size) - (size - 1) / 2.0)[:, None]
    rows = np.broadcast_to(offs * spacing[0], (size, size))
    cols = np.broadcast_to(offs.T * spacing[1], (size, size))
    c, s = np.cos(rotation), np.sin(rotation)
    return c * cols - s * rows + centre[0], s * cols + c * rows + centre[1]


def _spacing(rng: np.random.Generator, fov: tuple[float, float], cfg: PhantomConfig) -> tuple[float, float]:
    base = rng.uniform(*fov) / cfg.size
    ratio = rng.uniform(*cfg.anisotropy)
    return float(base / np.sqrt(ratio)), float(base * np.sqrt(ratio))


def _affine(spacing: tuple[float, float], thickness: float, row_dir, col_dir, slice_dir) -> np.ndarray:
    """Voxel → world (RAS, mm) direction/spacing part of a slice's affine (the translation is set on saving)."""
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(row_dir, float) * spacing[0]
    affine[:3, 1] = np.asarray(col_dir, float) * spacing[1]
    affine[:3, 2] = np.asarray(slice_dir, float) * thickness
    return affine


def _save(path: Path, array: np.ndarray, affine: np.ndarray, size: int) -> None:
    affine = affine.copy()
    half = (size - 1) / 2.0
    affine[:3, 3] = affine[:3, 3] - affine[:3, 0] * half - affine[:3, 1] * half
    image = nib.Nifti1Image(array[:, :, None], affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    # one gzip call: fast and deterministic (no file name, mtime 0). No per-file atomic rename is needed: cases
    # are written into a staging folder that is moved into place only when complete.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _midline(geom: CanalGeometry, area: float, degenerated: bool) -> MidlineLevel:
    """Midline distances of an axial level (disc margin → sac → ligamentum flavum) for the sagittal slice.

    The sac is ``r ≤ τ · R_free(θ)`` with ``τ = √(area / free area)``."""
    free_area = 0.5 * float(np.sum(geom.r_free**2)) * (THETA[1] - THETA[0])
    tau = np.sqrt(min(area / free_area, 1.0))
    rf0, rfp, gap = geom.r_free[_ANTERIOR], geom.r_free[_POSTERIOR], geom.gap
    return MidlineLevel(
        bulge=float(geom.bulge[_ANTERIOR]),
        disc_to_sac=float(rf0 + gap - tau * rf0),
        sac_ap=float(tau * (rf0 + rfp)),
        sac_to_lf=float(rfp + gap - tau * rfp),
        lf_thickness=float(max(geom.r_bony[_POSTERIOR] - rfp - gap, 0.0)),
        degenerated=degenerated,
    )


def _write_sagittal(
    case_dir: Path,
    spine,
    midline,
    rng,
    gain,
    noise: float,
    cfg: PhantomConfig,
    extra_rng: np.random.Generator,
    texture_rng: np.random.Generator,
) -> tuple[float, float]:
    """Draw the sagittal slice, write ``sag_t1``, ``sag_t2`` and their shared mask; return the pixel spacing.
    ``extra_rng`` draws the options added later (parasagittal slice, prevertebral structures), so that turning them
    on leaves every other draw as it was."""
    spacing = _spacing(rng, cfg.sagittal_fov_mm, cfg)
    rotation = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    centre = (-4.0 + rng.uniform(-cfg.shift_mm, cfg.shift_mm), 5.0 + rng.uniform(-cfg.shift_mm, cfg.shift_mm))
    u, w = _grid(cfg.size, spacing, rotation, centre)
    lateral = 0.0
    if cfg.parasagittal_share > 0 and extra_rng.random() < cfg.parasagittal_share:
        lateral = float(extra_rng.choice([-1.0, 1.0]) * extra_rng.uniform(*cfg.parasagittal_mm))
    prevertebral = sample_prevertebral(extra_rng, spine) if cfg.prevertebral else None
    ligaments = sample_ligaments(extra_rng) if cfg.spinal_ligaments else None
    outline = sample_outline(extra_rng) if cfg.vertebral_waist else None  # drawn last: the others keep their draws
    labels, tissue = render_sagittal(-w, -u, spine, midline, lateral, outline)  # rows inferior, columns posterior
    if ligaments is not None:  # before the prevertebral structures, which fill the soft tissue left free
        paint_ligaments(tissue, labels, -w, -u, spine, ligaments, lateral)
    if prevertebral is not None:
        paint_prevertebral(tissue, labels, -w, -u, spine, prevertebral, lateral)
    thickness = float(rng.uniform(*cfg.slice_thickness_mm))
    blur = cfg.blur_px * np.sqrt(thickness / 3.5)
    affine = _affine(spacing, thickness, (0, 0, -1), (0, -1, 0), (1, 0, 0))
    if cfg.domain_randomisation:
        tissue, labels = elastic_deform((tissue, labels), rng, 3.0 / min(spacing))
    for view, weighting in (("sag_t1", "t1"), ("sag_t2", "t2")):
        if cfg.domain_randomisation:
            image = randomised_acquire(tissue, rng, RandomisationRanges(texture_sd=cfg.texture_sd), texture_rng)
        else:
            image = acquire(tissue, weighting, rng, gain, noise, cfg.bias_field, (blur, blur))
        _save(case_dir / f"{view}.nii.gz", image, affine, cfg.size)
    _save(case_dir / "sag_seg.nii.gz", labels, affine, cfg.size)
    return spacing


def make_case(study: Study, seed: int, cfg: PhantomConfig, root: Path) -> dict[str, Any]:
    """Generate one case: views and masks written under ``root/cases/<case_id>/``; returns its manifest row."""
    prng = np.random.default_rng([seed, 1, study.patient_index])  # anatomy shared by a patient's studies
    rng = np.random.default_rng([seed, 2, study.index])
    texture_rng = np.random.default_rng([seed, 4, study.index])  # own stream: texture leaves the anatomy alone
    size = cfg.size
    latent = prng.standard_normal() + 0.4 * study.visit
    grades_target = sample_grades(latent, rng, cfg)
    patient = {
        "canal_width": prng.uniform(21.0, 25.5),
        "canal_depth": prng.uniform(15.0, 18.5),
        "disc_width": prng.uniform(42.0, 49.0),
        "disc_depth": prng.uniform(31.0, 36.0),
        "spinous_length": prng.uniform(22.0, 30.0),
    }
    gain = 1.0 + rng.normal(0.0, cfg.contrast_jitter, len(Tissue))
    noise = float(rng.uniform(*cfg.noise_sigma))
    case_dir = root / "cases" / study.case_id
    row: dict[str, Any] = {"case_id": study.case_id, "patient_id": study.patient_id, "dataset": "phantom"}
    areas, grades, midline, findings, ap_diameters = [], [], [], {}, []
    ax_spacing = _spacing(rng, cfg.axial_fov_mm, cfg)
    thickness = float(rng.uniform(*cfg.slice_thickness_mm))
    blur = cfg.blur_px * np.sqrt(thickness / 3.5)
    for li, (level, view) in enumerate(zip(LEVELS, AXIAL_VIEWS)):
        anatomy = _level_anatomy(li, patient, rng, cfg)
        target = float(rng.uniform(*cfg.area_range(int(grades_target[li]))))
        pixel_area = ax_spacing[0] * ax_spacing[1]
        pixels = max(1, round(target / pixel_area))
        geom = design_canal(anatomy, target / rng.uniform(*cfg.sac_fill), cfg.epidural_gap_mm, cfg)
        area = pixels * pixel_area
        grade = grade_from_area(area)
        degenerated = bool(grade >= 2 or (grade == 1 and anatomy.causes[0] > 0.4) or rng.random() < 0.1)
        rotation = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
        centre = (rng.uniform(-cfg.shift_mm, cfg.shift_mm), -6.0 + rng.uniform(-cfg.shift_mm, cfg.shift_mm))
        x, y = _grid(size, ax_spacing, rotation, centre)
        labels, tissue = render_axial(x, y, geom, anatomy, pixels, degenerated)
        if cfg.domain_randomisation:  # no deformation: it would change the sac area that sets the grade
            image = randomised_acquire(tissue, rng, RandomisationRanges(texture_sd=cfg.texture_sd), texture_rng)
        else:
            image = acquire(tissue, cfg.axial_weighting, rng, gain, noise, cfg.bias_field, (blur, blur))
        # rows run posterior, columns to the patient's left, slices superior (radiological display)
        affine = _affine(ax_spacing, thickness, (0, -1, 0), (-1, 0, 0), (0, 0, 1))
        affine[:3, 3] = (0.0, 0.0, -35.0 * (li - 2))
        _save(case_dir / f"{view}.nii.gz", image, affine, size)
        _save(case_dir / f"{view}_seg.nii.gz", labels, affine, size)
        row[f"img_{view}"] = f"cases/{study.case_id}/{view}.nii.gz"
        row[f"seg_{view}"] = f"cases/{study.case_id}/{view}_seg.nii.gz"
        midline.append(_midline(geom, area, degenerated))
        areas.append(area)
        grades.append(grade)
        ap_diameters.append(measure_level(labels, ax_spacing).ap_mm)  # as the composer measures a predicted mask
        if grade > 0:
            order = np.argsort(anatomy.causes)[::-1]
            findings[level] = [CAUSES[k] for k in order if anatomy.causes[k] >= 0.25]

    spine = _spine_anatomy(prng, np.array([m.degenerated for m in midline], float))
    extra_rng = np.random.default_rng([seed, 3, study.index])
    sag_spacing = _write_sagittal(case_dir, spine, midline, rng, gain, noise, cfg, extra_rng, texture_rng)
    for view in ("sag_t1", "sag_t2"):
        row[f"img_{view}"] = f"cases/{study.case_id}/{view}.nii.gz"
        row[f"seg_{view}"] = f"cases/{study.case_id}/sag_seg.nii.gz"

    for level, grade, area in zip(LEVELS, grades, areas):
        row[f"grade_{level_key(level)}"] = grade
        row[f"area_{level_key(level)}"] = round(area, 4)
    reports = write_reports(grades, areas, rng, n=cfg.reports_per_case, findings=findings, ap_diameters=ap_diameters)
    row["reports"] = json.dumps(reports)
    row.update(clinical_values(np.asarray(grades), prng, rng, study.visit))
    row["meta_visit"] = study.visit
    row["meta_axial_spacing_mm"] = f"{ax_spacing[0]:.4f}x{ax_spacing[1]:.4f}"
    row["meta_sagittal_spacing_mm"] = f"{sag_spacing[0]:.4f}x{sag_spacing[1]:.4f}"
    row[FINDINGS_COLUMN] = json.dumps(findings, sort_keys=True)
    return row


def _fingerprint(n_cases: int, seed: int, shift: str | None, cfg: PhantomConfig) -> str:
    spec = {"version": PHANTOM_VERSION, "n_cases": n_cases, "seed": seed, "shift": shift}
    spec["config"] = cfg.fingerprint_dict()
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()


def _is_complete(out: Path, fingerprint: str) -> bool:
    info, manifest = out / "phantom.json", out / "manifest.csv"
    if not (info.is_file() and manifest.is_file()):
        return False
    try:
        if json.loads(info.read_text()).get("fingerprint") != fingerprint:
            return False
        df = pd.read_csv(manifest, dtype=str)
    except (OSError, ValueError):
        return False
    cells = df[[c for c in df.columns if c.startswith(("img_", "seg_"))]].stack().unique()
    return all((out / c).is_file() for c in cells)


def synthesize(
    out_dir: str | os.PathLike[str],
    n_cases: int = 200,
    size: int = 128,
    seed: int = 0,
    shift: str | None = None,
    *,
    workers: int = 1,
    montage: bool | str | os.PathLike[str] = False,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = True,
    **options: Any,
) -> Path:
    """Generate the multi-view LSS phantom into ``out_dir`` and return the path of its ``manifest.csv``.

    Args:
        out_dir: output folder (created). Holds ``manifest.csv``, ``phantom.json`` (options + fingerprint) and
            ``cases/<case_id>/<view>.nii.gz`` / ``<view>_seg.nii.gz``.
        n_cases: number of studies (≥ 5); cohorts of ≥ 20 include follow-up studies of some patients.
        size: image side in pixels (every view is ``size × size``).
        seed: everything (anatomy, grades, noise, reports, splits) is a deterministic function of the seed.
        shift: name of an acquisition-shift preset (:data:`SHIFT_PRESETS`) or ``None``.
        workers: processes used to draw cases (the output does not depend on it).
        montage: also save a PNG montage (``True`` → ``out_dir/montage.png``, or a path).
        progress: called with ``1`` after each case (for progress bars).
        overwrite: replace what a non-empty ``out_dir`` holds (another phantom or anything else); ``False`` refuses
            a non-empty folder with a :class:`ConfigError` unless it already holds this very phantom.
        **options: any :class:`PhantomConfig` field, e.g. ``prevalence=(0.4, 0.3, 0.2, 0.1)``.

    Re-running into a complete folder with the same arguments returns at once; different arguments regenerate it.
    Files are written to a staging folder and moved into place, so an interrupted run leaves no half-written data.
    """
    if int(n_cases) < MIN_CASES:
        raise ConfigError(f"n_cases must be at least {MIN_CASES} (train/val/test need patients), got {n_cases}")
    if int(workers) < 1:
        raise ConfigError(f"workers must be ≥ 1, got {workers}")
    cfg = resolve_config(shift, size=int(size), **options)
    out = Path(out_dir)
    fingerprint = _fingerprint(int(n_cases), int(seed), shift, cfg)
    manifest_path = out / "manifest.csv"
    if not _is_complete(out, fingerprint):
        if not overwrite:
            _refuse_non_empty(out)
        _generate(out, int(n_cases), int(seed), shift, cfg, int(workers), fingerprint, progress)
    elif progress is not None:
        progress(int(n_cases))
    if montage:
        from .montage import save_montage

        save_montage(manifest_path, out / "montage.png" if montage is True else Path(montage))
    return manifest_path


#: Staging and replaced-data folders of :func:`_generate`; the PID tells whether their process is still running.
STAGING_PATTERN = r"\.(?:staging|old)-(?P<pid>\d+)"


def _refuse_non_empty(out: Path) -> None:
    """:class:`ConfigError` when ``out`` exists and holds anything but stale staging folders of killed processes."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose a folder for --out")
    remove_stale_staging(out, STAGING_PATTERN)
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"{out}: output folder is not empty (holds {shown}); choose another --out or pass --overwrite to replace it"
        )


def _generate(out, n_cases, seed, shift, cfg, workers, fingerprint, progress) -> None:
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    studies = plan_studies(n_cases, seed, cfg)
    try:
        rows = []
        if workers == 1:
            for study in studies:
                rows.append(make_case(study, seed, cfg, staging))
                if progress is not None:
                    progress(1)
        else:
            # "spawn": forking a process that already runs torch/OpenMP thread pools can abort at exit
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(make_case, s, seed, cfg, staging) for s in studies]
                for future in futures:
                    rows.append(future.result())
                    if progress is not None:
                        progress(1)
        df = pd.DataFrame(rows)
        worst = df[[f"grade_{level_key(lv)}" for lv in LEVELS]].max(axis=1).tolist()
        splits = phantom_splits(df["patient_id"].tolist(), worst, seed, cfg)
        df.insert(2, "split", df["patient_id"].map(splits))
        write_manifest(df, staging / "manifest.csv")
        # swap in: drop the old manifest first, so an interruption never leaves a manifest over the wrong files
        (out / "manifest.csv").unlink(missing_ok=True)
        (out / "phantom.json").unlink(missing_ok=True)
        old = out / f".old-{os.getpid()}"
        if (out / "cases").exists():
            os.replace(out / "cases", old)
        os.replace(staging / "cases", out / "cases")
        os.replace(staging / "manifest.csv", out / "manifest.csv")
        info = {"fingerprint": fingerprint, "n_cases": n_cases, "seed": seed, "shift": shift, "config": cfg.to_dict()}
        atomic_write_json(out / "phantom.json", info)
        shutil.rmtree(old, ignore_errors=True)
        remove_stale_staging(out, STAGING_PATTERN)  # what killed earlier runs left behind
    finally:
        shutil.rmtree(staging, ignore_errors=True)
