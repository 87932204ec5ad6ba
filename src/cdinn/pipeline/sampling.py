"""Moving between a measured pattern's grid and a network's grid.

A centred crop of a pattern keeps its oversampling and coarsens the real-space pixel (as
3D-CDI-NN's down-sampling does); integer binning lowers the oversampling at the same
real-space pixel. The transform is recorded so that a prediction can be mapped back onto the
measured grid by Fourier interpolation (a zero-padded spectrum, through the one forward model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cdinn.errors import InputError
from cdinn.physics.fourier import crop_to, fourier_resample, pad_to


@dataclass
class GridTransform:
    """How a pattern was brought to a model's input grid.

    Attributes
    ----------
    input_shape : shape of the measured pattern
    binned_shape : shape after integer binning (``bin`` per axis)
    model_shape : the network's input shape (after crop or zero-padding)
    bin : binning factor per axis (1 = none)
    """

    input_shape: tuple[int, ...]
    binned_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    bin: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def to_model_grid(
    intensity: torch.Tensor, model_size: int, bin_factor: int = 1, ndim: int | None = None
) -> tuple[torch.Tensor, GridTransform]:
    """Bin by ``bin_factor`` then centre-crop (or zero-pad) a pattern to ``model_size`` per axis.

    Parameters
    ----------
    intensity : tensor ``(*spatial)`` or ``(B, *spatial)``
    model_size : the network's input size per axis
    bin_factor : integer binning applied first (sums counts)
    ndim : number of spatial axes (default: all axes of ``intensity``)
    """
    ndim = intensity.ndim if ndim is None else ndim
    shape = tuple(intensity.shape[-ndim:])
    x = intensity
    if bin_factor > 1:
        usable = tuple(n // bin_factor * bin_factor for n in shape)
        x = crop_to(x, usable)
        lead = x.shape[:-ndim]
        view = lead + sum(((n // bin_factor, bin_factor) for n in usable), ())
        x = x.reshape(view).sum(dim=tuple(range(len(lead) + 1, len(view), 2)))
    binned = tuple(x.shape[-ndim:])
    target = (model_size,) * ndim
    cropped = crop_to(x, tuple(min(b, t) for b, t in zip(binned, target)))
    out = pad_to(cropped, target)
    return out, GridTransform(shape, binned, target, (bin_factor,) * ndim)


def to_input_grid(obj: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """Map a predicted object ``(*out)`` from the model's grid back onto the measured grid.

    The model grid's real-space pixel is ``binned_shape / model_shape`` times the binned
    grid's, and binning does not change the pixel; the object is Fourier-resampled by that
    ratio and zero-padded (or cropped) to the measured pattern's shape.
    """
    ndim = len(transform.input_shape)
    out_shape = tuple(obj.shape[-ndim:])
    up = tuple(max(1, int(round(o * b / m))) for o, b, m in zip(out_shape, transform.binned_shape, transform.model_shape))
    resampled = fourier_resample(obj, up, ndim)
    target = transform.input_shape
    return pad_to(crop_to(resampled, tuple(min(r, t) for r, t in zip(up, target))), target)


def check_dimensionality(pattern_ndim: int, model_ndim: int, name: str) -> None:
    """A 2D model cannot invert a 3D pattern and vice versa."""
    if pattern_ndim != model_ndim:
        raise InputError(f"model {name!r} is {model_ndim}D but the pattern is {pattern_ndim}D")
