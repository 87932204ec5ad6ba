"""Faceted crystals: the fast continuum family.

A convex polyhedron (polygon in 2D) cut by low-index lattice planes — {100}, {110}, {111}
in 3D, {10}, {11} in 2D — at random distances, randomly oriented, with smooth edges, and a
smooth strain-like phase (Gaussian displacement bumps plus a bending term).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cdinn.physics.fourier import intensity, pad_to
from cdinn.physics.noise import poisson_noise


def _low_index_normals(ndim: int) -> np.ndarray:
    vecs = {
        v
        for v in itertools.product((-1, 0, 1), repeat=ndim)
        if any(v) and sum(abs(c) for c in v) <= (3 if ndim == 3 else 2)
    }
    normals = np.array(sorted(vecs), dtype=np.float64)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    if ndim == 3:
        return Rotation.random(random_state=rng).as_matrix()
    a = rng.uniform(0, 2 * np.pi)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def faceted_crystal(
    shape: Sequence[int],
    oversampling: float = 2.0,
    phase_range: float = 2.0,
    edge_width: float = 0.7,
    seed: int | np.random.Generator | None = None,
) -> torch.Tensor:
    """A random faceted crystal with a smooth strain-like phase, centred in its array.

    Parameters
    ----------
    shape : sequence of 2 or 3 ints
        Array shape (the diffraction pattern has the same shape).
    oversampling : float
        Linear oversampling ratio: the crystal fits in ``shape / oversampling`` per axis.
    phase_range : float
        Peak-to-peak phase inside the crystal, radians.
    edge_width : float
        Width of the smooth edge, pixels.
    seed : int or numpy Generator, optional
        Randomness; the same seed gives the same crystal.

    Returns
    -------
    torch.Tensor
        complex64 object: amplitude in [0, 1], phase zero-mean inside the crystal.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 axes, got {shape}")
    if oversampling < 1.0:
        raise ValueError(f"oversampling must be >= 1, got {oversampling}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    radius = 0.5 * min(shape) / oversampling
    # Compute on the box that holds the crystal (plus its soft edge), then zero-pad: the
    # cost scales with the object, not with the oversampled array.
    box = tuple(min(n, 2 * int(np.ceil(radius + 3 * edge_width)) + 2) for n in shape)
    coords = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in box], indexing="ij"), axis=-1).astype(np.float64)

    directions = _low_index_normals(ndim)
    normals = directions @ _rotation(ndim, rng).T
    # One distance per facet family keeps the habit crystal-like; a jitter breaks symmetry.
    family = np.count_nonzero(directions, axis=1)
    base = {f: rng.uniform(0.72, 1.0) for f in np.unique(family)}
    dist = radius * np.array([base[f] for f in family]) * rng.uniform(0.9, 1.0, len(family))
    signed = (coords @ normals.T - dist).max(axis=-1)
    amplitude = 1.0 / (1.0 + np.exp(np.clip(signed / (edge_width / 1.7), -50, 50)))

    inside = amplitude > 0.5
    phase = np.zeros(box)
    for _ in range(rng.integers(2, 5)):
        centre = rng.uniform(-0.6, 0.6, ndim) * radius
        width = rng.uniform(0.3, 0.8) * radius
        phase += rng.normal() * np.exp(-np.sum((coords - centre) ** 2, axis=-1) / (2 * width**2))
    bend = rng.normal(size=(ndim, ndim))
    phase += np.einsum("...i,ij,...j->...", coords, bend + bend.T, coords) / radius**2 * 0.3
    span = np.ptp(phase[inside]) if inside.any() else 1.0
    phase = (phase - phase[inside].mean()) * (phase_range / max(span, 1e-12))
    obj = torch.from_numpy((amplitude * np.exp(1j * phase)).astype(np.complex64))
    return pad_to(obj, shape)


def simulate_pattern(
    obj: torch.Tensor, photons: float | None = None, seed: int | None = None, ndim: int | None = None
) -> torch.Tensor:
    """Diffraction intensity of ``obj`` through the forward model, with optional Poisson noise.

    Parameters
    ----------
    obj : complex tensor
        Centred object (already zero-padded to the wanted oversampling).
    photons : float, optional
        Expected total counts; ``None`` returns the noise-free intensity.
    seed : int, optional
        Seed of the Poisson draw.
    """
    pattern = intensity(obj, ndim)
    if photons is None:
        return pattern.to(torch.float32)
    gen = torch.Generator(device=pattern.device)
    gen.manual_seed(0 if seed is None else int(seed))
    return poisson_noise(pattern, photons, ndim, generator=gen)
