"""Checks on measured intensities and masks before any computation."""

from __future__ import annotations

import numpy as np

from cdinn.errors import InputError


CHECK_BYTES = 64 * 2**20
"""Bytes of a stack checked at a time: a stack is never converted whole just to be checked."""


def validate_intensity(data: np.ndarray, source: str = "input", ndims: tuple[int, ...] = (2, 3),
                       per_pattern: bool = False, copy: bool = True) -> np.ndarray:
    """Return ``data`` as float32 if it is a valid measured intensity, else raise.

    Valid: a real numeric array with ``ndims`` axes, non-empty, finite, non-negative and not
    all zero (with ``per_pattern``, a stack along axis 0 whose every pattern holds counts,
    checked :data:`CHECK_BYTES` at a time). The input array is never modified: the result is
    a float32 copy, or, with ``copy=False`` and float32 input, the array itself (for arrays
    the caller owns, such as a file mapped copy-on-write). A stack read where indexed (an
    object with ``shape``, ``dtype`` and slicing, such as :class:`cdinn.io.readers.FrameStack`)
    is checked a block at a time and returned as it is.

    Raises
    ------
    InputError
        With a one-line description naming ``source``.
    """
    # a stack read where indexed (io.readers.FrameStack) is checked block by block, never read whole
    lazy = not isinstance(data, np.ndarray) and hasattr(data, "shape") and hasattr(data, "dtype") and per_pattern
    a = data if lazy else np.asarray(data)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{source}: intensity must be a real numeric array, got dtype {a.dtype}")
    if a.ndim not in ndims:
        raise InputError(f"{source}: expected a {' or '.join(f'{n}D' for n in ndims)} pattern, got shape {a.shape}")
    if a.size == 0 or 0 in a.shape:
        raise InputError(f"{source}: the pattern is empty (shape {a.shape})")
    if min(a.shape[1:] if per_pattern else a.shape) < 4:
        raise InputError(f"{source}: the pattern is too small to reconstruct (shape {a.shape})")
    if not lazy and (copy or a.dtype != np.float32):
        a = a.astype(np.float32, copy=True)
    step = max(1, CHECK_BYTES // (int(np.prod(a.shape[1:])) * 4)) if per_pattern else len(a)
    nonfinite = negative = 0
    lowest, empty = np.inf, []
    for lo in range(0, len(a), step):
        part = np.asarray(a[lo:lo + step], dtype=np.float32)
        finite = np.isfinite(part)
        nonfinite += int(part.size - np.count_nonzero(finite))
        below = part < 0
        if below.any():
            negative += int(np.count_nonzero(below))
            lowest = min(lowest, float(part[finite].min()))
        if per_pattern:
            empty.extend((lo + np.flatnonzero(~(part > 0).reshape(len(part), -1).any(axis=1))).tolist())
    if nonfinite:
        raise InputError(f"{source}: {nonfinite} non-finite value(s) (NaN/inf) in the pattern; mask them instead")
    if negative:
        raise InputError(
            f"{source}: {negative} negative intensity value(s) (min {lowest:g}); "
            "subtract the background with clipping, or mask those pixels"
        )
    if per_pattern and empty:  # a stack (N, *spatial): each pattern must hold counts
        raise InputError(f"{source}: pattern(s) {', '.join(map(str, empty[:5]))} of the stack are all zero")
    if not per_pattern and not (a > 0).any():
        raise InputError(f"{source}: the pattern is all zero")
    return a


def validate_mask(mask: np.ndarray, shape: tuple[int, ...], source: str = "mask") -> np.ndarray:
    """Return a boolean bad-pixel mask (True = not measured) of the pattern's ``shape``."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(f"{source}: mask shape {m.shape} does not match the pattern shape {tuple(shape)}")
    if m.dtype.kind not in "biuf" or not np.isfinite(m).all():
        raise InputError(f"{source}: the mask must be numeric and finite")
    m = m != 0
    if m.all():
        raise InputError(f"{source}: the mask leaves no measured pixel")
    return m
