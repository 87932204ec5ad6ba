"""Resampling a measured pattern to fewer (or more) pixels over a chosen reciprocal-space range.

Two methods, both preserving the total count (each new pixel holds the counts of the area it
covers):

- ``fourier`` — the autocorrelation (inverse transform of the intensity) is cropped or
  zero-padded in real space. Exact for a compact object while the target oversampling is at
  least 2, since the whole autocorrelation is then kept (AutoPhaseNN, cohere).
- ``dct`` — block-wise discrete cosine transform scaling, as 3D-CDI-NN prepares its
  experimental input (DCT → cropping → inverse DCT on blocks): the pattern is cut into blocks
  of ``B`` pixels, each block's DCT is cropped (or zero-padded) to ``b`` coefficients and
  transformed back with ``b`` pixels. It is local — a masked region or an outlier only affects
  its own block — at the price of block-edge artefacts and a factor ``B/b`` quantised in steps
  of ``1/b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cdinn.errors import InputError
from cdinn.physics import fourier_resample as band_limited

METHODS = ("fourier", "dct")
DCT_BLOCK = 8  # output pixels per block and axis, as in JPEG-domain resizing


def resample_pattern(intensity: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a centred pattern to ``shape`` pixels over the same reciprocal-space range (``fourier``)."""
    pattern = torch.from_numpy(np.ascontiguousarray(intensity, dtype=np.float32))
    out = band_limited(pattern, shape, reciprocal=True).real.clamp_min(0).numpy()
    return _keep_total(out, intensity)


def bin_pattern(data: np.ndarray, mask: np.ndarray | None, factors: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``factors`` pixels per axis into one: the project's one binning, mask-aware.

    Partly masked blocks are rescaled to full counts (the measured pixels' mean times the
    block size); a block is masked when less than half of it was measured. Pixels that do not
    fill a block are dropped evenly from both ends, so that a pattern centred at index
    ``n // 2`` stays centred (the convention of :func:`cdinn.physics.fourier.crop_to`).

    Parameters
    ----------
    data : pattern (counts)
    mask : True where a pixel was not measured, or None (all measured)
    factors : integer binning per axis

    Returns
    -------
    (binned float32 counts, binned mask)
    """
    data = np.asarray(data)
    mask = np.zeros(data.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    f = tuple(int(b) for b in factors)
    if len(f) != data.ndim or min(f) < 1:
        raise InputError(f"binning {tuple(factors)}: need {data.ndim} positive integers")
    if all(b == 1 for b in f):
        return data, mask
    shape = tuple(n // b for n, b in zip(data.shape, f))
    if min(shape) < 4:
        raise InputError(f"binning {f} of a pattern of shape {data.shape} leaves shape {shape}; use a smaller --bin")
    cut = tuple(slice(n // 2 - k * b // 2, n // 2 - k * b // 2 + k * b) for n, k, b in zip(data.shape, shape, f))
    blocks = tuple(x for n, b in zip(shape, f) for x in (n, b))
    axes = tuple(range(1, 2 * len(f), 2))
    good = (~mask[cut]).reshape(blocks).sum(axis=axes)
    counts = np.where(mask, 0, data)[cut].reshape(blocks).sum(axis=axes)
    full = int(np.prod(f))
    binned = np.where(good > 0, counts * full / np.maximum(good, 1), 0.0)
    return binned.astype(np.float32), good < full / 2


def dct_blocks(n: int) -> int:
    """Number of blocks along an output axis of ``n`` pixels: blocks of at most :data:`DCT_BLOCK` pixels."""
    b = max(d for d in range(1, min(DCT_BLOCK, n) + 1) if n % d == 0)
    return n // b


def block_dct_resample(intensity: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a pattern to ``shape`` by block-wise DCT scaling (``dct``).

    Parameters
    ----------
    intensity : 2D/3D pattern; along each axis its length must be a multiple of the number of
        blocks :func:`dct_blocks` gives for the output length there
    shape : output shape

    Returns
    -------
    float32 array of ``shape``, non-negative, with the input's total count
    """
    data = np.asarray(intensity, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    if len(shape) != data.ndim:
        raise InputError(f"shape {shape} has {len(shape)} axes, the pattern {data.ndim}")
    blocks = [dct_blocks(n) for n in shape]
    if any(m % k for m, k in zip(data.shape, blocks)):
        raise InputError(f"pattern shape {data.shape} is not a whole number of DCT blocks {tuple(blocks)}")
    big = [m // k for m, k in zip(data.shape, blocks)]
    small = [n // k for n, k in zip(shape, blocks)]
    split = tuple(x for k, s in zip(blocks, big) for x in (k, s))
    inner = tuple(range(1, 2 * data.ndim, 2))
    from scipy.fft import dctn, idctn  # imported on use, like scipy.ndimage below: start-up of phase / invert

    coeffs = dctn(data.reshape(split), axes=inner, norm="ortho")
    out = idctn(coeffs, s=small, axes=inner, norm="ortho")
    out = np.clip(out.reshape(shape), 0, None)
    return _keep_total(out, data)


def resample_mask(mask: np.ndarray, factors: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """The mask of a resampled pattern: a new pixel is unmeasured if any measured pixel it covers was."""
    if not mask.any():
        return np.zeros(tuple(shape), dtype=bool)
    from scipy.ndimage import maximum_filter

    grown = maximum_filter(mask, size=tuple(max(1, int(np.ceil(f))) for f in factors))
    idx = np.ix_(*[np.clip(np.round(m // 2 + (np.arange(n) - n // 2) * f).astype(int), 0, m - 1) for m, n, f in zip(mask.shape, shape, factors)])
    return grown[idx]


def _keep_total(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    total = float(out.sum())
    return (out * (float(np.sum(reference, dtype=np.float64)) / total if total > 0 else 0.0)).astype(np.float32)
