"""The inversion pipeline: preprocess -> predict -> postprocess -> refine -> result."""

from cdinn.pipeline.inversion import DEFAULT_REFINE, NetworkRefiner, invert, invert_many, invert_stack, predict, refinement_recipe
from cdinn.pipeline.network_refine import fine_tune, weibull_beta
from cdinn.pipeline.sampling import GridTransform, mask_to_model_grid, to_input_grid, to_model_grid

__all__ = ["DEFAULT_REFINE", "GridTransform", "NetworkRefiner", "fine_tune", "invert", "invert_many", "invert_stack", "mask_to_model_grid", "predict",
           "refinement_recipe", "to_input_grid", "to_model_grid", "weibull_beta"]
