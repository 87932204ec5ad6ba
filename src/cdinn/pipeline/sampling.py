"""Moving between a measured pattern's grid and a network's grid.

A centred crop of a pattern keeps its oversampling and coarsens the real-space pixel (as
3D-CDI-NN's down-sampling does); integer binning, or Fourier resampling to fewer (more)
pixels over the same q-range, lowers (raises) the oversampling at the same real-space pixel.
A network is only trusted at the oversampling it was trained on: when its card records that
range, a pattern outside it is resampled to the nearest bound first, so there is no silent
distribution shift. The transform is recorded so that a prediction can be mapped back onto the
measured grid by Fourier interpolation (a zero-padded spectrum, through the one forward model).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

import numpy as np

from cdinn.errors import InputError
from cdinn.physics.fourier import crop_to, fit_to, fourier_resample, pad_to
from cdinn.physics.support import estimate_oversampling
from cdinn.prepare.resample import bin_pattern, resample_mask, resample_pattern


@dataclass(frozen=True)
class GridTransform:
    """How a pattern was brought to a model's input grid.

    Attributes
    ----------
    input_shape : shape of the measured pattern
    resampled_shape : shape after integer binning (``binning`` per axis) and resampling to the
        model's oversampling, over the measured q-range
    model_shape : the network's input shape (after crop or zero-padding)
    binning : integer binning per axis (1 = none)
    oversampling_measured : estimated oversampling per axis of the (binned) pattern, when the
        model's range was known (:func:`cdinn.physics.support.estimate_oversampling` units)
    oversampling_model : the oversampling per axis the pattern was brought to
    """

    input_shape: tuple[int, ...]
    resampled_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    binning: tuple[int, ...]
    oversampling_measured: tuple[float, ...] | None = None
    oversampling_model: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        """The transform as plain data, for a result's provenance."""
        # fields are flat tuples: asdict's recursive deep copy cost 0.2 ms per pattern of a stack
        return {f.name: getattr(self, f.name) for f in fields(self)}


def to_model_grid(
    intensity: torch.Tensor,
    model_size: int,
    binning: int = 1,
    ndim: int | None = None,
    oversampling: tuple[float, float] | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, GridTransform]:
    """Bin, resample to the model's oversampling, then centre-crop (or zero-pad) to ``model_size``.

    Parameters
    ----------
    intensity : tensor ``(*spatial)`` or ``(B, *spatial)`` (a batch shares one transform,
        estimated on its summed pattern)
    model_size : the network's input size per axis
    binning : integer binning applied first (:func:`cdinn.prepare.bin_pattern`: sums counts,
        partly masked blocks rescaled)
    ndim : number of spatial axes (default: all axes of ``intensity``)
    oversampling : ``(lo, hi)`` the model was trained on (its card's ``oversampling_range``);
        an axis whose estimated oversampling lies outside is Fourier-resampled to the nearest
        bound (counts kept). ``None``: no resampling.
    mask : non-zero where a pixel was not measured, shaped like ``intensity`` (or its spatial
        axes); the binning and the oversampling estimate honour it.
        :func:`mask_to_model_grid` carries the mask itself.
    """
    ndim = intensity.ndim if ndim is None else ndim
    shape = tuple(intensity.shape[-ndim:])
    x = intensity
    unmeasured = None if mask is None else mask.to(torch.bool)
    if binning > 1:
        binned, binned_mask = _binned(x, mask, binning, ndim)
        x = torch.from_numpy(binned).to(intensity.device)
        unmeasured = None if mask is None else torch.from_numpy(binned_mask).to(intensity.device)
    measured = model_os = None
    if oversampling is not None:
        lead = x.shape[:-ndim]
        total = x.reshape((-1,) + tuple(x.shape[-ndim:])).sum(dim=0)
        hole = None if unmeasured is None else unmeasured.reshape((-1,) + tuple(x.shape[-ndim:])).any(dim=0)
        measured = tuple(round(v, 3) for v in estimate_oversampling(total, ndim=ndim, mask=hole))
        model_os = tuple(float(np.clip(v, *oversampling)) for v in measured)
        new = tuple(max(8, int(round(n * t / m))) for n, t, m in zip(x.shape[-ndim:], model_os, measured))
        if new != tuple(x.shape[-ndim:]):
            flat = x.reshape((-1,) + tuple(x.shape[-ndim:])).cpu().numpy()
            x = torch.from_numpy(np.stack([resample_pattern(p, new) for p in flat])).reshape(lead + new).to(intensity.device)
    resampled = tuple(x.shape[-ndim:])
    target = (model_size,) * ndim
    return fit_to(x, target), GridTransform(shape, resampled, target, (binning,) * ndim, measured, model_os)


def to_input_grid(obj: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """Map a predicted object ``(*out)`` from the model's grid back onto the measured grid.

    The model grid's real-space pixel is ``resampled_shape / model_shape`` times the measured
    grid's (binning and resampling over the same q-range do not change the pixel); the object
    is Fourier-resampled by that ratio and zero-padded (or cropped) to the measured pattern's
    shape.
    """
    ndim = len(transform.input_shape)
    out_shape = tuple(obj.shape[-ndim:])
    up = tuple(max(1, int(round(o * b / m))) for o, b, m in zip(out_shape, transform.resampled_shape, transform.model_shape))
    resampled = fourier_resample(obj, up, ndim)
    target = transform.input_shape
    return fit_to(resampled, target)


def _binned(x: torch.Tensor, mask: torch.Tensor | None, factor: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cdinn.prepare.bin_pattern` over the leading (batch) axes of ``x``."""
    lead = tuple(x.shape[:-ndim])
    flat = x.reshape((-1,) + tuple(x.shape[-ndim:])).cpu().numpy()
    masks = [None] * len(flat) if mask is None else np.broadcast_to(mask.to(torch.bool).cpu().numpy(), x.shape).reshape(flat.shape)
    pairs = [bin_pattern(p, m, (factor,) * ndim) for p, m in zip(flat, masks)]
    data, masks = (np.stack(parts) for parts in zip(*pairs))
    return data.reshape(lead + data.shape[1:]), masks.reshape(lead + masks.shape[1:])


def check_dimensionality(pattern_ndim: int, model_ndim: int, name: str) -> None:
    """A 2D model cannot invert a 3D pattern and vice versa."""
    if pattern_ndim != model_ndim:
        raise InputError(f"model {name!r} is {model_ndim}D but the pattern is {pattern_ndim}D")


def mask_to_model_grid(mask: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """A mask (non-zero = unmeasured) carried through ``transform`` like its pattern.

    A model-grid pixel is unmeasured if any measured-grid pixel it gathers was (binning, then
    resampling); pixels that zero-padding adds beyond the detector were never measured.
    """
    ndim = len(transform.input_shape)
    m = mask.to(torch.bool)
    lead = m.shape[:-ndim]
    flat = m.reshape((-1,) + tuple(m.shape[-ndim:])).cpu().numpy()
    binning = transform.binning[0]
    if binning > 1:
        binned = _binned(m, m, binning, ndim)[1]
        flat = binned.reshape((-1,) + binned.shape[-ndim:])
    out = []
    for one in flat:
        if tuple(one.shape) != transform.resampled_shape:
            factors = [a / b for a, b in zip(one.shape, transform.resampled_shape)]
            one = resample_mask(one, factors, transform.resampled_shape)
        out.append(one)
    m = torch.from_numpy(np.stack(out)).reshape(lead + transform.resampled_shape).to(mask.device)
    measured = ~crop_to(m, tuple(min(r, t) for r, t in zip(transform.resampled_shape, transform.model_shape)))
    return ~pad_to(measured, transform.model_shape).to(torch.bool)
