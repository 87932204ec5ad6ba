"""Figures and reports of reconstructions."""

from cdinn.report.figures import comparison_figure

__all__ = ["comparison_figure"]
