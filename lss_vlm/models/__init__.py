"""Models of the benchmark: the SPCA vision-language model and its baselines, built by name.

>>> model = build_model("spca_vlm", text_encoder="tiny-bert")
>>> out = model(views)  # views [B, 7, 1, H, W] -> seg_logits, grade_logits, attention (+ report_* with report_ids)
"""

from .registry import DEFAULT_MODEL, MODELS, available_models, build_model, count_parameters

__all__ = ["DEFAULT_MODEL", "MODELS", "available_models", "build_model", "count_parameters"]
