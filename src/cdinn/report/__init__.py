"""Figures and reports of reconstructions."""

from cdinn.report.figures import comparison_figure, stack_figure
from cdinn.report.strain_report import Crystal, analyse, strain_figure
from cdinn.report.vtk import write_vti

__all__ = ["Crystal", "analyse", "comparison_figure", "stack_figure", "strain_figure", "write_vti"]
