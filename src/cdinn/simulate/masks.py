"""Unmeasured detector pixels for simulated patterns: beamstop, module gaps, dead lines.

Real patterns are never complete: a beamstop or a saturated, masked Bragg peak hides the
centre, the gaps between detector modules cut planes (a line per frame, stacked over the
rocking curve), and dead or hot pixels leave lines along the rocking axis. A network trained
on complete patterns only has never seen a hole; these masks let training show it some.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskSpec:
    """How often and what kind of pixels a simulated detector misses.

    Attributes
    ----------
    probability : fraction of patterns that get a mask at all
    beamstop : radius range, pixels, of a ball (disc in 2D) hiding the centre; drawn for half
        of the masked patterns
    gaps : range of the number of module gaps (planes in 3D, lines in 2D, across one in-plane
        axis, within a quarter of the array of its centre)
    gap_width : width range of a gap, pixels
    dead_lines : range of the number of dead-pixel lines (one pixel across, along an axis)
    """

    probability: float = 0.5
    beamstop: tuple[float, float] = (1.0, 3.5)
    gaps: tuple[int, int] = (0, 2)
    gap_width: tuple[int, int] = (1, 3)
    dead_lines: tuple[int, int] = (0, 3)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"mask probability must be in [0, 1], got {self.probability}")
        for name in ("beamstop", "gaps", "gap_width", "dead_lines"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"mask {name} range must satisfy 0 <= lo <= hi, got {[lo, hi]}")

    @classmethod
    def from_dict(cls, d: dict) -> MaskSpec:
        """A spec from a training configuration's ``masks`` table (unknown keys are an error)."""
        unknown = set(d) - {"probability", "beamstop", "gaps", "gap_width", "dead_lines"}
        if unknown:
            raise ValueError(f"unknown masks keys: {', '.join(sorted(unknown))}")
        pairs = {k: tuple(v) for k, v in d.items() if k != "probability"}
        return cls(**({"probability": float(d["probability"])} if "probability" in d else {}), **pairs)


def detector_mask(shape: Sequence[int], spec: MaskSpec, rng: np.random.Generator) -> np.ndarray:
    """A random detector mask (True = not measured) for a centred pattern of ``shape``.

    With probability ``1 - spec.probability`` nothing is masked. Otherwise a beamstop (half of
    the time), then ``spec.gaps`` module gaps and ``spec.dead_lines`` dead lines; the centre
    pixel stays measured unless a beamstop covers it.
    """
    shape = tuple(int(n) for n in shape)
    mask = np.zeros(shape, dtype=bool)
    if rng.random() >= spec.probability:
        return mask
    ndim = len(shape)
    centre = [n // 2 for n in shape]
    if rng.random() < 0.5:
        radius = rng.uniform(*spec.beamstop)
        grid = np.ogrid[tuple(slice(0, n) for n in shape)]
        mask |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
    # Gaps and dead lines lie in the detector plane: the last two axes (the first of a 3D
    # pattern is the rocking angle, along which a detector defect repeats).
    plane = list(range(ndim - 2, ndim))
    for _ in range(int(rng.integers(spec.gaps[0], spec.gaps[1] + 1))):
        axis = int(rng.choice(plane))
        width = int(rng.integers(spec.gap_width[0], spec.gap_width[1] + 1))
        start = centre[axis] + int(rng.integers(-shape[axis] // 4, shape[axis] // 4 + 1)) - width // 2
        index = [slice(None)] * ndim
        index[axis] = slice(max(start, 0), max(start + width, 0))
        mask[tuple(index)] = True
    for _ in range(int(rng.integers(spec.dead_lines[0], spec.dead_lines[1] + 1))):
        index = [int(rng.integers(0, n)) for n in shape]
        index[0] = slice(None)  # a line along the rocking (2D: first) axis
        mask[tuple(index)] = True
    return mask
