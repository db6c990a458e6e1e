"""Final evaluation of a trained model on one split: the result files of a run directory.

Writes ``metrics.json`` (flat float keys), ``per_case.csv`` (one row per case x view), ``reports.jsonl``
(``{case_id, generated, composed, references}``), ``confusion_matrix.csv`` (4x4 grade counts, rows = truth) and
``calibration.csv`` (reliability-diagram bins of the grade head, the bins ``ece`` uses) and ``overlay.jpg`` (image,
ground-truth and predicted labels and attention map of the first test case_id in sorted order).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lss_vlm.constants import CAUSES, GRADES, LEVELS, VIEWS, level_key
from lss_vlm.engine.batches import model_inputs
from lss_vlm.engine.validation import predict, update_metrics
from lss_vlm.io import atomic_path, atomic_write_json, atomic_write_text
from lss_vlm.metrics.classification import GradeMetrics
from lss_vlm.metrics.localisation import LevelLocalisation
from lss_vlm.metrics.segmentation import SegmentationMetrics
from lss_vlm.metrics.text import TEXT_METRICS
from lss_vlm.models.lora import parameter_report
from lss_vlm.reports.vocabulary import fill_slots, remeasure

from .config import ExperimentConfig
from .data import resolve_manifest
from .measurement import Measurer, true_probabilities
from .metric_names import EXACT_NUMBER_KEYS
from .overlay import CaseView, save_case_overlay
from .run_loading import CALIBRATION_FILE, OVERLAY_FILE, build_split_loader, load_run_config, load_trained_model

#: Text-metric keys written as NaN when text metrics are off or Java is missing (keys stay stable for leaderboards).
TEXT_METRIC_KEYS: tuple[str, ...] = TEXT_METRICS  # lss_vlm.metrics.text.score_reports keys

#: Prompt of the attention map drawn when none is chosen: the dural sac, whose narrowing is the stenosis.
DEFAULT_OVERLAY_PROMPT = "label/thecal_sac"


@dataclass
class CaseResult:
    """What the evaluation keeps of one case."""

    case_id: str
    generated: str
    references: list[str]
    true_grades: list[int]
    true_areas: list[float]
    true_causes: list[list[str] | None] = field(default_factory=list)  # per level; None = unknown (not stenotic)
    composed: str = ""
    #: the references with the numbers measured on the true masks, as the predicted ones are (measurement ceiling)
    measured_references: list[str] = field(default_factory=list)
    #: ``{level: {"area_mm2", "ap_mm"}}`` measured on the predicted and on the true masks (NaN = not measured)
    measurements: dict[str, dict[str, float]] = field(default_factory=dict)
    true_measurements: dict[str, dict[str, float]] = field(default_factory=dict)


def attention_for_prompt(model: nn.Module, out: dict[str, Any], index: int, prompt: str | None) -> tuple[Any, str]:
    """Attention maps ``[V, h, w]`` of batch item ``index`` for ``prompt`` (default: ``label/thecal_sac`` if the model
    has it, else its first prompt).

    The SPCA maps are ``{name: [B, V, P, h, w]}`` with ``P`` = the model's prompts; the first such map is used.
    """
    names = list(getattr(model, "prompt_names", []) or [])
    maps = out.get("attention") or {}
    if not maps:
        return None, prompt or ""
    if prompt is not None and prompt not in names:
        from lss_vlm.errors import ConfigError

        raise ConfigError(f"unknown prompt {prompt!r}; the model's prompts are: {', '.join(names)}")
    chosen = prompt or (DEFAULT_OVERLAY_PROMPT if DEFAULT_OVERLAY_PROMPT in names else (names[0] if names else ""))
    for name, amap in maps.items():
        if name != "grade" and amap.shape[2] == len(names) and names:
            return amap[index, :, names.index(chosen)].float().cpu().numpy(), chosen
    name, amap = next(iter(maps.items()))
    return amap[index, :, 0].float().cpu().numpy(), name


def case_view(model: nn.Module, batch: dict[str, Any], out: dict[str, Any], i: int, prompt: str | None) -> CaseView:
    """The overlay arrays of item ``i`` of a predicted batch."""
    attention, chosen = attention_for_prompt(model, out, i, prompt)
    valid = batch.get("view_valid")
    mask_valid = batch.get("mask_valid")
    has_masks = "masks" in batch and mask_valid is not None and bool(mask_valid[i].any())
    return CaseView(
        case_id=batch["case_id"][i],
        image=batch["views"][i, :, 0].float().cpu().numpy(),
        pred=out["seg_logits"][i].argmax(dim=1).cpu().numpy(),
        view_valid=(valid[i].cpu().numpy() if valid is not None else np.ones(len(VIEWS), bool)),
        attention=attention,
        prompt=chosen,
        truth=batch["masks"][i].cpu().numpy() if has_masks else None,
        mask_valid=mask_valid[i].cpu().numpy() if has_masks else None,
    )


def evaluate_model(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    cfg: ExperimentConfig,
    out_dir: str | Path,
    device: torch.device,
    timing: dict[str, float] | None = None,
    measurer: Measurer | None = None,
) -> dict[str, float]:
    """Score ``model`` on ``loader`` and write the result files into ``out_dir``; returns the metrics.

    ``measurer``: how the reports' label maps are made (:class:`benchmarks.measurement.Measurer`; default: from
    ``cfg``, its sac refiner fitted on ``cfg``'s training split).

    ``timing``: when given, wall seconds per stage are added to it (``sac_refiner`` (fitting the measurer's sac
    refiner), ``eval_inference``, ``generation``, ``composer``,
    ``text_metrics`` (JVM scorers), ``bertscore``, ``eval_outputs``); they never enter ``metrics.json``.
    """
    out_dir = Path(out_dir)
    timing = {} if timing is None else timing
    started = time.perf_counter()
    measurer = Measurer.from_config(cfg) if measurer is None else measurer
    _add_time(timing, "sac_refiner", time.perf_counter() - started)
    started_eval = time.perf_counter()
    seg = SegmentationMetrics()
    grades = GradeMetrics()
    localisation = LevelLocalisation.from_manifest(resolve_manifest(cfg.data))
    cases: list[CaseResult] = []
    overlay_case: CaseView | None = None
    generation_s = generation_cpu_s = composer_s = 0.0
    for batch, out in predict(model, loader, device, amp=cfg.train.amp):
        pred = update_metrics(seg, grades, batch, out)
        localisation.update(batch, pred)
        started, started_cpu = time.perf_counter(), time.process_time()
        generated = model.generate_reports(
            batch["views"],
            num_beams=cfg.eval.num_beams,
            max_length=cfg.eval.max_report_tokens,
            view_valid=batch.get("view_valid"),
            **model_inputs(model, batch),
        )
        generation_s += time.perf_counter() - started
        generation_cpu_s += time.process_time() - started_cpu
        started = time.perf_counter()
        grids = (out["seg_logits"].float().softmax(dim=2), true_probabilities(batch))
        for i, case_id in enumerate(batch["case_id"]):
            cases.append(_case_result(batch, grids, generated, i, measurer))
            if overlay_case is None or case_id < overlay_case.case_id:
                overlay_case = case_view(model, batch, out, i, cfg.eval.overlay_prompt)
        composer_s += time.perf_counter() - started
    metrics = {**seg.aggregate(), **grades.aggregate(), **localisation.aggregate(), **parameter_report(model)}
    _add_time(timing, "eval_inference", time.perf_counter() - started_eval - generation_s - composer_s)
    _add_time(timing, "generation", generation_s)
    _add_time(timing, "composer", composer_s)
    metrics.update(_report_metrics(cases, cfg.eval.text_metrics, timing))
    started = time.perf_counter()
    metrics = {k: float(v) for k, v in metrics.items()}
    _write_results(out_dir, metrics, seg.per_case(), grades.confusion_matrix(), cases)
    with atomic_path(out_dir / CALIBRATION_FILE) as tmp:
        pd.DataFrame(grades.reliability()).rename_axis("bin").to_csv(tmp)
    if overlay_case is not None:
        save_case_overlay(out_dir / OVERLAY_FILE, overlay_case)
    # timing is kept out of metrics.json, which must be reproducible
    atomic_write_json(
        out_dir / "report_generation.json",
        {"seconds": generation_s, "cpu_seconds": generation_cpu_s, "n_cases": len(cases)},
    )
    _add_time(timing, "eval_outputs", time.perf_counter() - started)
    return metrics


def _add_time(timing: dict[str, float], stage: str, seconds: float) -> None:
    timing[stage] = timing.get(stage, 0.0) + seconds


def _case_result(
    batch: dict[str, Any],
    probabilities: tuple[torch.Tensor, torch.Tensor],
    generated: list[str],
    i: int,
    measurer: Measurer,
) -> CaseResult:
    """Case ``i``'s reports; ``probabilities``: ``(predicted, true)`` ``[B, V, C, H, W]`` on the model's grid."""
    result = CaseResult(
        case_id=batch["case_id"][i],
        generated=generated[i],
        references=list(batch["reports"][i]),
        true_grades=[int(g) for g in batch["grades"][i].tolist()],
        true_areas=[float(a) for a in batch["areas"][i].tolist()],
        true_causes=_true_causes(batch, i),
    )
    composed = measurer.compose(batch, probabilities[0], i)
    if composed is not None:
        result.generated = fill_slots(result.generated, composed.measurements)  # numbers measured on predicted masks
        result.composed = composed.text
        truth = measurer.compose(batch, probabilities[1], i, refine=False)
        result.measured_references = [remeasure(r, truth.measurements) for r in result.references]
        result.measurements = _quoted(composed.measurements)
        result.true_measurements = _quoted(truth.measurements)
    return result


def _quoted(measurements: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """The numbers a report quotes, per level: ``{level: {"area_mm2", "ap_mm"}}``."""
    return {lv: {k: float(m.get(k, math.nan)) for k in ("area_mm2", "ap_mm")} for lv, m in measurements.items()}


def _json_numbers(measurements: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """``{level_key: {name: value rounded to 0.01, None for NaN}}`` for reports.jsonl (strict JSON has no NaN)."""
    return {
        level_key(lv): {k: round(v, 2) if math.isfinite(v) else None for k, v in m.items()}
        for lv, m in measurements.items()
    }


def _true_causes(batch: dict[str, Any], i: int) -> list[list[str] | None]:
    """Case ``i``'s causes per level from ``batch["causes"] [B, L, 3]`` (None where NaN: not stenotic or unknown)."""
    if "causes" not in batch:
        return [None] * len(LEVELS)
    rows = batch["causes"][i].tolist()
    return [None if any(math.isnan(v) for v in row) else [c for c, v in zip(CAUSES, row) if v > 0.5] for row in rows]


def _report_metrics(
    cases: list[CaseResult], text_metrics: bool, timing: dict[str, float] | None = None
) -> dict[str, float]:
    """Text metrics of generated and composed reports, grade and cause F1 read back from the text, composer area
    error.

    ``timing``: seconds of the JVM scorers (``text_metrics``) and of ``bertscore`` are added to it."""
    from lss_vlm.metrics.text import BERTSCORE_KEYS, bertscore, cause_f1_from_text, grade_f1_from_text

    with_refs = [c for c in cases if c.references]
    references = {c.case_id: c.references for c in with_refs}
    true_grades = {c.case_id: c.true_grades for c in cases}
    true_causes = {c.case_id: c.true_causes for c in cases}
    metrics: dict[str, float] = {}
    sources = {"": {c.case_id: c.generated for c in cases}}
    if any(c.composed for c in cases):
        sources["composed/"] = {c.case_id: c.composed for c in cases}
    java = shutil.which("java") is not None
    timing = {} if timing is None else timing
    started = time.perf_counter()
    ceiling = text_metrics and java and sum(len(r) >= 2 for r in references.values()) >= 2
    scored = dict(sources)  # + the generated text with the true masks' numbers: CIDEr of the text alone
    scored[TRUE_NUMBERS] = {c.case_id: remeasure(c.generated, c.true_measurements) for c in cases}
    java_scores = _java_text_metrics(references, scored, ceiling) if text_metrics and java and references else {}
    _add_time(timing, "text_metrics", time.perf_counter() - started)
    metrics[f"{TRUE_NUMBERS}cider_x100"] = java_scores.get(TRUE_NUMBERS, {}).get("cider_x100", math.nan)
    for prefix, hypotheses in sources.items():
        metrics[f"{prefix}grade_f1_from_text"] = grade_f1_from_text(hypotheses, true_grades)
        metrics[f"{prefix}cause_f1_from_text"] = cause_f1_from_text(hypotheses, true_causes)
        scores: dict[str, float] = {k: math.nan for k in TEXT_METRIC_KEYS}
        scores.update(java_scores.get(prefix, {}))
        scores.update(dict.fromkeys(BERTSCORE_KEYS, math.nan))
        started = time.perf_counter()
        if text_metrics and references:  # BERTScore needs no Java: the offline MiniLM
            scores.update(bertscore(references, {cid: hypotheses[cid] for cid in references}))
        _add_time(timing, "bertscore", time.perf_counter() - started)
        metrics.update({f"{prefix}{k}": v for k, v in scores.items()})
    # the leave-one-out ceiling needs >= 2 cases with >= 2 references
    metrics["reference/cider_x100"] = _CEILINGS.get(_references_key(references), math.nan) if ceiling else math.nan
    measured = {c.case_id: c.measured_references for c in with_refs}
    has_measured = ceiling and all(len(v) == len(references[k]) for k, v in measured.items())
    metrics["reference/measured_cider_x100"] = _measured_ceiling(references, measured) if has_measured else math.nan
    if any(c.composed for c in cases):
        from lss_vlm.reports.composer import area_errors

        composed = [c for c in cases if c.composed]
        areas = [[c.measurements.get(lv, {}).get("area_mm2", math.nan) for lv in LEVELS] for c in composed]
        errors = area_errors(areas, [c.true_areas for c in composed])
        metrics.update({k: errors[k] for k in ("area_mae_mm2", "area_bias_mm2")})
    metrics.update(_exact_number_shares([c for c in with_refs if c.composed]))
    metrics["n_cases"] = float(len(cases))
    return metrics


#: Prefix of the generated reports rewritten with the numbers measured on the true masks (:func:`remeasure`): its
#: ``cider_x100`` scores the text alone, as if the segmentation were exact on the model's grid.
TRUE_NUMBERS = "true_numbers/"


def _exact_number_shares(cases: list[CaseResult]) -> dict[str, float]:
    """``area_exact`` / ``ap_exact``: share of the numbers the cases' first references quote that the predicted masks'
    measurements reproduce to the printed digit (:func:`lss_vlm.reports.vocabulary.exact_numbers`);
    ``true_numbers/...``: the same for the true masks' (the grid's limit). NaN without a measured case."""
    from lss_vlm.reports.vocabulary import exact_numbers

    totals = {key: [0, 0] for key in EXACT_NUMBER_KEYS}  # "{prefix}{slot kind}_exact"
    for case in cases:
        for prefix, measured in (("", case.measurements), (TRUE_NUMBERS, case.true_measurements)):
            for kind, (exact, quoted) in exact_numbers(case.references[0], measured).items():
                totals[f"{prefix}{kind}_exact"][0] += exact
                totals[f"{prefix}{kind}_exact"][1] += quoted
    return {key: exact / quoted if quoted else math.nan for key, (exact, quoted) in totals.items()}


#: Reference ceilings already computed in this process, by a hash of the references: every run of a suite scores the
#: same split, so the ceiling (its references' tokens and a CIDEr pass) is computed once per process, not once per run.
_CEILINGS: dict[str, float] = {}


def _references_key(references: dict[str, list[str]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(references, sort_keys=True).encode()).hexdigest()


def _measured_ceiling(references: dict[str, list[str]], measured: dict[str, list[str]]) -> float:
    """CIDEr×100 of the measurement ceiling, once per process per distinct (references, measured references): the
    leave-one-out ceiling with each held-out reference's numbers measured on the true masks (:func:`remeasure`),
    the score of a model whose text is right and whose masks equal the truth on the model's grid."""
    from lss_vlm.metrics.text import reference_ceiling

    key = _references_key({"references": references, "measured": measured})
    if key not in _CEILINGS:
        _CEILINGS[key] = float(reference_ceiling(references, held_out=measured)["cider_x100"])
    return _CEILINGS[key]


def _java_text_metrics(
    references: dict[str, list[str]], sources: dict[str, dict[str, str]], ceiling: bool
) -> dict[str, dict[str, float]]:
    """BLEU/METEOR/ROUGE-L/CIDEr of every report set (``{prefix: {case: text}}``) in one tokenizer and one METEOR JVM
    (:func:`lss_vlm.metrics.text.score_report_sets`); with ``ceiling``, the reference ceiling too, once per process
    per distinct ``references`` (stored in :data:`_CEILINGS`)."""
    from lss_vlm.metrics.text import score_report_sets

    key = _references_key(references)
    sets = {prefix: {cid: hypotheses[cid] for cid in references} for prefix, hypotheses in sources.items()}
    scores, reference = score_report_sets(references, sets, ceiling=ceiling and key not in _CEILINGS)
    if reference is not None:
        _CEILINGS[key] = float(reference["cider_x100"])
    return scores


def _write_results(
    out_dir: Path,
    metrics: dict[str, float],
    per_case: pd.DataFrame,
    confusion: np.ndarray,
    cases: list[CaseResult],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "per_case.csv") as tmp:
        per_case.to_csv(tmp, index=False)
    table = pd.DataFrame(np.asarray(confusion, dtype=int), index=list(GRADES), columns=list(GRADES))
    table.index.name = "truth\\pred"
    with atomic_path(out_dir / "confusion_matrix.csv") as tmp:
        table.to_csv(tmp)
    lines = [
        json.dumps(
            {
                "case_id": c.case_id,
                "generated": c.generated,
                "composed": c.composed,
                "references": c.references,
                "true_grades": {level_key(lv): g for lv, g in zip(LEVELS, c.true_grades)},
                "measurements": _json_numbers(c.measurements),
                "true_measurements": _json_numbers(c.true_measurements),
            },
            ensure_ascii=False,
        )
        for c in sorted(cases, key=lambda c: c.case_id)
    ]
    atomic_write_text(out_dir / "reports.jsonl", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "metrics.json", metrics)


@dataclass
class InspectedCase:
    """One case run through a trained model (``lss-bench report``)."""

    split: str
    view: CaseView
    generated: str
    composed: str
    references: list[str]
    true_grades: list[int]


def inspect_case(
    run_dir: str | Path, case_id: str, prompt: str | None = None, instruction: str | None = None
) -> InspectedCase:
    """Run the trained model of ``run_dir`` on ``case_id`` (any split); the reports plus the overlay arrays.

    ``instruction``: a clinician's sentence applied by the model's FiLM layer (:mod:`benchmarks.intervention`);
    :class:`ConfigError` when the run was trained without one."""
    from lss_vlm.data.manifest import read_manifest
    from lss_vlm.errors import ConfigError

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    manifest = resolve_manifest(cfg.data)
    table = read_manifest(manifest)
    rows = table[table["case_id"] == case_id]
    if rows.empty:
        examples = ", ".join(sorted(table["case_id"])[:5])
        raise ConfigError(f"--case {case_id!r} is not in {manifest} (e.g. {examples})")
    split = str(rows.iloc[0]["split"])
    model, device = load_trained_model(run_dir, cfg)
    if prompt is not None and prompt not in model.prompt_names:
        raise ConfigError(f"--prompt {prompt!r} is unknown; the model's prompts are: {', '.join(model.prompt_names)}")
    if instruction is not None:
        from .intervention import require_film

        require_film(model, run_dir)
        model.set_instruction(instruction)
    loader = build_split_loader(cfg, split, clinical_columns=getattr(model, "clinical_columns", None))
    for batch, out in predict(model, loader, device):
        if case_id not in batch["case_id"]:
            continue
        i = batch["case_id"].index(case_id)
        one = {k: (v[i : i + 1] if isinstance(v, torch.Tensor) else v[i : i + 1]) for k, v in batch.items()}
        generated = model.generate_reports(
            one["views"],
            num_beams=cfg.eval.num_beams,
            max_length=cfg.eval.max_report_tokens,
            view_valid=one.get("view_valid"),
            **model_inputs(model, one),
        )
        composed = Measurer.from_config(cfg).compose(batch, out["seg_logits"].float().softmax(dim=2), i)
        return InspectedCase(
            split=split,
            view=case_view(model, batch, out, i, prompt),
            generated=fill_slots(generated[0], composed.measurements) if composed is not None else generated[0],
            composed=composed.text if composed is not None else "",
            references=list(batch["reports"][i]),
            true_grades=[int(g) for g in batch["grades"][i].tolist()],
        )
    raise ConfigError(f"--case {case_id!r} was not yielded by the {split} loader of {manifest}")
