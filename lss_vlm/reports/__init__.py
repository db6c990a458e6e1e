"""Report writing (reference reports from labels) and the explainable report composer."""

from .composer import ComposedReport, compose_report
from .writer import write_reports

__all__ = ["ComposedReport", "compose_report", "write_reports"]
