"""Benchmark metrics: segmentation (Dice, IoU, HD95, MSD, area), stenosis grades, and report text."""

from .classification import GradeMetrics
from .segmentation import SegmentationMetrics
from .text import extract_grades, grade_f1_from_text, score_reports

__all__ = ["GradeMetrics", "SegmentationMetrics", "extract_grades", "grade_f1_from_text", "score_reports"]
