"""Classical phase retrieval: projections, ER/HIO/RAAR/DM, recipes, the batched engine."""

from cdinn.retrieval.algorithms import difference_map, error_reduction, hybrid_input_output, raar
from cdinn.retrieval.engine import phase_retrieval, phase_stack, resolve_device
from cdinn.retrieval.projections import FourierProjector, Support, support_projection
from cdinn.retrieval.recipe import DEFAULT_RECIPE, RecipeError, Step, parse_recipe

__all__ = [
    "DEFAULT_RECIPE",
    "FourierProjector",
    "Support",
    "RecipeError",
    "Step",
    "difference_map",
    "error_reduction",
    "hybrid_input_output",
    "parse_recipe",
    "phase_retrieval",
    "phase_stack",
    "raar",
    "resolve_device",
    "support_projection",
]
