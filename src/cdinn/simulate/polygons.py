"""2D convex polygons with a smooth random phase: the CDI NN training family.

Following the CDI NN paper (Methods, "Simulated training data"): the convex hull of a random
scattering of points in the grid has amplitude 1, its edges get a one-pixel Gaussian blur,
and the phase mixes sine gratings and Gaussians of random weights, periods, positions and
numbers, with a peak-to-peak value up to the full -pi..pi range and zero outside the object.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import ConvexHull, QhullError
from skimage.draw import polygon as fill_polygon

from cdinn.simulate.sample import Sample


def _hull_mask(size: int, margin: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Filled convex hull of random points in a random sub-square of the grid."""
    while True:  # degenerate draws (collinear points, sub-pixel hulls) are redrawn
        npts = int(rng.integers(3, 16))
        half = rng.uniform(0.25, 1.0) * (size / 2 - margin)  # random object size
        centre = size // 2 + rng.uniform(-1, 1, 2) * (size / 2 - margin - half)
        pts = centre + rng.uniform(-half, half, (npts, 2))
        try:
            hull = ConvexHull(pts)
        except QhullError:
            continue
        verts = pts[hull.vertices]
        rr, cc = fill_polygon(verts[:, 0], verts[:, 1], (size, size))
        if rr.size >= 9:
            mask = np.zeros((size, size), dtype=bool)
            mask[rr, cc] = True
            return mask, npts


def _phase_field(size: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Sum of random sine gratings and Gaussians on the grid (arbitrary scale)."""
    yx = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1).astype(np.float64)
    ngrat, ngaus = int(rng.integers(0, 4)), int(rng.integers(0, 4))
    if ngrat + ngaus == 0:
        ngrat = 1
    theta = rng.uniform(0, 2 * np.pi, ngrat)
    k = np.stack([np.cos(theta), np.sin(theta)], axis=-1) * (2 * np.pi / rng.uniform(size / 4, 2 * size, (ngrat, 1)))
    gratings = np.sin(yx @ k.T + rng.uniform(0, 2 * np.pi, ngrat)) @ rng.normal(size=ngrat)
    centres = rng.uniform(0, size, (ngaus, 2))
    widths = rng.uniform(size / 16, size / 3, ngaus)
    d2 = ((yx[..., None, :] - centres) ** 2).sum(-1)
    gaussians = np.exp(-d2 / (2 * widths**2)) @ rng.normal(size=ngaus)
    return gratings + gaussians, ngrat, ngaus


def polygon_object(size: int = 32, max_phase_range: float = 2 * np.pi, seed: int | np.random.Generator | None = None) -> Sample:
    """A random convex polygon with a smooth random phase (CDI NN training object).

    Parameters
    ----------
    size : int
        Side of the square object grid (the paper uses 32).
    max_phase_range : float
        Largest peak-to-peak phase inside the polygon, radians (at most ``2 pi``); each draw
        takes a range uniformly in ``(0.1, 1] * max_phase_range`` and a random offset that
        keeps the phase inside ``[-pi, pi]``.
    seed : int or numpy Generator, optional
        Randomness; the same seed gives the same object.

    Returns
    -------
    Sample
        ``amplitude`` is the polygon blurred by a one-pixel Gaussian, ``support`` the sharp
        polygon, ``phase`` zero outside it.
    """
    if size < 8:
        raise ValueError(f"polygon size must be at least 8, got {size}")
    if not 0 <= max_phase_range <= 2 * np.pi:
        raise ValueError(f"max_phase_range must be in [0, 2 pi], got {max_phase_range}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # A 4-pixel margin keeps the blurred edge (below 1e-4 at 4 sigma) off the grid border.
    mask, npts = _hull_mask(size, margin=4.0, rng=rng)
    amplitude = np.clip(gaussian_filter(mask.astype(np.float64), sigma=1.0), 0.0, 1.0)

    field, ngrat, ngaus = _phase_field(size, rng)
    inside = field[mask]
    span = np.ptp(inside)
    ptp = rng.uniform(0.1, 1.0) * max_phase_range
    scaled = (field - inside.min()) * (ptp / span if span > 0 else 0.0)
    offset = -np.pi + rng.uniform(0.0, 2 * np.pi - ptp)
    phase = np.where(mask, scaled + offset, 0.0)
    params = {
        "n_points": float(npts),
        "area": float(mask.sum()),
        "n_gratings": float(ngrat),
        "n_gaussians": float(ngaus),
        "phase_ptp": float(ptp if span > 0 else 0.0),
    }
    return Sample(amplitude.astype(np.float32), phase.astype(np.float32), mask, params)
