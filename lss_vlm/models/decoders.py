"""Decoders: the U-Net segmentation decoder (smp) and the word-level report decoder (GPT-2 with cross-attention)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..constants import LEVELS, NUM_GRADES, NUM_LABELS, NUM_LEVELS
from ..reports.grammar import GRADE_WORDS, ReportGrammar
from ..reports.vocabulary import ReportVocabulary
from .encoders import _conv_bn_act

IGNORE_INDEX = -100  # label value ignored by the token cross-entropy
#: Report length limit in MiniLM word pieces of the template baseline's tokenizer (the learned decoder's limit comes
#: from its word-level vocabulary: 1.25 × the longest training reference).
DEFAULT_REPORT_MAX_LENGTH = 192


class SegmentationDecoder(nn.Module):
    """smp's U-Net decoder over the (fused) feature pyramid ``[x, f/2, f/4, f/8, f/16]`` + a 3×3 logit head.

    smp's ``UnetDecoder`` drops the stride-1 entry of the pyramid (its encoders have no full-resolution stage), so its
    last block upsamples the stride-2 features by nearest neighbour and never sees the image at full resolution.
    ``full_resolution_skip`` adds the skip the original U-Net (Ronneberger et al. 2015) and nnU-Net
    (Isensee et al. 2021) have at the top resolution: two 3×3 conv-BN-ReLU on the input ``x [N, C0, H, W]``
    (:attr:`stem`), concatenated with the decoder's output and merged by one more (:attr:`merge`), so the last layers
    can place a boundary on the pixel: +0.010 to +0.013 macro Dice (ligamentum flavum +0.02 to +0.06) on 4 of 4
    paired `standard`/`reports` runs, but no more exact sac areas (docs/results.md, "The sac's edge"). Off by default
    (the published suites were run without it).

    Shapes: ``features`` as above; :meth:`decode` returns ``[N, decoder_channels[-1], H, W]``, :meth:`forward` the
    logits ``[N, num_classes, H, W]``.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        decoder_channels: tuple[int, ...],
        num_classes: int = NUM_LABELS,
        full_resolution_skip: bool = False,
    ) -> None:
        super().__init__()
        # smp (-> timm -> torchvision) on first build: a config check ('lss-bench validate') imports this module only
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.decoder = UnetDecoder(
            encoder_channels=encoder_channels, decoder_channels=decoder_channels, n_blocks=len(decoder_channels)
        )
        width = decoder_channels[-1]
        self.stem = self.merge = None
        if full_resolution_skip:
            self.stem = nn.Sequential(_conv_bn_act(encoder_channels[0], width), _conv_bn_act(width, width))
            self.merge = _conv_bn_act(2 * width, width)
        self.head = SegmentationHead(width, num_classes, kernel_size=3)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The last decoder features ``[N, decoder_channels[-1], H, W]`` (before the logit head)."""
        decoded = self.decoder(features)
        if self.stem is None or self.merge is None:
            return decoded
        return self.merge(torch.cat([decoded, self.stem(features[0])], dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decode(features))


_LEVEL_PATTERN = re.compile(r"\b([lst])\s*(\d)\s*-\s*([lst])\s*(\d)\b", re.IGNORECASE)


def tidy_decoded_report(text: str) -> str:
    """Undo the uncased word-piece spacing: ``"l4 - l5 : mild stenosis ."`` → ``"L4-L5: mild stenosis."``."""
    text = _LEVEL_PATTERN.sub(lambda m: f"{m[1].upper()}{m[2]}-{m[3].upper()}{m[4]}", text)
    text = re.sub(r"\s+([.,;:)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    sentences = re.split(r"(?<=[.;:])\s+", text.strip())
    return " ".join(s[:1].upper() + s[1:] for s in sentences if s)


#: Words that open the summary of a report: the positions after one are conditioned on the worst grade.
SUMMARY_HEADERS: frozenset[str] = frozenset({"impression", "conclusion", "summary", "conclusions"})
#: Repeated n-gram guard of the decoding: a token that would repeat an n-gram of this size is banned. A report states
#: the same 16-token sentence for two levels with the same grade and causes, but any 20 tokens hold a level name or a
#: measurement slot, which differ between levels; a looping decoder repeats 20-grams at once.
NO_REPEAT_NGRAM = 20
NUM_STATES = NUM_LEVELS + 2  # 0 = before any level, 1..L = the level named last, L+1 = in the summary


def banned_by_ngram(seq: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an ``n``-gram already in ``seq`` (Paulus et al. 2018's trigram block, for any n)."""
    if n < 2 or len(seq) < n:
        return set()
    prefix = list(seq[len(seq) - n + 1 :])
    return {int(seq[i + n - 1]) for i in range(len(seq) - n + 1) if list(seq[i : i + n - 1]) == prefix}


class ReportDecoder(nn.Module):
    r"""Small GPT-2 decoder over the word-level report vocabulary, conditioned on visual tokens and predicted grades.

    * **Vocabulary**: a :class:`~lss_vlm.reports.vocabulary.ReportVocabulary` from the training split (R2Gen /
      R2GenCMN practice): ~70 words and 10 measurement slots instead of 30,522 word pieces. Input and output
      embeddings are tied (GPT-2's ``tie_word_embeddings``), so the output layer adds no parameters.
    * **Memory** (cross-attention): :math:`M = [\,\mathrm{LN}(W_m X)\,;\ \mathrm{LN}(p_l^\top E_g + e_l)\,]`, with
      :math:`X` the fused patch tokens of all views ``[B, V·h·w, d]``, :math:`p_l` the grade probabilities of level
      :math:`l`, :math:`E_g` grade and :math:`e_l` level embeddings.
    * **Grade-state input**: each input token also receives :math:`c_t = p_{s_t}^\top C_g + z_{s_t}`, where the state
      :math:`s_t` is the level named last before position :math:`t` (or the summary after ``Impression:``, where
      :math:`p` is the one-hot worst grade plus a multi-hot of the levels at that grade). The word after ``L4-L5:``
      is then a function of the L4-L5 grade the decoder is told, so the text says what the grade head decided. Each
      grade's vector :math:`C_g` starts at the embedding of its word (``no``, ``mild``, ``moderate``, ``severe``), so
      that rare grades need not be learned from scratch; likewise each level's summary vector starts at its name's.
    * **Scheduled sampling of grades** (Bengio et al. 2015, applied to the conditioning): in training, each known level
      uses the true one-hot grade with probability ``teacher_ratio`` (set by the trainer: 1 → 0 over the first
      ``teacher_until`` of training), else the detached predicted probabilities; evaluation always uses predictions.
    * **Loss**: token cross-entropy :math:`-\frac{1}{|\mathcal T|}\sum_{t} \log p(y_{t+1} \mid y_{\le t}, M)` over
      non-padding targets.
    * **Decoding** (:meth:`generate`): greedy or beam search (length-normalised), a hard cap of ``max_length`` tokens
      (default: 1.25 × the longest training reference) and a repeated-``NO_REPEAT_NGRAM``-gram ban, so it can never
      loop without end. In the summary line (:meth:`summary_bans`) only the worst told grade's word and the levels
      at that grade, each once, may be written: unconstrained, the quick-budget decoder looped (``at L3-L4 and L4-L5
      and L3-L4 ...``) or listed every level. Returns texts with slot tokens, filled by
      :func:`lss_vlm.reports.vocabulary.fill_slots`.
    * **LoRA** (``lora_rank > 0``, :mod:`lss_vlm.models.lora`): the GPT-2 body and its embeddings are frozen and rank-
      ``lora_rank`` adapters on the self- and cross-attention projections (``c_attn``, ``q_attn``) train, with the
      memory projection and the grade/level/state vectors. Meant for fine-tuning a trained decoder
      (``train.init_weights``); from scratch the frozen random body limits what the adapters can learn.
    """

    #: Tensors indexed by the report vocabulary's token ids (tied input and output embeddings): they mean nothing
    #: under another vocabulary, so fine-tuning from a run with other words leaves them fresh (benchmarks.runner).
    VOCABULARY_TENSORS: tuple[str, ...] = ("lm.lm_head.weight", "lm.transformer.wte.weight")

    def __init__(
        self,
        vocab: ReportVocabulary,
        memory_dim: int,
        width: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        max_length: int | None = None,
        dropout: float = 0.1,
        no_repeat_ngram: int = NO_REPEAT_NGRAM,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
    ) -> None:
        super().__init__()
        from .lora import add_lora, check_rank

        self.vocab = vocab
        self.max_length = int(max_length or vocab.max_length)
        self.no_repeat_ngram = no_repeat_ngram
        self.bos_id, self.eos_id, self.pad_id = vocab.bos_id, vocab.eos_id, vocab.pad_id
        self.teacher_ratio = 0.0
        from transformers import GPT2Config, GPT2LMHeadModel  # on first build (~2 s): checking a config stays light

        config = GPT2Config(
            vocab_size=len(vocab),
            n_embd=width,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=self.max_length,
            n_inner=2 * width,
            add_cross_attention=True,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=0.0,  # dropout on the [B, heads, T, T] attention weights was 40 % of a CPU step
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            tie_word_embeddings=True,
        )
        self.lm = GPT2LMHeadModel(config)
        self.lm.loss_type = "ForCausalLM"  # shifted token CE, IGNORE_INDEX skipped, mean over target tokens
        self.memory_proj = nn.Linear(memory_dim, width)
        self.memory_norm = nn.LayerNorm(width)
        self.grade_embedding = nn.Parameter(torch.randn(NUM_GRADES, width) * 0.02)
        self.level_embedding = nn.Parameter(torch.randn(NUM_LEVELS, width) * 0.02)
        self.state_grade = nn.Parameter(torch.randn(NUM_GRADES, width) * 0.02)
        self.state_embedding = nn.Parameter(torch.randn(NUM_STATES, width) * 0.02)
        self.summary_levels = nn.Parameter(torch.randn(NUM_LEVELS, width) * 0.02)
        with torch.no_grad():  # start each grade's state vector at its word's embedding: "told severe" ~ "severe"
            for grade, word in enumerate(GRADE_WORDS):
                if word in vocab.index:
                    self.state_grade[grade].copy_(self.lm.transformer.wte.weight[vocab.index[word]])
            for level, name in enumerate(LEVELS):  # and each level's summary vector at its name's embedding
                if name in vocab.index:
                    self.summary_levels[level].copy_(self.lm.transformer.wte.weight[vocab.index[name]])
        level_of_token = torch.full((len(vocab),), -1, dtype=torch.long)
        for i, token in enumerate(vocab.tokens):
            if token.upper() in LEVELS:
                level_of_token[i] = LEVELS.index(token.upper())
        is_header = torch.tensor([t.lower() in SUMMARY_HEADERS for t in vocab.tokens], dtype=torch.bool)
        self._level_ids = {i for i, lv in enumerate(level_of_token.tolist()) if lv >= 0}
        self._level_id = {lv: i for i, lv in enumerate(level_of_token.tolist()) if lv >= 0}
        self._grade_word_ids = {g: vocab.index[w] for g, w in enumerate(GRADE_WORDS) if w in vocab.index}
        self._and_id = vocab.index.get("and")
        self._header_ids = {i for i, h in enumerate(is_header.tolist()) if h}
        self.grammar: ReportGrammar | None = ReportGrammar(vocab.tokens, self.eos_id)
        self.register_buffer("level_of_token", level_of_token, persistent=False)
        self.register_buffer("is_header", is_header, persistent=False)
        if check_rank(lora_rank, "model.report_lora_rank"):
            add_lora(self.lm, lora_rank, lora_alpha, target_modules=("c_attn", "q_attn"), fan_in_fan_out=True)

    # ------------------------------------------------------------------------------------------------ conditioning
    def condition_grades(self, grade_probs: torch.Tensor, true_grades: torch.Tensor | None = None) -> torch.Tensor:
        """The grades the decoder is told, one-hot ``[B, L, 4]``: the predicted grade (argmax of ``grade_probs``), or
        (training) the true grade with probability :attr:`teacher_ratio` per known level (``true_grades [B, L]``,
        ``-1`` unknown). One-hot, so that the text states the grade the grade head decided."""
        probs = torch.nn.functional.one_hot(grade_probs.detach().argmax(-1), NUM_GRADES).float()
        if self.training and true_grades is not None and self.teacher_ratio > 0:
            true = true_grades.to(probs.device).long()
            use = (torch.rand(true.shape, device=probs.device) < self.teacher_ratio) & (true >= 0)
            onehot = torch.nn.functional.one_hot(true.clamp(min=0), NUM_GRADES).float()
            probs = torch.where(use[..., None], onehot, probs)
        return probs

    def memory(
        self, visual: torch.Tensor | None, visual_mask: torch.Tensor | None, grade_probs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual [B, M, d]``, ``visual_mask [B, M]`` (bool), ``grade_probs [B, L, 4]`` → memory and its mask
        (``visual=None``: the grade tokens only, for the text-only warm-up)."""
        grades = grade_probs @ self.grade_embedding + self.level_embedding  # [B, L, width]
        if visual is None:
            return self.memory_norm(grades), torch.ones(grades.shape[:2], dtype=torch.bool, device=grades.device)
        memory = self.memory_norm(torch.cat([self.memory_proj(visual), grades], dim=1))
        mask = torch.cat([visual_mask, visual_mask.new_ones(grades.shape[:2])], dim=1)
        return memory, mask

    def states(self, ids: torch.Tensor) -> torch.Tensor:
        """State of each position ``[B, T]``: 0 before any level, 1 + level named last, ``L + 1`` in the summary."""
        level = self.level_of_token[ids]  # [B, T], -1 for other tokens
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        last = torch.where(level >= 0, positions, torch.full_like(positions, -1)).cummax(dim=1).values
        state = torch.where(last >= 0, torch.gather(level, 1, last.clamp(min=0)) + 1, torch.zeros_like(ids))
        in_summary = self.is_header[ids].long().cumsum(dim=1) > 0
        return torch.where(in_summary, torch.full_like(state, NUM_STATES - 1), state)

    def state_vectors(self, grade_probs: torch.Tensor) -> torch.Tensor:
        """Conditioning vector of each state ``[B, NUM_STATES, width]`` from the told grades ``[B, L, 4]``."""
        hard = grade_probs.argmax(-1)  # [B, L]
        worst = hard.max(dim=1).values  # [B]
        at_worst = ((hard == worst[:, None]) & (worst[:, None] > 0)).float()  # [B, L]
        summary = torch.nn.functional.one_hot(worst, NUM_GRADES).float() @ self.state_grade
        summary = summary + at_worst @ self.summary_levels
        levels = grade_probs @ self.state_grade  # [B, L, width]
        none = torch.zeros_like(summary)
        return torch.cat([none[:, None], levels, summary[:, None]], dim=1) + self.state_embedding

    def embed(self, ids: torch.Tensor, grade_probs: torch.Tensor) -> torch.Tensor:
        """Token embeddings plus the grade-state vector of each position ``[B, T, width]``."""
        vectors = self.state_vectors(grade_probs)
        state = self.states(ids)
        cond = torch.gather(vectors, 1, state[..., None].expand(-1, -1, vectors.shape[-1]))
        return self.lm.transformer.wte(ids) + cond

    # ------------------------------------------------------------------------------------------------- training
    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        grade_probs: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: logits ``[B, T, vocab]`` and the shifted token CE (padding ignored; 0 without targets)."""
        labels = ids.masked_fill(~mask.bool(), IGNORE_INDEX)
        out = self.lm(
            inputs_embeds=self.embed(ids, grade_probs),
            attention_mask=mask.long(),
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask.long(),
            labels=labels,
        )
        if not bool((labels[:, 1:] != IGNORE_INDEX).any()):  # no target token at all: nothing to learn, loss 0
            return out.logits, out.logits.sum() * 0.0
        return out.logits, out.loss

    # ------------------------------------------------------------------------------------------------- decoding
    def _next_log_probs(
        self,
        ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        grade_probs: torch.Tensor,
        causes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
    ) -> torch.Tensor:
        out = self.lm(
            inputs_embeds=self.embed(ids, grade_probs),
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask.long(),
            use_cache=False,
        )
        logp = out.logits[:, -1].float().log_softmax(-1)
        logp[:, [self.pad_id, self.bos_id]] = -math.inf
        told = grade_probs.argmax(-1).tolist()
        for row, seq in enumerate(ids.tolist()):
            banned = banned_by_ngram(seq, self.no_repeat_ngram) | self.summary_bans(seq, told[row])
            if self.grammar is not None:
                template = self.grammar.constraint(seq[1:], told[row], causes[row] if causes else None)
                grammar = template.ids(logp.shape[1])
                if len(banned | grammar) < logp.shape[1]:  # never ban everything: the n-gram guard then yields
                    banned |= grammar
                elif len(grammar) < logp.shape[1]:
                    banned = grammar
            if banned:
                logp[row, list(banned)] = -math.inf
        return logp

    def summary_bans(self, seq: Sequence[int], told: Sequence[int]) -> set[int]:
        """Tokens banned next in the summary line of ``seq`` (after its last ``Impression:``/``Conclusion:``/...),
        given the grades told per level ``told``: grade words other than the worst told grade's, level names not at
        that grade (all of them when every level is normal) and level names already named there. Constrained decoding:
        the summary then restates the decision the level sentences state. Nothing is banned before a summary header.
        """
        header = max((i for i, t in enumerate(seq) if t in self._header_ids), default=None)
        if header is None:
            return set()
        worst = max(told) if len(told) else 0
        allowed = {self._level_id[level] for level, g in enumerate(told) if g == worst and worst > 0}
        allowed -= set(seq[header:])
        banned = self._level_ids - allowed
        banned |= {i for grade, i in self._grade_word_ids.items() if grade != worst}
        if not allowed and self._and_id is not None:  # every level at the worst grade named: no dangling "and"
            banned.add(self._and_id)
        return banned

    @torch.no_grad()
    def generate(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        grade_probs: torch.Tensor,
        num_beams: int = 1,
        max_length: int | None = None,
        causes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
    ) -> list[str]:
        """Greedy (``num_beams=1``) or beam-search decoding (scores length-normalised), ``max_length`` tokens at most
        (``<bos>``/``<eos>`` included; default and upper bound: :attr:`max_length`). Texts keep their slot tokens.

        Decoding follows the reference template (:class:`~lss_vlm.reports.grammar.ReportGrammar`, unless
        :attr:`grammar` is None): the told grades, and per case the contributing causes ``causes[b]`` (``{level:
        [cause, ...]}`` of :data:`~lss_vlm.reports.writer.CAUSE_PHRASES`; None = any cause, each once)."""
        if causes is not None and len(causes) != memory.shape[0]:
            raise ValueError(f"generate: {len(causes)} cause maps for {memory.shape[0]} cases")
        length = min(max_length or self.max_length, self.max_length)
        b, k = memory.shape[0], max(1, int(num_beams))
        memory = memory.repeat_interleave(k, 0)
        memory_mask = memory_mask.repeat_interleave(k, 0)
        grade_probs = grade_probs.repeat_interleave(k, 0)
        causes = [c for c in causes for _ in range(k)] if causes is not None else None
        ids = torch.full((b * k, 1), self.bos_id, dtype=torch.long, device=memory.device)
        scores = torch.zeros(b, k, device=memory.device)
        scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
        done = torch.zeros(b * k, dtype=torch.bool, device=memory.device)
        for _ in range(length - 1):
            if bool(done.all()):
                break
            logp = self._next_log_probs(ids, memory, memory_mask, grade_probs, causes)
            logp[done] = -math.inf
            logp[done, self.pad_id] = 0.0  # finished beams only pad, at no cost
            total = (scores.reshape(-1, 1) + logp).reshape(b, -1)  # [B, K*V]
            scores, choice = total.topk(k, dim=1)
            beam = choice // logp.shape[1] + torch.arange(b, device=ids.device)[:, None] * k
            token = choice % logp.shape[1]
            ids = torch.cat([ids[beam.reshape(-1)], token.reshape(-1, 1)], dim=1)
            done = done[beam.reshape(-1)] | (token.reshape(-1) == self.eos_id)
        lengths = ((ids != self.pad_id).sum(1) - 1).clamp(min=1).reshape(b, k).float()
        best = (scores / lengths).argmax(1) + torch.arange(b, device=ids.device) * k
        return [self.vocab.decode(seq) for seq in ids[best].tolist()]
