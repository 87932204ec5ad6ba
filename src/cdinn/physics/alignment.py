"""Removing the trivial ambiguities of phase retrieval: translation, global phase, twin image.

Used to compare a reconstruction with a reference (metrics) and to average several
solutions. Works on single, unbatched arrays (it is evaluation code, not a hot loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cdinn.physics.fourier import ArrayLike, spatial_dims


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def twin(obj: ArrayLike, ndim: int | None = None) -> ArrayLike:
    """Twin image: complex conjugate and inversion through the array centre.

    It has exactly the same diffraction intensity as ``obj``. Inversion maps index ``i`` to
    ``(n - i) mod n`` so that the centre ``n // 2`` stays fixed for even ``n``.
    """
    if isinstance(obj, torch.Tensor):
        dims = spatial_dims(obj, ndim)
        flipped = torch.flip(obj.conj(), dims=dims)
        return torch.roll(flipped, shifts=tuple(1 - n % 2 for n in (obj.shape[d] for d in dims)), dims=dims)
    a = np.asarray(obj)
    dims = tuple(range(-(a.ndim if ndim is None else ndim), 0))
    flipped = np.flip(np.conj(a), axis=dims)
    return np.roll(flipped, shift=tuple(1 - a.shape[d] % 2 for d in dims), axis=dims)


@dataclass
class Alignment:
    """How a moving object was matched onto a reference."""

    aligned: np.ndarray
    shift: tuple[float, ...]
    twin: bool
    phase_offset: float
    correlation: float


def _shift(obj: np.ndarray, shift: np.ndarray) -> np.ndarray:
    # Sub-pixel translation as a phase ramp in Fourier space (exact for band-limited data).
    from scipy.ndimage import fourier_shift  # imported on use: start-up of commands that never align

    return np.fft.ifftn(fourier_shift(np.fft.fftn(obj), shift))


def align(obj: ArrayLike, reference: ArrayLike, allow_twin: bool = True, upsample: int = 20) -> Alignment:
    """Translate, optionally twin, and rephase ``obj`` to best match ``reference``.

    Parameters
    ----------
    obj, reference : complex arrays of the same spatial shape (unbatched)
    allow_twin : bool
        Also try the twin image and keep whichever correlates better.
    upsample : int
        Sub-pixel precision of the translation (1/upsample pixel).

    Returns
    -------
    Alignment
        The aligned complex array (numpy, complex128) and the transformation found.
    """
    from skimage.registration import phase_cross_correlation  # imported on use: start-up

    ref = _numpy(reference).astype(np.complex128)
    mov = _numpy(obj).astype(np.complex128)
    if ref.shape != mov.shape:
        raise ValueError(f"shape mismatch: {mov.shape} vs reference {ref.shape}")
    candidates = [(False, mov)] + ([(True, np.asarray(twin(mov)))] if allow_twin else [])
    best: Alignment | None = None
    ref_norm = np.linalg.norm(ref)
    for is_twin, cand in candidates:
        shift, _, _ = phase_cross_correlation(np.abs(ref), np.abs(cand), upsample_factor=upsample, normalization=None)
        moved = _shift(cand, shift)
        overlap = np.vdot(moved, ref)  # sum(conj(moved) * ref)
        corr = float(np.abs(overlap) / (np.linalg.norm(moved) * ref_norm + 1e-30))
        if best is None or corr > best.correlation:
            offset = float(np.angle(overlap))
            best = Alignment(moved * np.exp(1j * offset), tuple(float(s) for s in shift), is_twin, offset, corr)
    assert best is not None
    return best
