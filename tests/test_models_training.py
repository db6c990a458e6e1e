"""A short CPU training run must bring the segmentation and report losses down (the model can learn)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lss_vlm.constants import LABEL_INDEX, NUM_LEVELS, NUM_VIEWS
from lss_vlm.models import build_model
from lss_vlm.reports.writer import write_reports


def synthetic_cases(n: int, size: int, seed: int = 0) -> dict:
    """Views with a disc-shaped 'thecal sac' and a box 'vertebral body' at random places; reports from grades."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, NUM_VIEWS, size, size), dtype=np.int64)
    for case in range(n):
        for view in range(NUM_VIEWS):
            cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(4, size // 6))]
            top, left = rng.integers(0, size // 2, 2)
            masks[case, view, top : top + size // 4, left : left + size // 3] = LABEL_INDEX["vertebral_body"]
            masks[case, view][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = LABEL_INDEX["thecal_sac"]
    intensity = np.array([0.0, 0.6, 0.3, 1.0, 0.4, 0.2], dtype=np.float32)
    views = intensity[masks] + 0.1 * rng.standard_normal(masks.shape).astype(np.float32)
    grades = rng.integers(0, 4, (n, NUM_LEVELS))
    reports = [write_reports(g.tolist(), rng=rng, n=1)[0] for g in grades]
    return {"views": torch.from_numpy(views)[:, :, None], "masks": torch.from_numpy(masks), "reports": reports}


def losses(model: nn.Module, batch: dict, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(batch["views"], ids, mask)
    seg = nn.functional.cross_entropy(out["seg_logits"].flatten(0, 1), batch["masks"].flatten(0, 1))
    return seg, out["report_loss"]


def test_short_training_reduces_segmentation_and_report_losses() -> None:
    torch.manual_seed(0)
    data = synthetic_cases(2, 48)
    model = build_model("spca_vlm", text_encoder="tiny-bert", report_max_length=96)
    ids, mask = model.tokenize_reports(data["reports"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.eval()
    with torch.no_grad():
        seg_before, report_before = losses(model, data, ids, mask)
    model.train()
    for _ in range(20):
        seg, report = losses(model, data, ids, mask)
        optimizer.zero_grad()
        (seg + report).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        seg_after, report_after = losses(model, data, ids, mask)
    assert seg_after < 0.5 * seg_before, (seg_before, seg_after)
    assert report_after < 0.5 * report_before, (report_before, report_after)
