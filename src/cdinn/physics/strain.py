"""Displacement and strain from the phase of a Bragg CDI reconstruction.

The phase of the object measured at reflection G is ``φ = G·u`` (up to the sign convention
of the Fourier transform, which the twin ambiguity makes unobservable anyway), so the
displacement along G is ``u = φ / |G|`` and the strain along G is ``ε = ∂u/∂x_G = ĝ·∇φ / |G|``.

The phase is differentiated on the grid it was reconstructed on, which for Bragg CDI is the
skewed detector (rocking-curve) grid: with ``r = A m`` for array index ``m`` and real-space
basis ``A``, the chain rule gives ``∇φ = A⁻ᵀ ∂φ/∂m`` exactly, whereas interpolating the
complex object onto a cubic grid first smooths a fast-varying phase (bcdi offers the same
choice). The strain is then interpolated, as the smooth field it is, for display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def bragg_norm(hkl: Sequence[int], lattice_nm: float) -> float:
    """``|G| = 2π √(h²+k²+l²) / a`` (nm⁻¹) of a cubic lattice; Au(111) with a = 0.408 nm gives 26.67."""
    return 2 * math.pi * math.sqrt(sum(int(h) ** 2 for h in hkl)) / lattice_nm


def unwrap(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Unwrap a 2D/3D phase inside ``support`` (scikit-image); NaN outside.

    Only the largest connected piece is meaningful; the caller passes a compact support.
    """
    masked = np.ma.masked_array(np.asarray(phase, dtype=np.float64), mask=~np.asarray(support, dtype=bool))
    from skimage.restoration import unwrap_phase  # imported on use: start-up

    out = unwrap_phase(masked)
    return np.where(support, np.ma.getdata(out), np.nan)


def remove_ramp(phase: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the least-squares plane ``c + k·m`` (``m`` the array index) from an unwrapped phase inside the support.

    A linear phase ramp is a shift of the Bragg peak off the array centre (a rigid change of
    the reference lattice), not strain; removing it references strain to the mean lattice.

    Returns
    -------
    (phase without ramp (NaN outside), ramp gradient in rad per array step along each axis)
    """
    idx = np.nonzero(support)
    coords = np.stack([i.astype(np.float64) for i in idx], axis=1)
    design = np.column_stack([np.ones(len(coords)), coords])
    coef, *_ = np.linalg.lstsq(design, phase[idx], rcond=None)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in phase.shape], indexing="ij")
    plane = coef[0] + sum(c * g for c, g in zip(coef[1:], grids))
    return np.where(support, phase - plane, np.nan), coef[1:]


def gradient_inside(field: np.ndarray, support: np.ndarray) -> list[np.ndarray]:
    """Per-axis derivative (per array step) using only values inside the support.

    Central differences where both neighbours are inside; at the surface, second-order
    one-sided differences where two voxels on one side are inside (exact for a quadratic, as a
    central difference is), first-order where only one is; NaN where none is. Values outside a
    reconstruction's support are noise and must not leak in.
    """
    sup = np.asarray(support, dtype=bool)
    f = np.where(sup, field, 0.0)
    grads = []
    for axis in range(f.ndim):
        def nb(arr: np.ndarray, step: int) -> np.ndarray:
            out = np.roll(arr, -step, axis=axis)
            edge = [slice(None)] * arr.ndim
            edge[axis] = slice(-step, None) if step > 0 else slice(0, -step)
            out[tuple(edge)] = 0
            return out

        f1_in, b1_in = nb(sup, 1) & sup, nb(sup, -1) & sup
        f2_in, b2_in = f1_in & nb(sup, 2), b1_in & nb(sup, -2)
        f1, b1, f2, b2 = nb(f, 1), nb(f, -1), nb(f, 2), nb(f, -2)
        g = np.full(f.shape, np.nan)
        # Assigned from the least to the most accurate stencil; later ones overwrite.
        for where, value in (
            (f1_in, f1 - f),
            (b1_in, f - b1),
            (f2_in & ~b1_in, 0.5 * (-3 * f + 4 * f1 - f2)),
            (b2_in & ~f1_in, 0.5 * (3 * f - 4 * b1 + b2)),
            (f1_in & b1_in, 0.5 * (f1 - b1)),
        ):
            g[where] = value[where]
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
    basis: float | np.ndarray,
) -> StrainMap:
    """Displacement and strain along G from a complex object on a (possibly skewed) grid.

    Parameters
    ----------
    obj : complex array (2D or 3D)
    support : bool array, the crystal (e.g. amplitude above a fraction of its maximum)
    g_direction : G (any length; normalised here) in the frame of ``basis``' columns
    g_norm : |G| in nm⁻¹ (e.g. :func:`bragg_norm`)
    basis : float or (ndim, ndim) array
        The grid: a float is the edge (nm) of a cubic grid whose axes are the frame of
        ``g_direction``; a matrix holds as columns the vectors (nm) of one step along each
        array axis, e.g. :meth:`cdinn.physics.geometry.BraggGeometry.real_space_basis`.

    Returns
    -------
    StrainMap
        On the input grid.
    """
    sup = np.asarray(support, dtype=bool)
    if not sup.any():
        raise ValueError("empty support: no voxel to compute strain on")
    g = np.asarray(g_direction, dtype=np.float64)
    if g.shape != (obj.ndim,) or not np.linalg.norm(g) > 0:
        raise ValueError(f"g_direction must be a non-zero vector of {obj.ndim} components, got {g_direction}")
    g = g / np.linalg.norm(g)
    a = np.eye(obj.ndim) * basis if np.ndim(basis) == 0 else np.asarray(basis, dtype=np.float64)
    if a.shape != (obj.ndim, obj.ndim) or abs(np.linalg.det(a)) == 0:
        raise ValueError(f"basis must be a voxel size or an invertible {obj.ndim}×{obj.ndim} matrix")
    phase = unwrap(np.angle(obj), sup)
    phase, _ = remove_ramp(phase, sup)
    # ĝ·∇φ = ĝ·A⁻ᵀ ∂φ/∂m = (A⁻¹ĝ)·∂φ/∂m
    weights = np.linalg.solve(a, g)
    grads = gradient_inside(phase, sup)
    strain = sum(w * gradient for w, gradient in zip(weights, grads)) / g_norm
    return StrainMap(phase, phase / g_norm, strain, sup, g_norm)
