"""Training the instruction FiLM (:mod:`lss_vlm.models.instruct`): random truthful instructions from the ground truth.

An untrained FiLM is the identity, so an instruction does nothing until the layer has learnt what the words mean.
With ``model.params.instruct_film: true`` every training step adds, per view with a mask::

    c, d  = a foreground class whose predicted area (argmax of the detached logits of the same forward pass) differs
            from its true area by more than MIN_RELATIVE_ERROR, drawn uniformly; d = sign(true area − predicted area)
    text  = instruction_text(c, d, level of the axial view or none, random word)  e.g. "the thecal sac at L3-L4 is
            smaller than predicted"
    term  = BCE_c + (1 − softDice_c) of p_c = softmax(head(FiLM(features, e(text))))_c against truth == c
          + mean over s ∈ {text, opposite} of max(0, m − d_s·(A_s − A)/(A + 1))   opposite: the same sentence with
            "larger" ↔ "smaller", d_s its stated direction; A_s, A the soft areas Σ p_c with and without the
            sentence; m = DIRECTION_MARGIN

weighted by ``model.params.instruct_weight``. The truthful instruction is paired with the true mask; trained on that
alone, the layer learnt "class c is named → correct c towards the truth" and ignored the direction word (measured: a
false instruction moved the area as stated in 4–9 % of cases, with the same Dice gain as a true one). The hinge on both
sentences makes the word decide the sign: "larger" must grow c and "smaller" shrink it on the same image, so a shift
read from the image alone can satisfy only one of the two (a hinge on the opposite sentence alone taught the reverse
shortcut: move away from the truth whatever the word). The decoder features come from the same forward pass (extra 3×3
heads, no second encoder pass). Only class c is supervised (see :func:`class_loss`), and the term does not call the
loss under test, so a stateful loss (the PID controller) is not stepped twice per step. Draws use torch's global RNG,
which the trainer re-seeds every epoch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..constants import IGNORE_LABEL, LABELS, LEVELS, NUM_LABELS, VIEWS
from ..models.instruct import DIRECTION_WORDS, instruction_text

#: A class is instructed about only when its predicted area is off by more than this share of its true area.
MIN_RELATIVE_ERROR = 0.05
#: The counterfactual instruction must move the class's soft area by at least this share, in its stated direction.
DIRECTION_MARGIN = 0.1
_LEVEL_OF_VIEW: dict[int, str] = {len(VIEWS) - len(LEVELS) + i: level for i, level in enumerate(LEVELS)}


def truthful_direction(pred_area: float, true_area: float) -> int:
    """+1 when the class is under-predicted, -1 when over-predicted, 0 when within :data:`MIN_RELATIVE_ERROR`."""
    error = (true_area - pred_area) / max(true_area, 1.0)
    return 0 if abs(error) <= MIN_RELATIVE_ERROR else (1 if error > 0 else -1)


class DrawnInstruction(NamedTuple):
    """One image's training instruction: its class index, the truthful sentence, the same sentence with the opposite
    direction word, and the truthful direction (+1 the class is under-predicted, -1 over-predicted)."""

    cls: int
    text: str
    opposite: str
    direction: int


def draw_instructions(pred: torch.Tensor, target: torch.Tensor, views: list[int]) -> list[DrawnInstruction | None]:
    """Per image, a :class:`DrawnInstruction` or None (no class is off): see the module docstring.

    ``pred``, ``target``: labels ``[N, H, W]``; ``views``: the view index of each image (its level names the text).
    """
    chosen: list[DrawnInstruction | None] = []
    for n in range(pred.shape[0]):
        valid = target[n] != IGNORE_LABEL
        options = []
        for c in range(1, NUM_LABELS):
            d = truthful_direction(float(((pred[n] == c) & valid).sum()), float((target[n] == c).sum()))
            if d:
                options.append((c, d))
        if not options:
            chosen.append(None)
            continue
        c, d = options[int(torch.randint(len(options), ()))]
        word = int(torch.randint(len(DIRECTION_WORDS[d]), ()))
        level = _LEVEL_OF_VIEW.get(views[n])
        truthful, opposite = (instruction_text(LABELS[c], sign, level, word) for sign in (d, -d))
        chosen.append(DrawnInstruction(c, truthful, opposite, d))
    return chosen


def instruction_term(model: nn.Module, out: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
    """The weighted instruction term of one training batch (a zero tensor when the model has no trained FiLM
    switch, no view has a mask, or no class is off). ``out``: the model's forward output with ``seg_features``."""
    film = getattr(model, "instruction", None)
    zero = out["seg_logits"].new_zeros(())
    if film is None or film.weight == 0 or "seg_features" not in out:
        return zero
    valid = batch["mask_valid"]
    if not bool(valid.any()):
        return zero
    features, target = out["seg_features"][valid], batch["masks"][valid]
    pred = out["seg_logits"][valid].detach().argmax(dim=1)
    views = torch.nonzero(valid, as_tuple=True)[1].tolist()
    drawn = draw_instructions(pred, target, views)
    keep = [i for i, d in enumerate(drawn) if d is not None]
    if not keep:
        return zero
    chosen = [drawn[i] for i in keep]
    texts = [d.text for d in chosen] + [d.opposite for d in chosen]
    classes = torch.tensor([d.cls for d in chosen], device=features.device)
    direction = torch.tensor([d.direction for d in chosen], device=features.device)
    embedding = film.embed(model.text, texts).to(features.device)
    n = len(keep)
    logits = film.head_logits(model.seg_decoder, features[keep].repeat(2, 1, 1, 1), embedding).float()
    plain = out["seg_logits"][valid][keep].detach().float().repeat(2, 1, 1, 1)
    truth, both = target[keep].repeat(2, 1, 1), classes.repeat(2)
    stated = torch.cat([direction, -direction])  # both sentences: an image-only shift can satisfy at most one hinge
    term = class_loss(logits[:n], target[keep], classes) + direction_loss(logits, plain, truth, both, stated)
    return film.weight * term


def direction_loss(
    logits: torch.Tensor, plain: torch.Tensor, truth: torch.Tensor, classes: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """Hinge max(0, m − d·(A' − A)/(A + 1)), mean over images: A' and A are the soft areas Σ p_c of each image's class
    c over non-ignored pixels under the instructed ``logits`` and the uninstructed ``plain`` logits (``[N, C, H, W]``),
    ``direction [N]`` = ±1 the stated direction, m = :data:`DIRECTION_MARGIN`. ``truth [N, H, W]`` marks the ignored
    pixels only. Zero once the instruction moves the area by ≥ m in its stated direction."""
    valid = (truth != IGNORE_LABEL).float()
    index = classes[:, None, None, None].expand(-1, 1, *logits.shape[2:])
    area = (logits.softmax(1).gather(1, index)[:, 0] * valid).flatten(1).sum(1)
    before = (plain.softmax(1).gather(1, index)[:, 0] * valid).flatten(1).sum(1)
    return torch.relu(DIRECTION_MARGIN - direction.float() * (area - before) / (before + 1.0)).mean()


def class_loss(logits: torch.Tensor, truth: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Binary CE + (1 − soft Dice) of each image's instructed class only, mean over images: ``logits [N, C, H, W]``
    (softmax over C gives p_c), ``truth [N, H, W]``, ``classes [N]``; ignored pixels left out.

    Only the instructed class is supervised, so the gradient carries the instruction's direction: "larger c" on an
    under-predicted c raises p_c on its missed pixels, "smaller c" lowers it on the false ones. (A whole-image CE here
    taught a text-independent correction instead: in a test, "larger" and "smaller" then moved a class the same way.)
    """
    valid = (truth != IGNORE_LABEL).float()
    index = classes[:, None, None, None].expand(-1, 1, *logits.shape[2:])
    log_p = logits.log_softmax(dim=1).gather(1, index)[:, 0]
    prob = log_p.exp()
    hit = (truth == classes[:, None, None]).float()
    log_not = torch.log1p(-prob.clamp(max=1.0 - 1e-6))
    bce = -((hit * log_p + (1.0 - hit) * log_not) * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    inter = (prob * hit * valid).flatten(1).sum(1)
    total = ((prob + hit) * valid).flatten(1).sum(1)
    return (bce + 1.0 - (2 * inter + 1.0) / (total + 1.0)).mean()
