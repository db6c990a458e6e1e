"""Training the instruction FiLM (:mod:`lss_vlm.models.instruct`): random truthful instructions from the ground truth.

An untrained FiLM is the identity, so an instruction does nothing until the layer has learnt what the words mean.
With ``model.params.instruct_film: true`` every training step adds, per view with a mask::

    c, d  = a foreground class whose predicted area (argmax of the detached logits of the same forward pass) differs
            from its true area by more than MIN_RELATIVE_ERROR, drawn uniformly; d = sign(true area − predicted area)
    text  = instruction_text(c, d, level of the axial view or none, random word)  e.g. "the thecal sac at L3-L4 is
            smaller than predicted"
    term  = BCE_c + (1 − softDice_c) of p_c = softmax(head(FiLM(features, e(text))))_c against truth == c

weighted by ``model.params.instruct_weight``. The instruction is paired with the true mask, so the layer learns
"larger" → grow class c, "smaller" → shrink it; the decoder features come from the same forward pass (one extra
3×3 head, no second encoder pass). Only class c is supervised (see :func:`class_loss`: that
is what makes the words matter), and the term does not call the loss under test, so a stateful loss (the PID
controller) is not stepped twice per step. Draws use torch's global RNG, which the trainer re-seeds every epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..constants import IGNORE_LABEL, LABELS, LEVELS, NUM_LABELS, VIEWS
from ..models.instruct import DIRECTION_WORDS, instruction_text

#: A class is instructed about only when its predicted area is off by more than this share of its true area.
MIN_RELATIVE_ERROR = 0.05
_LEVEL_OF_VIEW: dict[int, str] = {len(VIEWS) - len(LEVELS) + i: level for i, level in enumerate(LEVELS)}


def truthful_direction(pred_area: float, true_area: float) -> int:
    """+1 when the class is under-predicted, -1 when over-predicted, 0 when within :data:`MIN_RELATIVE_ERROR`."""
    error = (true_area - pred_area) / max(true_area, 1.0)
    return 0 if abs(error) <= MIN_RELATIVE_ERROR else (1 if error > 0 else -1)


def draw_instructions(pred: torch.Tensor, target: torch.Tensor, views: list[int]) -> list[tuple[int, str] | None]:
    """Per image, ``(class index, instruction text)`` or None (no class is off): see the module docstring.

    ``pred``, ``target``: labels ``[N, H, W]``; ``views``: the view index of each image (its level names the text).
    """
    chosen: list[tuple[int, str] | None] = []
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
        chosen.append((c, instruction_text(LABELS[c], d, _LEVEL_OF_VIEW.get(views[n]), word)))
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
    texts = [drawn[i][1] for i in keep]
    classes = torch.tensor([drawn[i][0] for i in keep], device=features.device)
    embedding = film.embed(model.text, texts).to(features.device)
    logits = film.head_logits(model.seg_decoder, features[keep], embedding).float()
    return film.weight * class_loss(logits, target[keep], classes)


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
