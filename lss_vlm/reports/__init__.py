"""Report writing (reference reports from labels) and the explainable report composer."""

from .writer import write_reports

__all__ = ["write_reports"]
