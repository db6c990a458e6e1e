"""The Spatial Patch Cross-Attention vision-language model (``spca_vlm``).

views [B, V, 1, H, W] → fold V into the batch → shared image encoder (pyramid at strides 1..16)
→ stride-16 patch tokens (+ view embedding + 2D sin-cos position code, 2D layout kept)
→ SPCA with the cached prompt tokens at one or more strides (fused grids replace those pyramid levels)
→ (a) smp U-Net decoder → seg logits per view, (b) level-query grade head → grades per level,
(c) word-level GPT-2 report decoder cross-attending to all fused patch tokens + predicted-grade embeddings, told the
predicted grade of the level it is writing about (see :class:`~lss_vlm.models.decoders.ReportDecoder`).
No global pooling on the main path.

Options (off by default; the model is then exactly the one above): ``clinical_fusion`` fuses each level's pooled
feature with the case's clinical vector before the grade classifier and adds the fused level tokens to the report
memory (:mod:`lss_vlm.models.clinical`); ``contrastive_head`` adds the projections of the image–text InfoNCE term
(:mod:`lss_vlm.models.contrastive`, :meth:`VisionLanguageModel.contrastive_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..constants import CAUSES, LEVELS, NUM_GRADES, NUM_LABELS, NUM_VIEWS
from ..errors import ConfigError
from ..reports.vocabulary import ReportVocabulary, default_vocabulary
from .attention import SpatialPatchCrossAttention
from .base import MultiViewModel
from .clinical import ClinicalFusion
from .contrastive import ContrastiveHead
from .decoders import NO_REPEAT_NGRAM, ReportDecoder, SegmentationDecoder
from .encoders import PATCH_STRIDE, PatchTokenizer, build_image_encoder, check_image_size
from .heads import CauseHead, LevelQueryGradeHead
from .instruct import InstructionFiLM, instruction_views
from .registry import MODELS
from .text import DEFAULT_TEXT_ENCODER, PromptBank, PromptEncoding, TextEncoder, default_prompts

DEFAULT_DECODER_CHANNELS: tuple[int, ...] = (96, 48, 24, 16)
NO_CONTRASTIVE_HEAD = "the contrastive term needs a model built with model.params.contrastive_head=true"


def pyramid_index(stride: int) -> int:
    """Index of a stride in the encoder pyramid ``[x, f/2, f/4, f/8, f/16]``."""
    if stride not in (2, 4, 8, 16):
        raise ConfigError(f"model.spca_strides entries must be among 2, 4, 8, 16, got {stride}")
    return int(math.log2(stride))


class SpcaFusion(nn.Module):
    """SPCA at each stride of ``strides``: tokenise that pyramid level, cross-attend to the prompts, replace it."""

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        embed_dim: int,
        text_dim: int,
        num_views: int,
        strides: Sequence[int] = (PATCH_STRIDE,),
        num_heads: int = 8,
        gate_init: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.strides = tuple(sorted(set(int(s) for s in strides)))
        if PATCH_STRIDE not in self.strides:
            raise ConfigError(f"model.spca_strides must include {PATCH_STRIDE} (the patch grid), got {strides}")
        if embed_dim % num_heads:
            raise ConfigError(f"model.embed_dim={embed_dim} must be divisible by model.num_heads={num_heads}")
        self.tokenizers = nn.ModuleDict(
            {str(s): PatchTokenizer(encoder_channels[pyramid_index(s)], embed_dim, num_views) for s in self.strides}
        )
        self.blocks = nn.ModuleDict(
            {
                str(s): SpatialPatchCrossAttention(embed_dim, text_dim, num_heads, gate_init=gate_init, dropout=dropout)
                for s in self.strides
            }
        )
        channels = list(encoder_channels)
        for s in self.strides:
            channels[pyramid_index(s)] = embed_dim
        self.out_channels = tuple(channels)

    def forward(
        self,
        features: list[torch.Tensor],
        num_views: int,
        prompts: PromptEncoding,
        view_index: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        features = list(features)
        maps: dict[str, torch.Tensor] = {}
        num_prompts = len(prompts.pooled)
        for s in self.strides:
            i = pyramid_index(s)
            tokens = self.tokenizers[str(s)](features[i], num_views, view_index)
            features[i], maps[f"spca/s{s}"] = self.blocks[str(s)](
                tokens, prompts.tokens, prompts.token_prompt, num_prompts
            )
        return features, maps


class VisionLanguageModel(MultiViewModel):
    """Multi-view VLM: image encoder, cached prompt bank, a fusion of text into the patch grid, three heads.

    Subclasses change only :meth:`build_fusion` (``global_pool_fusion`` pools instead of cross-attending).
    """

    def __init__(
        self,
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        encoder: str = "lite_cnn",
        encoder_weights: str | None = None,
        image_size: int = 128,
        embed_dim: int = 128,
        num_heads: int = 8,
        spca_strides: Sequence[int] = (PATCH_STRIDE,),
        gate_init: float = 0.1,
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        full_resolution_skip: bool = False,
        grade_hidden: int = 128,
        report_width: int = 128,
        report_layers: int = 2,
        report_heads: int = 4,
        report_max_length: int | None = None,
        report_vocab: dict | None = None,
        grade_teacher_until: float = 0.75,
        report_no_repeat_ngram: int = NO_REPEAT_NGRAM,
        report_warmup_steps: int = 200,
        report_warmup_lr: float = 3e-3,
        prompts: dict[str, str] | None = None,
        indication: str | None = None,
        freeze_text: bool = True,
        dropout: float = 0.1,
        freeze_encoder: bool = False,
        text_lora_rank: int = 0,
        report_lora_rank: int = 0,
        lora_alpha: float = 16.0,
        cause_head: bool = False,
        clinical_fusion: bool = False,
        clinical_stats: dict | None = None,
        contrastive_head: bool = False,
        contrastive_temperature: float = 0.07,
        instruct_film: bool = False,
        instruct_weight: float = 1.0,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(config)
        check_image_size(image_size, image_size)
        self.text = TextEncoder(text_encoder, frozen=freeze_text, lora_rank=text_lora_rank, lora_alpha=lora_alpha)
        self.tokenizer = self.text.tokenizer
        unknown = sorted(set(prompts or {}) - set(default_prompts(indication)) - {"indication"})
        if unknown:
            raise ConfigError(f"model.prompts has unknown name(s) {', '.join(unknown)}")
        self.prompts = PromptBank(self.text, {**default_prompts(indication), **(prompts or {})})
        self.encoder = build_image_encoder(encoder, encoder_weights)
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:  # parameter-efficient transfer: the image features stay as loaded
            self.encoder.requires_grad_(False)
        self.fusion = self.build_fusion(
            encoder_channels=tuple(self.encoder.out_channels),
            embed_dim=embed_dim,
            text_dim=self.text.hidden_size,
            num_heads=num_heads,
            spca_strides=spca_strides,
            gate_init=gate_init,
        )
        self.seg_decoder = SegmentationDecoder(
            tuple(self.fusion.out_channels), tuple(decoder_channels), NUM_LABELS, full_resolution_skip
        )
        self.grade_head = LevelQueryGradeHead(embed_dim, self.text.hidden_size, grade_hidden, dropout)
        # optional: the contributing causes per level, which the report decoder then states (see predicted_causes)
        self.cause_head = CauseHead(3 * embed_dim, grade_hidden, dropout) if cause_head else None
        # test-time text intervention (lss_vlm.models.instruct): FiLM of the decoder features, identity until trained
        self.instruction = (
            InstructionFiLM(self.text.hidden_size, decoder_channels[-1], instruct_weight) if instruct_film else None
        )
        # the report vocabulary: the training split's (a run passes it), else the reference writer's own words
        vocab = ReportVocabulary.from_dict(report_vocab) if report_vocab is not None else default_vocabulary()
        self.report_vocab = vocab
        self.grade_teacher_until = float(grade_teacher_until)
        self.report_warmup_steps, self.report_warmup_lr = int(report_warmup_steps), float(report_warmup_lr)
        self.report_decoder = ReportDecoder(
            vocab, embed_dim, report_width, report_layers, report_heads, report_max_length, dropout,
            report_no_repeat_ngram, report_lora_rank, lora_alpha,
        )  # fmt: skip
        self.report_max_length = self.report_decoder.max_length
        # built last, so that with them off (or on) every other weight is initialised from the same random draws
        level_dim = 3 * embed_dim  # the grade head's [sag_t1; sag_t2; ax_l] feature
        self.clinical = ClinicalFusion(level_dim, embed_dim, clinical_stats) if clinical_fusion else None
        self.contrastive = ContrastiveHead(level_dim, self.text.hidden_size, embed_dim) if contrastive_head else None
        if not (isinstance(contrastive_temperature, (int, float)) and 0 < contrastive_temperature <= 10):
            raise ConfigError(f"model.params.contrastive_temperature: expected a number in (0, 10], got "
                              f"{contrastive_temperature!r}")  # fmt: skip
        self.contrastive_temperature = float(contrastive_temperature)
        self._sentence_cache: dict[str, torch.Tensor] = {}

    @property
    def clinical_columns(self) -> list[str] | None:
        """The clinical columns the model reads (``batch["clinical"]`` in this order), or None without fusion."""
        return None if self.clinical is None else list(self.clinical.columns)

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """``nn.Module.train``; a frozen image encoder stays in eval mode (its BatchNorm statistics do not move)."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def build_fusion(
        self,
        encoder_channels: tuple[int, ...],
        embed_dim: int,
        text_dim: int,
        num_heads: int,
        spca_strides: Sequence[int],
        gate_init: float,
    ) -> nn.Module:
        """The text-into-image fusion: SPCA here; ``out_channels`` tells the decoder the fused pyramid widths."""
        return SpcaFusion(encoder_channels, embed_dim, text_dim, NUM_VIEWS, spca_strides, num_heads, gate_init)

    @property
    def prompt_names(self) -> list[str]:
        return self.prompts.names

    def set_prompts(self, prompts: dict[str, str]) -> None:
        """Change prompt texts (names from :attr:`prompt_names`, or ``indication``); re-encodes them once."""
        unknown = sorted(set(prompts) - set(self.prompts.names) - {"indication"})
        if unknown:
            raise ConfigError(f"unknown prompt(s) {', '.join(unknown)}; prompts are: {', '.join(self.prompt_names)}")
        self.prompts.set_prompts(prompts)
        self.config["prompts"] = {**(self.config.get("prompts") or {}), **prompts}

    def level_text(self, prompts: PromptEncoding) -> torch.Tensor:
        """Mean text embedding of each level query ``[L, d_text]``."""
        return prompts.pooled[[self.prompts.index(f"level/{level}") for level in LEVELS]]

    def present_views(self, view_valid: torch.Tensor | None) -> torch.Tensor | None:
        """Indices of the views that some case of the batch has, or None when every view is there (or unknown).

        A view no case has (a one-view dataset: 6 of 7 views) is not encoded at all: it was 6/7 of the compute,
        and its blank images entered the encoder's batch-norm statistics in training. Each view is encoded on its
        own (the views meet only in the grade head, which masks absent ones), so in eval mode the present views'
        outputs do not change (a test checks it). The FiLM instruction path keeps every view."""
        if view_valid is None or self.instruction is not None:
            return None
        columns = view_valid.bool().any(dim=0)
        if bool(columns.all()) or not bool(columns.any()):
            return None
        return columns.nonzero().flatten()

    def encode(
        self, views: torch.Tensor, view_valid: torch.Tensor | None = None, clinical: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Everything but the report: seg/grade logits, attention maps and the fused patch grid ``[B, V, d, h, w]``;
        with clinical fusion also ``clinical_memory [B, L, d]``, with a contrastive head ``level_features [B, L, 3d]``.
        ``clinical [B, F]``: NaN = unknown; ``None`` = all unknown (the mask tokens)."""
        b, v, h, w = self.check_views(views)
        present = self.present_views(view_valid)
        if present is not None:  # encode only the views some case of the batch has
            views = views[:, present]
        n = views.shape[1]
        features = self.encoder(views.reshape(b * n, 1, h, w))
        prompts = self.prompts.encoding()
        features, maps = self.fusion(features, n, prompts, present)
        seg_features = None
        if self.instruction is None:
            seg = self.seg_decoder(features).reshape(b, n, NUM_LABELS, h, w)
        else:
            seg, seg_features = self.instruction.segment(self.seg_decoder, features, b, n)
        grid = features[pyramid_index(PATCH_STRIDE)]
        grid = grid.reshape(b, n, *grid.shape[1:])
        maps = {name: m.reshape(b, n, *m.shape[1:]) for name, m in maps.items()}
        if present is not None:  # absent views: zero logits (background), zero patch grid, zero maps
            seg, grid = scatter_views(seg, present, v), scatter_views(grid, present, v)
            maps = {name: scatter_views(m, present, v) for name, m in maps.items()}
        level_features, grade_maps = self.grade_head.pool(grid, self.level_text(prompts), view_valid)
        fused = level_features if self.clinical is None else self.clinical(level_features, clinical)
        grade_logits = self.grade_head.classifier(fused)
        attention = dict(maps)
        attention["grade"] = grade_maps
        out = {"seg_logits": seg, "grade_logits": grade_logits, "attention": attention, "grid": grid}
        if self.clinical is not None:
            out["clinical_memory"] = self.clinical.to_memory(fused)
        if self.cause_head is not None:
            out["cause_logits"] = self.cause_head(level_features)  # [B, L, 3]
        if self.contrastive is not None:
            out["level_features"] = level_features
        if seg_features is not None:
            out["seg_features"] = seg_features  # [B, V, C, H, W], for the instruction term and intervention scoring
        return out

    @staticmethod
    def predicted_causes(cause_logits: torch.Tensor, threshold: float = 0.5) -> list[dict[str, list[str]]]:
        """Cause logits ``[B, L, 3]`` → per case ``{level: [cause, ...]}``: the causes with probability above
        ``threshold``, most probable first, and at least the most probable one (the reference writer names a cause for
        every stenotic level; the report grammar states causes only for levels told stenotic)."""
        probs = cause_logits.detach().float().sigmoid().cpu()
        out = []
        for case in probs:
            per_level = {}
            for level, p in zip(LEVELS, case):
                order = p.argsort(descending=True).tolist()
                per_level[level] = [CAUSES[k] for k in order if p[k] > threshold] or [CAUSES[order[0]]]
            out.append(per_level)
        return out

    def contrastive_loss(
        self, level_features: torch.Tensor, sentences: Sequence[Sequence[str | None]], temperature: float | None = None
    ) -> torch.Tensor:
        """Symmetric InfoNCE (:mod:`lss_vlm.models.contrastive`) between ``level_features [B, L, 3d]`` (the grade
        head's pooled features, before clinical fusion) and the frozen text embedding of ``sentences[b][l]`` (the
        reference sentence of level ``l`` of case ``b``; ``None``/empty = no pair). ``temperature``: default
        ``contrastive_temperature``. Raises :class:`ConfigError` without a contrastive head."""
        if self.contrastive is None:
            raise ConfigError(NO_CONTRASTIVE_HEAD)
        pairs = [(i, j) for i, row in enumerate(sentences) for j, text in enumerate(row) if text]
        if not pairs:
            return level_features.sum() * 0.0
        rows, cols = (torch.tensor(idx, device=level_features.device) for idx in zip(*pairs))
        text = self.sentence_embeddings([sentences[i][j] for i, j in pairs]).to(level_features.device)
        tau = self.contrastive_temperature if temperature is None else temperature
        return self.contrastive(level_features[rows, cols], text, tau)

    def sentence_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean token embedding ``[N, d_text]`` of each text under the text encoder; cached per text while the
        encoder is frozen (it then never changes), recomputed with gradients when it trains."""
        if self.text.trainable:
            hidden, mask = self.text(list(texts))
            return (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        new = sorted(set(texts) - set(self._sentence_cache))
        if new:
            if len(self._sentence_cache) + len(new) > 100_000:  # bounded memory on a very large corpus
                self._sentence_cache.clear()
            with torch.no_grad():
                hidden, mask = self.text(new)
                pooled = (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            self._sentence_cache.update(zip(new, pooled))
        return torch.stack([self._sentence_cache[t] for t in texts])

    def set_instruction(self, text: str | None) -> None:
        """Apply a clinician's instruction to every following prediction (``None`` removes it); see
        :mod:`lss_vlm.models.instruct`. Raises :class:`ConfigError` when the model has no FiLM layer."""
        if text is None:
            if self.instruction is not None:
                self.instruction.active = None
            return
        if self.instruction is None:
            raise ConfigError("this model has no instruction FiLM layer: train it with model.params.instruct_film=true")
        views = instruction_views(text)
        self.instruction.active = (self.instruction.embed(self.text, [text])[0], views)

    def tokenize_reports(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reports → word-level ``ids int64 [B, T]`` (``<bos> … <eos>``, numbers as slots, padded) and ``mask bool``."""
        encoded = [self.report_vocab.encode(t) if t and t.strip() else [] for t in texts]
        width = max([len(e) for e in encoded] + [2])
        ids = torch.full((len(encoded), width), self.report_vocab.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = True
        return ids, mask

    def set_training_progress(self, fraction: float) -> None:
        """Scheduled sampling of the decoder's grade conditioning: true grades with probability
        ``1 - fraction / grade_teacher_until`` (clipped to [0, 1]); ``fraction`` = epochs done / epochs."""
        until = max(self.grade_teacher_until, 1e-9)
        self.report_decoder.teacher_ratio = float(min(max(1.0 - fraction / until, 0.0), 1.0))

    def warm_up_report_decoder(
        self, reports: Sequence[Sequence[str]], grades: Sequence[Sequence[int]], seed: int = 0, batch_size: int = 16
    ) -> dict[str, float]:
        """Text-only warm-up of the report decoder on the training split's references, before joint training.

        ``report_warmup_steps`` AdamW steps (lr ``report_warmup_lr``, linear decay to 10 %) of the token CE, batches of
        ``batch_size`` references drawn with a generator seeded by ``seed``, the decoder told the *true* grades of each
        case (one-hot; unknown → the grade-0 row) with grade tokens as its only memory. No image is read, so it costs
        seconds; joint training then adds the visual memory and moves the grades told from true to predicted
        (scheduled sampling). A language-model warm-up of the decoder on the report corpus, which a CPU budget of
        ~30 joint steps could not otherwise teach a 110-token template.

        Args:
            reports: per case, its reference reports. grades: per case, its grade per level (``-1`` unknown).

        Returns:
            ``{"report_warmup/steps", "report_warmup/first_ce", "report_warmup/last_ce", "report_warmup/seconds"}``
            (CE in nats per token, averaged over the first / last 10 % of steps); ``{}`` when there is nothing to do.
        """
        import time

        pairs = [(text, list(g)) for refs, g in zip(reports, grades) for text in refs if text and text.strip()]
        if not pairs or self.report_warmup_steps <= 0:
            return {}
        started, started_cpu = time.perf_counter(), time.process_time()
        decoder = self.report_decoder
        device = next(decoder.parameters()).device
        params = [p for p in decoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.report_warmup_lr, weight_decay=0.01)
        steps = self.report_warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - 0.9 * i / steps)
        generator = torch.Generator().manual_seed(int(seed))
        was_training = decoder.training
        decoder.train()
        losses = []
        for _ in range(steps):
            chosen = torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=generator).tolist()
            ids, mask = (t.to(device) for t in self.tokenize_reports([pairs[i][0] for i in chosen]))
            true = torch.tensor([pairs[i][1] for i in chosen], dtype=torch.long, device=device).clamp(min=0)
            probs = torch.nn.functional.one_hot(true, NUM_GRADES).float()
            memory, memory_mask = decoder.memory(None, None, probs)
            _, loss = decoder(memory, memory_mask, ids, mask, probs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        decoder.train(was_training)
        tenth = max(1, steps // 10)
        return {
            "report_warmup/steps": float(steps),
            "report_warmup/first_ce": float(sum(losses[:tenth]) / tenth),
            "report_warmup/last_ce": float(sum(losses[-tenth:]) / tenth),
            "report_warmup/seconds": time.perf_counter() - started,
            "report_warmup/cpu_seconds": time.process_time() - started_cpu,
        }

    def report_memory(
        self,
        grid: torch.Tensor,
        grade_probs: torch.Tensor,
        view_valid: torch.Tensor | None,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's memory: all patch tokens of the valid views, then ``extra [B, K, d]`` tokens (the fused
        clinical level tokens), then the grade tokens."""
        b, v, d, h, w = grid.shape
        visual = grid.flatten(3).transpose(2, 3).reshape(b, v * h * w, d)
        valid = view_valid if view_valid is not None else torch.ones(b, v, dtype=torch.bool, device=grid.device)
        visual_mask = valid.bool()[:, :, None].expand(b, v, h * w).reshape(b, v * h * w)
        if extra is not None:
            visual = torch.cat([visual, extra.to(visual.dtype)], dim=1)
            visual_mask = torch.cat([visual_mask, visual_mask.new_ones(extra.shape[:2])], dim=1)
        return self.report_decoder.memory(visual, visual_mask, grade_probs)

    def forward(
        self,
        views: torch.Tensor,
        report_ids: torch.Tensor | None = None,
        report_mask: torch.Tensor | None = None,
        view_valid: torch.Tensor | None = None,
        report_grades: torch.Tensor | None = None,
        clinical: torch.Tensor | None = None,
        contrastive_sentences: Sequence[Sequence[str | None]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """See :class:`MultiViewModel`; ``report_grades [B, L]`` (true grades, ``-1`` unknown) feed the decoder's
        scheduled sampling in training (:meth:`set_training_progress`); ``clinical [B, F]`` (NaN = unknown) is read
        with clinical fusion only; ``contrastive_sentences`` (per case, per level, see :meth:`contrastive_loss`) add
        ``contrastive_loss`` to the output (computed inside ``forward`` so that data-parallel training syncs the
        projections' gradients)."""
        out = self.encode(views, view_valid, clinical)
        grid = out.pop("grid")
        extra = out.pop("clinical_memory", None)
        level_features = out.pop("level_features", None)
        if contrastive_sentences is not None:
            if level_features is None:
                raise ConfigError(NO_CONTRASTIVE_HEAD)
            out["contrastive_loss"] = self.contrastive_loss(level_features, contrastive_sentences)
        if report_ids is not None:
            mask = report_mask if report_mask is not None else report_ids != self.report_decoder.pad_id
            probs = self.report_decoder.condition_grades(out["grade_logits"].softmax(-1), report_grades)
            memory, memory_mask = self.report_memory(grid, probs, view_valid, extra)
            out["report_logits"], out["report_loss"] = self.report_decoder(memory, memory_mask, report_ids, mask, probs)
        return out

    def _generate_reports(
        self,
        views: torch.Tensor,
        num_beams: int,
        max_length: int | None,
        view_valid: torch.Tensor | None,
        causes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
        clinical: torch.Tensor | None = None,
    ) -> list[str]:
        out = self.encode(views, view_valid, clinical)
        probs = self.report_decoder.condition_grades(out["grade_logits"].softmax(-1))
        memory, memory_mask = self.report_memory(out["grid"], probs, view_valid, out.get("clinical_memory"))
        if causes is None and "cause_logits" in out:
            causes = self.predicted_causes(out["cause_logits"])
        return self.report_decoder.generate(memory, memory_mask, probs, num_beams, max_length, causes)


def scatter_views(tensor: torch.Tensor, present: torch.Tensor, num_views: int) -> torch.Tensor:
    """``[B, n, ...]`` of the ``present`` views → ``[B, num_views, ...]``, zeros for the others."""
    out = tensor.new_zeros(tensor.shape[0], num_views, *tensor.shape[2:])
    out[:, present] = tensor
    return out


MODELS.register("spca_vlm")(VisionLanguageModel)
