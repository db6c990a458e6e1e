"""``lss-bench prepare``: convert a real dataset (nifti, rsna2024, spider, mendeley) into views + a manifest."""

from __future__ import annotations

import argparse

from benchmarks.commands import bounded_number, seed_int

HELP = "convert a real dataset (nifti, images, rsna2024, spider, mendeley) into views + manifest.csv"

DESCRIPTION = """\
Convert a real dataset into 2D NIfTI views (sagittal T1/T2 + one axial T2 per disc level) and the manifest.csv
every other command reads (same schema as the phantom). Writes OUT/manifest.csv, OUT/cases/<case>/<view>.nii.gz and
OUT/prepare_summary.json (what was found, what was skipped and why, what can be scored). All or nothing: the output
appears only when the whole dataset converted. See docs/datasets.md for layouts, licences and mappings.

datasets:
  nifti     your own images: --root is a manifest CSV (or a folder with manifest.csv) whose img_<view>/seg_<view>
            cells point to 2D/3D NIfTI, .mha or DICOM in any orientation/spacing; 3D images are cut through the
            middle of the view's plane. Optional grade_*, area_*, reports, clinical columns. --labels maps your
            mask values to ours, e.g. --labels 'disc=2,canal=3,vertebra=1'.
  images    2D slices in display orientation: --root DIR with images/<case>.png|.npy|.nii(.gz) and
            masks/<case>.<ext> (optional cases.csv: case_id, patient_id, dataset, labelled_classes). Rows run
            superior->inferior, columns anterior->posterior (sagittal) or patient right->left (axial); the affine is
            written from --view and --pixel-spacing. Bad input (shape mismatch, unmapped mask value, 3D file, bad
            spacing, unknown class) stops with one error line.
  rsna2024  RSNA 2024 Lumbar Spine Degenerative Classification (Kaggle): train.csv, train_label_coordinates.csv,
            train_series_descriptions.csv, train_images/<study>/<series>/<instance>.dcm. Grades from
            spinal_canal_stenosis_* (Normal/Mild->0, Moderate->2, Severe->3), reports from the grades, level points
            for localisation (several raters' points of a level merged within --merge-radius-mm). No masks:
            segmentation is not scored.
  spider    SPIDER lumbar MRI (Zenodo, CC-BY 4.0): images/<id>_t1.mha, images/<id>_t2.mha, masks/..., optional
            radiological_gradings.csv. Masks -> vertebral_body / disc / thecal_sac; axial views are resliced
            through each disc. No stenosis grades: grade metrics are not scored.
  mendeley  Lumbar Spine MRI Dataset (Mendeley Data): axial T2 slices of L3-L4, L4-L5, L5-S1 with label images
            (disc, posterior element, thecal sac, area between anterior and posterior elements). No sagittal
            views, no grades.
"""
EXAMPLES = """\
examples:
  lss-bench prepare rsna2024 --root ~/data/rsna-2024-lumbar-spine --out data/rsna
  lss-bench prepare rsna2024 --root ~/data/rsna-2024-lumbar-spine --out data/rsna5 --merge-radius-mm 5
  lss-bench prepare spider --root ~/data/spider --out data/spider --seed 1
  lss-bench prepare nifti --root ~/data/mine/manifest.csv --out data/mine --labels 'disc=2,canal=3'
  lss-bench prepare images --root ~/data/vertebrae --out data/vert --view sag_t2 --pixel-spacing 1.2 \
      --labels 'disc=1,vertebra=2' --labelled-classes disc,vertebral_body --absent-means-unlabelled
"""

LABELS_HELP = (
    "map source mask values to our labels: 'NAME=VALUE[,NAME=LOW-HIGH...]' with NAME one of background, "
    "vertebral_body, disc, thecal_sac, posterior_elements, ligamentum_flavum (aliases: vertebra, ivd, canal, pe, lf); "
    "ignore=V marks not-annotated pixels; unlisted values become background (nifti, spider, mendeley) or are an "
    "error (images)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        choices=["nifti", "images", "rsna2024", "spider", "mendeley"],
        help="nifti | images | rsna2024 | spider | mendeley (see above)",
    )
    parser.add_argument("--root", required=True, metavar="DIR", help="the dataset as downloaded (nifti: a CSV or DIR)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    parser.add_argument("--labels", metavar="MAP", default=None, help=LABELS_HELP)
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the patient-level splits and report phrasing")
    parser.add_argument("--val-frac", type=float, default=0.15, help="fraction of patients in val (default 0.15)")
    parser.add_argument("--test-frac", type=float, default=0.15, help="fraction of patients in test (default 0.15)")
    parser.add_argument(
        "--normal-mild-grade",
        type=int,
        choices=[0, 1],
        default=None,
        help="rsna2024 only: our grade for RSNA's merged Normal/Mild class (default 0 = normal)",
    )
    parser.add_argument(
        "--merge-radius-mm",
        type=bounded_number(float, 0.0, "a finite number of mm >= 0"),
        default=None,
        metavar="MM",
        help="rsna2024 only: several raters' spinal-canal points of one level closer than MM (chains included) "
        "become their mean; when they form several groups the largest is kept and the others are dropped and "
        "listed as skipped (default 10; 0 = only identical points merge)",
    )
    parser.add_argument(
        "--pixel-spacing",
        default=None,
        metavar="MM",
        help="images (required; MM or ROW_MM,COL_MM) and mendeley (default 0.6875): pixel size of files that carry "
        "no geometry",
    )
    parser.add_argument("--view", default=None, help="images only: the view the slices are (default sag_t2)")
    parser.add_argument(
        "--labelled-classes",
        default=None,
        metavar="NAMES",
        help="images only: classes the masks annotate, e.g. disc,vertebral_body (default: all); the others are "
        "merged with background by the loss and not scored",
    )
    parser.add_argument(
        "--ignore-label",
        type=int,
        default=None,
        metavar="V",
        help="mask value of not-annotated pixels (default 255): no loss gradient, never scored",
    )
    parser.add_argument(
        "--absent-means-unlabelled",
        action="store_true",
        help="images only: a listed class with no pixel in a case's mask is not annotated in that case",
    )
    parser.add_argument("--dataset-name", default=None, help="images only: the manifest's dataset column")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lss_vlm.data.adapters import SUMMARY_NAME, format_summary, prepare_dataset
    from lss_vlm.errors import ConfigError

    options = {}
    if args.labels is not None:
        if args.dataset == "rsna2024":
            raise ConfigError("--labels does not apply to rsna2024 (it has no masks)")
        options["labels"] = args.labels
    if args.normal_mild_grade is not None:
        if args.dataset != "rsna2024":
            raise ConfigError("--normal-mild-grade applies to rsna2024 only")
        options["normal_mild_grade"] = args.normal_mild_grade
    if args.merge_radius_mm is not None:
        if args.dataset != "rsna2024":
            raise ConfigError("--merge-radius-mm applies to rsna2024 only (the other datasets carry no rater points)")
        options["merge_radius_mm"] = args.merge_radius_mm
    if args.pixel_spacing is not None:
        if args.dataset not in ("mendeley", "images"):
            raise ConfigError("--pixel-spacing applies to images and mendeley only (the others carry their geometry)")
        options["pixel_spacing"] = args.pixel_spacing
        if args.dataset == "mendeley":
            from lss_vlm.data.adapters.images import parse_pixel_spacing

            row_mm, col_mm = parse_pixel_spacing(args.pixel_spacing)
            if row_mm != col_mm:
                raise ConfigError(f"--pixel-spacing {args.pixel_spacing!r}: mendeley takes one square pixel size")
            options["pixel_spacing"] = row_mm
    images_only = {
        "view": args.view,
        "labelled_classes": args.labelled_classes,
        "absent_means_unlabelled": args.absent_means_unlabelled or None,
        "dataset_name": args.dataset_name,
    }
    for key, value in images_only.items():
        if value is not None:
            if args.dataset != "images":
                raise ConfigError(f"--{key.replace('_', '-')} applies to images only")
            options[key] = value
    if args.ignore_label is not None:
        if args.dataset != "images":
            raise ConfigError("--ignore-label applies to images only (use ignore=V in --labels for the others)")
        options["ignore_label"] = args.ignore_label
    result = prepare_dataset(
        args.dataset,
        args.root,
        args.out,
        seed=args.seed,
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        **options,
    )
    print(format_summary(result.summary))
    print(f"manifest: {result.manifest}")
    print(f"summary:  {result.manifest.parent / SUMMARY_NAME}")
    return 0
