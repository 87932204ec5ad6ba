"""Augmentations of simulated objects: right-angle rotations, flips, oversampling variants.

They act on the real-space target (amplitude, phase, support) before diffraction, so the
pattern is always computed from the object actually stored.
"""

from __future__ import annotations

import numpy as np
import torch

from cdinn.physics.fourier import fourier_resample as band_limited, pad_to
from cdinn.simulate.sample import Sample


def random_symmetry(sample: Sample, rng: np.random.Generator) -> Sample:
    """Apply a random element of the square/cube symmetry group (rotations by 90° and flips).

    The operations are exact permutations of pixels about the array centre (index ``n // 2``)
    after a one-pixel roll for even sizes, so no interpolation touches the target.
    """
    ndim = sample.amplitude.ndim
    perm = tuple(rng.permutation(ndim))
    flips = tuple(int(a) for a in np.flatnonzero(rng.integers(0, 2, ndim)))

    def op(x: np.ndarray) -> np.ndarray:
        y = np.flip(np.transpose(x, perm), axis=flips) if flips else np.transpose(x, perm)
        # Flipping maps index n//2 to (n-1) - n//2; for even n roll it back onto the centre.
        shift = tuple(1 if y.shape[a] % 2 == 0 else 0 for a in flips)
        return np.ascontiguousarray(np.roll(y, shift, axis=flips) if flips else y)

    # Recorded as numbers (dataset columns): the axis order as digits, the flipped axes as bits.
    params = dict(sample.params, sym_perm=float("".join(map(str, perm))), sym_flips=float(sum(1 << a for a in flips)))
    return Sample(op(sample.amplitude), op(sample.phase), op(sample.support), params)


def shrink_sample(sample: Sample, factor: float) -> Sample:
    """Shrink the object by ``factor`` (<= 1) by Fourier resampling, keeping its grid size.

    The object's spectrum is cropped to ``round(n * factor)`` pixels per axis and transformed
    back: the same particle sampled with coarser pixels, i.e. what a detector covering a
    smaller q-range sees. Padded back to ``n``, its pattern is oversampled ``1 / factor``
    times more than the original's. The phase stays unwrapped: the phase of the resampled
    object is unwrapped against the Fourier-resampled phase field itself.

    Parameters
    ----------
    sample : Sample
        Object on an ``n``-sided grid.
    factor : float
        Linear scale in ``(0, 1]``.

    Returns
    -------
    Sample
        Amplitude renormalised to a maximum of 1 (the band limit makes it ring slightly),
        support where the amplitude is at least 0.5, phase zero outside it.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"resampling factor must be in (0, 1], got {factor}")
    shape = sample.amplitude.shape
    small = tuple(max(2, int(round(s * factor))) for s in shape)
    if small == shape:
        return Sample(sample.amplitude, sample.phase, sample.support, dict(sample.params, resample=1.0))

    def shrink(x: np.ndarray) -> torch.Tensor:
        return pad_to(band_limited(torch.from_numpy(np.ascontiguousarray(x)), small), shape)

    obj = shrink(sample.object.astype(np.complex128))
    smooth_phase = shrink(sample.phase.astype(np.float64)).real
    amplitude = obj.abs()
    amplitude = amplitude / amplitude.max()
    support = amplitude >= 0.5
    phase = smooth_phase + torch.angle(obj * torch.exp(-1j * smooth_phase))
    phase = torch.where(support, phase, torch.zeros_like(phase))
    params = dict(sample.params, resample=float(np.mean(np.divide(small, shape))))
    return Sample(amplitude.numpy().astype(np.float32), phase.numpy().astype(np.float32), support.numpy(), params)
