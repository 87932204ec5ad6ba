"""The inversion pipeline: preprocess -> predict -> postprocess -> refine -> result."""

from cdinn.pipeline.invert import Refinement, invert, parse_refinement, predict
from cdinn.pipeline.network_refine import fine_tune, weibull_beta
from cdinn.pipeline.sampling import GridTransform, to_input_grid, to_model_grid

__all__ = ["GridTransform", "Refinement", "fine_tune", "invert", "parse_refinement", "predict", "to_input_grid", "to_model_grid", "weibull_beta"]
