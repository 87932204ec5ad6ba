"""Displacement and strain from the phase of a Bragg CDI reconstruction.

The phase of the object measured at reflection G is ``φ = G·u`` (up to the sign convention
of the Fourier transform, which the twin ambiguity makes unobservable anyway), so the
displacement along G is ``u = φ / |G|`` and the strain along G is ``ε = ∂u/∂x_G = ĝ·∇φ / |G|``.
Computed on a cubic lab grid (:func:`cdinn.physics.geometry.to_lab`), inside the support.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.restoration import unwrap_phase


def bragg_norm(hkl: Sequence[int], lattice_nm: float) -> float:
    """``|G| = 2π √(h²+k²+l²) / a`` (nm⁻¹) of a cubic lattice; Au(111) with a = 0.408 nm gives 26.67."""
    return 2 * math.pi * math.sqrt(sum(int(h) ** 2 for h in hkl)) / lattice_nm


def unwrap(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Unwrap a 2D/3D phase inside ``support`` (scikit-image); NaN outside.

    Only the largest connected piece is meaningful; the caller passes a compact support.
    """
    masked = np.ma.masked_array(np.asarray(phase, dtype=np.float64), mask=~np.asarray(support, dtype=bool))
    out = unwrap_phase(masked)
    return np.where(support, np.ma.getdata(out), np.nan)


def remove_ramp(phase: np.ndarray, support: np.ndarray, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the least-squares plane ``c + k·r`` from an unwrapped phase inside the support.

    A linear phase ramp is a shift of the Bragg peak off the array centre (a rigid change of
    the reference lattice), not strain; removing it references strain to the mean lattice.

    Returns
    -------
    (phase without ramp (NaN outside), ramp gradient per axis in rad per unit of ``spacing``)
    """
    idx = np.nonzero(support)
    coords = np.stack([i.astype(np.float64) * spacing for i in idx], axis=1)
    design = np.column_stack([np.ones(len(coords)), coords])
    coef, *_ = np.linalg.lstsq(design, phase[idx], rcond=None)
    grids = np.meshgrid(*[np.arange(n) * spacing for n in phase.shape], indexing="ij")
    plane = coef[0] + sum(c * g for c, g in zip(coef[1:], grids))
    return np.where(support, phase - plane, np.nan), coef[1:]


def gradient_inside(field: np.ndarray, support: np.ndarray, spacing: float = 1.0) -> list[np.ndarray]:
    """Per-axis derivative using only values inside the support.

    Central differences where both neighbours are inside, one-sided where one is, NaN where
    none is: values outside a reconstruction's support are noise and must not leak in.
    """
    sup = np.asarray(support, dtype=bool)
    f = np.where(sup, field, 0.0)
    grads = []
    for axis in range(f.ndim):
        def nb(arr: np.ndarray, step: int) -> np.ndarray:
            out = np.roll(arr, -step, axis=axis)
            edge = [slice(None)] * arr.ndim
            edge[axis] = slice(-1, None) if step > 0 else slice(0, 1)
            out[tuple(edge)] = 0
            return out

        fwd_in, bwd_in = nb(sup, 1) & sup, nb(sup, -1) & sup
        fwd = (nb(f, 1) - f) / spacing
        bwd = (f - nb(f, -1)) / spacing
        g = np.full(f.shape, np.nan)
        both = fwd_in & bwd_in
        g[both] = 0.5 * (fwd[both] + bwd[both])
        only_f = fwd_in & ~bwd_in
        g[only_f] = fwd[only_f]
        only_b = bwd_in & ~fwd_in
        g[only_b] = bwd[only_b]
        grads.append(g)
    return grads


@dataclass
class StrainMap:
    """Phase, displacement and strain of a crystal on a cubic grid (NaN outside the support).

    Attributes
    ----------
    phase : unwrapped phase without its linear ramp, rad
    displacement : component of the displacement along G, nm
    strain : ``∂u_G/∂x_G`` (dimensionless; x100 for %)
    support : bool
    g_norm : |G| used, nm⁻¹
    """

    phase: np.ndarray
    displacement: np.ndarray
    strain: np.ndarray
    support: np.ndarray
    g_norm: float


def strain_map(
    obj: np.ndarray,
    support: np.ndarray,
    g_direction: Sequence[float],
    g_norm: float,
    voxel_nm: float,
) -> StrainMap:
    """Displacement and strain along G from a complex object on a cubic grid.

    Parameters
    ----------
    obj : complex array (2D or 3D), on a cubic grid of edge ``voxel_nm``
    support : bool array, the crystal (e.g. amplitude above a fraction of its maximum)
    g_direction : G expressed along the array axes (any length; normalised here)
    g_norm : |G| in nm⁻¹ (e.g. :func:`bragg_norm`)
    voxel_nm : grid spacing in nm

    Returns
    -------
    StrainMap
    """
    sup = np.asarray(support, dtype=bool)
    if not sup.any():
        raise ValueError("empty support: no voxel to compute strain on")
    g = np.asarray(g_direction, dtype=np.float64)
    if g.shape != (obj.ndim,) or not np.linalg.norm(g) > 0:
        raise ValueError(f"g_direction must be a non-zero vector of {obj.ndim} components, got {g_direction}")
    g = g / np.linalg.norm(g)
    phase = unwrap(np.angle(obj), sup)
    phase, _ = remove_ramp(phase, sup, voxel_nm)
    grads = gradient_inside(phase, sup, voxel_nm)
    strain = sum(gi * gradient for gi, gradient in zip(g, grads)) / g_norm
    return StrainMap(phase, phase / g_norm, strain, sup, g_norm)
