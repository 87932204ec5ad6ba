"""Network definitions (one family per module), the registry and weight loading.

Families: ``cdinn2d`` (CDI NN), ``cdinn3d`` (3D-CDI-NN), ``autophasenn`` (AutoPhaseNN),
``cnn3d-tl`` (3D CNN with transfer learning).
"""

from cdinn.models import autophasenn, cdinn2d, cdinn3d, cnn3d_tl  # noqa: F401  (registration)
from cdinn.models.base import CDIModel
from cdinn.models.registry import build, families, load_model, shipped_models

__all__ = ["CDIModel", "build", "families", "load_model", "shipped_models"]
