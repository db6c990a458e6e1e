"""Optional LLM refinement of reports: a causal language model rewrites the crude report from the structured findings.

Several report-generation systems feed a crude report (CliniQure: R2GenCMN output) and the structured findings
(grades, areas, causes) to a language model, fine-tuned with LoRA on the training references (CliniQure: OPT). Here:

* :func:`build_prompt` writes the structured prompt (:data:`PROMPT_TEMPLATE`): one findings line per level
  (``L4-L5: moderate; dural sac area 62 mm2; causes: disc bulge``), then the draft, then ``Refined report:``;
* :class:`ReportRefiner` loads **any Hugging Face causal LM from a local folder** (``AutoModelForCausalLM`` /
  ``AutoTokenizer`` with ``local_files_only=True``: nothing is downloaded), optionally adds LoRA adapters (``peft``) and
  fine-tunes them on ``(prompt, reference)`` pairs (:meth:`ReportRefiner.fine_tune`: token cross-entropy on the
  reference tokens only), and rewrites drafts by greedy decoding (:meth:`ReportRefiner.refine`);
* :func:`training_examples` makes those pairs from a manifest's training split: the true findings (``grade_*``,
  ``area_*``, ``meta_findings`` causes), one reference as the draft and the next reference of the same case as the
  target (the LM learns to state the findings in the references' style);
* :func:`refine_run_reports` rewrites a run's ``reports.jsonl`` (draft = the generated report, findings = the grades
  and areas the report composer measured on the predicted masks, read back from the ``composed`` text) into
  ``refined.jsonl``, and :func:`score_refined` scores the drafts and the refined reports with the run's text metrics
  (``draft/<metric>``, ``refined/<metric>``, ``delta/<metric>`` = refined - draft), so a user sees whether refinement
  helps or hallucinates (``refined/grade_f1_from_text`` falls below the draft's when the LM changes a grade).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..constants import GRADES, LEVELS, MISSING_GRADE
from ..errors import ConfigError, DataError
from ..io import atomic_write_text

PROMPT_TEMPLATE = "Findings:\n{findings}\nDraft report: {draft}\nRefined report:"
#: Causal-LM attention projections adapted by LoRA when peft knows no default for the architecture.
FALLBACK_LORA_TARGETS = ("q_proj", "v_proj", "c_attn", "query_key_value")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class LevelFindings:
    """Structured findings of one level: ``grade`` (index into :data:`GRADES`, -1 unknown), ``area_mm2`` (NaN
    unknown) and the contributing ``causes`` (e.g. ``disc_bulge``)."""

    grade: int = MISSING_GRADE
    area_mm2: float = math.nan
    causes: tuple[str, ...] = ()

    def line(self, level: str) -> str:
        parts = [GRADES[self.grade] if 0 <= self.grade < len(GRADES) else "not graded"]
        if math.isfinite(self.area_mm2):
            parts.append(f"dural sac area {self.area_mm2:.0f} mm2")
        if self.causes:
            parts.append("causes: " + ", ".join(c.replace("_", " ") for c in self.causes))
        return f"{level}: " + "; ".join(parts)


def build_prompt(draft: str, findings: Mapping[str, LevelFindings]) -> str:
    """The structured prompt: one :meth:`LevelFindings.line` per level (in :data:`LEVELS` order), then the draft."""
    lines = [findings[level].line(level) for level in LEVELS if level in findings]
    return PROMPT_TEMPLATE.format(findings="\n".join(lines) or "none", draft=" ".join(str(draft).split()))


_LEVEL = re.compile(r"\b(L\d-[LS]\d)\b", re.IGNORECASE)
_AREA = re.compile(r"(\d+(?:\.\d+)?)\s*mm(?:2|²)", re.IGNORECASE)


def findings_from_text(text: str) -> dict[str, LevelFindings]:
    """Findings read back from a report (e.g. the composed one): grades by
    :func:`lss_vlm.metrics.text.extract_grades`; as a level's area, the first ``<number> mm2`` between its first
    mention and the next level name."""
    from ..metrics.text import extract_grades

    grades = extract_grades(text)
    pieces = _LEVEL.split(text or "")  # [before, level, text up to the next level, level, ...]
    areas: dict[str, float] = {}
    for level, piece in zip(pieces[1::2], pieces[2::2]):
        found = _AREA.search(piece)
        if found and level.upper() not in areas:
            areas[level.upper()] = float(found[1])
    return {lv: LevelFindings(int(grades[j]), areas.get(lv, math.nan)) for j, lv in enumerate(LEVELS)}


@dataclass
class ReportRefiner:
    """A local Hugging Face causal LM that rewrites drafts (module docstring).

    Args:
        model_path: folder holding ``config.json``, the weights and the tokenizer files (e.g. a ``save_pretrained``
            output, or a snapshot folder of the Hugging Face cache). Never downloaded.
        max_new_tokens: cap on the refined report's tokens. device: ``"cpu"`` or ``"cuda"``.

    Raises :class:`ConfigError` naming the path when it does not hold a causal LM and its tokenizer.
    """

    model_path: str | os.PathLike[str]
    max_new_tokens: int = 160
    device: str = "cpu"
    lora_rank: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.model_path).expanduser()
        if not path.is_dir():
            raise ConfigError(f"refine model {path}: not a folder (give the local folder of a Hugging Face causal LM)")
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"refine model {path}: no config.json, so not a Hugging Face model folder (give the folder "
                "save_pretrained wrote: config.json, the weights and the tokenizer files)"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).to(self.device)
        except (OSError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"refine model {path}: not a loadable causal LM with its tokenizer ({first})") from None
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            self.eos_id = self.tokenizer.sep_token_id  # BERT-style tokenizers end a text with [SEP]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        config = self.model.config
        self.context = int(getattr(config, "n_positions", 0) or getattr(config, "max_position_embeddings", 0) or 2048)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def refine(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuation of each prompt (``max_new_tokens`` at most, stops at the end token), decoded."""
        self.model.eval()
        out = []
        for prompt in prompts:
            keep = max(self.context - self.max_new_tokens, 1)  # the prompt's end (the draft) matters most
            ids = torch.tensor([self._ids(prompt)[-keep:]], device=self.device)
            generated = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
            )
            text = self.tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
            out.append(" ".join(text.split()))
        return out

    def add_lora(self, rank: int = 8, alpha: float = 16.0, target_modules: Sequence[str] | None = None) -> None:
        """Wrap the LM with LoRA adapters (``peft.get_peft_model``); its own weights are frozen from then on."""
        from peft import LoraConfig, get_peft_model

        if self.lora_rank:
            raise ConfigError("the refine model already has LoRA adapters")
        try:
            config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules)
            self.model = get_peft_model(self.model, config)
        except ValueError:  # peft has no default targets for this architecture
            names = {n.rsplit(".", 1)[-1] for n, _ in self.model.named_modules()}
            targets = [t for t in FALLBACK_LORA_TARGETS if t in names]
            if not targets:
                raise ConfigError(
                    f"refine model {self.model_path}: no LoRA target layers known; pass target_modules"
                ) from None
            config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets)
            self.model = get_peft_model(self.model, config)
        self.lora_rank = rank

    def loss(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Mean token cross-entropy of the targets given their prompts (prompt tokens are not scored). A pair longer
        than the model's context keeps the first half-context of the target and the end of the prompt."""
        rows = []
        for prompt, target in pairs:  # longer than the context: the target's head, the prompt's tail
            t = (self._ids(" " + target) + [self.eos_id])[: self.context // 2]
            rows.append((self._ids(prompt)[-(self.context - len(t)) :], t))
        width = max(len(a) + len(b) for a, b in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, target) in enumerate(rows):
            n = len(prompt) + len(target)
            ids[i, :n] = torch.tensor(prompt + target)
            labels[i, len(prompt) : n] = torch.tensor(target)
            mask[i, :n] = 1
        dev = self.device
        return self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss

    def fine_tune(
        self,
        pairs: Sequence[tuple[str, str]],
        steps: int = 100,
        lr: float = 2e-4,
        batch_size: int = 4,
        seed: int = 0,
        rank: int = 8,
    ) -> dict[str, float]:
        """LoRA fine-tuning (AdamW, ``steps`` steps, batches drawn with a ``seed``-ed generator) on
        ``(prompt, target)`` pairs; adds rank-``rank`` adapters first if there are none.

        Returns ``{"refine/first_loss", "refine/last_loss", "refine/steps"}`` (token CE in nats, first / last step).
        """
        if not pairs:
            raise DataError("no training pairs for the refine model (no training references)")
        if not self.lora_rank:
            self.add_lora(rank)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(int(seed))
        self.model.train()
        losses = []
        for _ in range(int(steps)):
            chosen = torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=generator).tolist()
            loss = self.loss([pairs[i] for i in chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        self.model.eval()
        return {"refine/first_loss": losses[0], "refine/last_loss": losses[-1], "refine/steps": float(len(losses))}

    def save_adapters(self, folder: str | os.PathLike[str]) -> Path:
        """Write the LoRA adapters (``peft`` ``save_pretrained``: ``adapter_config.json`` + weights) to ``folder``."""
        if not self.lora_rank:
            raise ConfigError("the refine model has no LoRA adapters to save (fine_tune first)")
        self.model.save_pretrained(str(folder))
        return Path(folder)

    def load_adapters(self, folder: str | os.PathLike[str]) -> None:
        """Load adapters written by :meth:`save_adapters` onto the base model (``peft.PeftModel.from_pretrained``)."""
        from peft import PeftModel

        self.model = PeftModel.from_pretrained(self.model, str(folder), local_files_only=True).to(self.device)
        self.lora_rank = int(self.model.peft_config["default"].r)


def training_examples(manifest: str | os.PathLike[str], split: str = "train") -> list[tuple[str, str]]:
    """``(prompt, target)`` pairs of a manifest split: true findings (``grade_*``, ``area_*``, ``meta_findings``), the
    case's reference ``k`` as the draft and reference ``k + 1`` as the target (cases with ≥ 2 references)."""
    from ..constants import FINDINGS_COLUMN, level_key
    from ..data.manifest import parse_findings, parse_reports, read_manifest

    table = read_manifest(manifest)
    pairs = []
    for _, row in table[table["split"] == split].iterrows():
        refs = parse_reports(row.get("reports"), f"{manifest} case {row['case_id']}")
        if len(refs) < 2:
            continue
        causes = parse_findings(row.get(FINDINGS_COLUMN), f"{manifest} case {row['case_id']}")
        findings = {
            lv: LevelFindings(
                int(row[f"grade_{level_key(lv)}"]), _number(row.get(f"area_{level_key(lv)}")), tuple(causes.get(lv, ()))
            )
            for lv in LEVELS
        }
        pairs += [(build_prompt(refs[k], findings), refs[(k + 1) % len(refs)]) for k in range(len(refs))]
    return pairs


def _number(cell: Any) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return math.nan


def refine_run_reports(
    reports_jsonl: str | os.PathLike[str], refiner: ReportRefiner, out: str | os.PathLike[str]
) -> list[dict[str, Any]]:
    """Rewrite every case of a run's ``reports.jsonl`` and write ``out`` (JSON lines: ``case_id``, ``prompt``,
    ``draft``, ``refined``, ``references``, ``true_grades``) atomically. Draft = ``generated``; findings = those of the
    ``composed`` report (:func:`findings_from_text`), else of the generated one. The true grades are never shown.

    Raises :class:`DataError` naming the file when it is unreadable, not JSON lines, a record lacks ``case_id`` or
    ``generated``, or it holds no record."""
    path = Path(reports_jsonl)
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable reports.jsonl ({err})") from None
    needed = {"case_id", "generated"}
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict) or not needed <= set(r)), 0)
    if bad or not rows:
        where = f"record {bad} has no case_id/generated" if bad else "no reports"
        raise DataError(f"{path}: not a reports.jsonl of a run ({where})")
    prompts = [build_prompt(r["generated"], findings_from_text(r.get("composed") or r["generated"])) for r in rows]
    refined = refiner.refine(prompts)
    records = [
        {
            **{k: r.get(k) for k in ("case_id", "references", "true_grades")},
            "prompt": p,
            "draft": r["generated"],
            "refined": text,
        }
        for r, p, text in zip(rows, prompts, refined)
    ]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


#: The texts :func:`score_refined` scores when a record carries them, and the prefix of their metrics.
SCORED_TEXTS = ("draft", "refined")


def score_refined(records: Sequence[Mapping[str, Any]], text_metrics: bool = True) -> dict[str, float]:
    """Scores of the drafts and the refined reports of :func:`refine_run_reports` records, by the run's own scorers
    (:mod:`lss_vlm.metrics.text`), on the same cases.

    For each text of :data:`SCORED_TEXTS` that the records carry, ``<text>/grade_f1_from_text`` and, with
    ``text_metrics``, ``<text>/bertscore_*`` and (with Java) ``<text>/<BLEU-1..4, METEOR, ROUGE-L, CIDEr>``; with both
    texts, ``delta/<metric>`` = refined - draft (a negative ``delta/grade_f1_from_text``: the LM changed grades).
    """
    from ..metrics.text import bertscore, grade_f1_from_text, score_report_sets

    texts = [t for t in SCORED_TEXTS if records and all(t in r for r in records)]
    hyps = {t: {str(r["case_id"]): str(r[t] or "") for r in records} for t in texts}
    truth = {str(r["case_id"]): [int(g) for g in (r.get("true_grades") or {}).values()] for r in records}
    truth = {k: v for k, v in truth.items() if v}
    metrics = {f"{t}/grade_f1_from_text": grade_f1_from_text(hyps[t], truth) for t in texts}
    refs = {str(r["case_id"]): list(r["references"]) for r in records if r.get("references")}
    if text_metrics and refs:
        on_refs = {t: {cid: hyps[t][cid] for cid in refs} for t in texts}
        for t in texts:
            metrics.update({f"{t}/{k}": float(v) for k, v in bertscore(refs, on_refs[t]).items()})
        if shutil.which("java"):
            scores = score_report_sets(refs, on_refs)[0]
            metrics.update({f"{t}/{k}": float(v) for t in texts for k, v in scores[t].items()})
    if len(texts) == 2:
        names = [k.split("/", 1)[1] for k in metrics if k.startswith("refined/") and not k.endswith("/n_reports")]
        metrics.update({f"delta/{n}": metrics[f"refined/{n}"] - metrics[f"draft/{n}"] for n in names})
    return metrics
