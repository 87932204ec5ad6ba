"""cdinn: coherent diffraction imaging inversion.

Classical phase retrieval and physics-aware neural networks that turn coherent X-ray
diffraction patterns (2D CDI, 3D Bragg CDI) into complex real-space images.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cdinn")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
