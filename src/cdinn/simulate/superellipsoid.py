"""3D superellipsoids with a Gaussian-correlated phase (3D CNN paper, Methods Eq. 4-5).

Shape (Eq. 4): ``(|x/a|^(2/e) + |y/b|^(2/e))^(e/n) + |z/c|^(2/n) <= 1`` in the particle frame,
the particle randomly rotated in 3D. Phase (Eq. 5): uncorrelated Gaussian noise convolved with
an anisotropic Gaussian of correlation lengths ``Lx, Ly, Lz`` (particle frame), then scaled
and shifted to ``[0, phase_max]`` inside the particle (the paper uses ``[0, 1]``) and set to
zero outside.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import irfftn, next_fast_len, rfftn
from scipy.spatial.transform import Rotation

from cdinn.simulate.sample import Sample


def _signed_power(x: np.ndarray, p: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** p


def _max_radius(a: float, b: float, c: float, e: float, n: float) -> float:
    """Largest distance from the centre to the surface, from the parametric form."""
    eta, omega = np.meshgrid(np.linspace(-np.pi / 2, np.pi / 2, 33), np.linspace(-np.pi, np.pi, 65), indexing="ij")
    ce, se = _signed_power(np.cos(eta), n), _signed_power(np.sin(eta), n)
    x = a * ce * _signed_power(np.cos(omega), e)
    y = b * ce * _signed_power(np.sin(omega), e)
    z = c * se
    return float(np.sqrt(x**2 + y**2 + z**2).max())


def _correlated_noise(shape: tuple[int, ...], cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise convolved with a Gaussian of covariance ``cov`` (pixels^2).

    Filtering in Fourier space admits a rotated (non axis-aligned) kernel exactly, which
    ``scipy.ndimage.gaussian_filter`` cannot. The FFT makes the field periodic; a period of
    at least the grid plus three correlation lengths keeps the wrap from correlating
    opposite sides of the particle.
    """
    margin = int(np.ceil(3 * np.sqrt(np.linalg.eigvalsh(cov).max())))
    big = tuple(next_fast_len(s + margin, real=True) for s in shape)
    noise = rng.standard_normal(big, dtype=np.float32)
    k = [2 * np.pi * np.fft.fftfreq(m).astype(np.float32) for m in big[:-1]] + [2 * np.pi * np.fft.rfftfreq(big[-1]).astype(np.float32)]
    kx, ky, kz = k[0][:, None, None], k[1][None, :, None], k[2][None, None, :]
    quad = cov[0, 0] * kx**2 + cov[1, 1] * ky**2 + cov[2, 2] * kz**2
    quad = quad + 2 * (cov[0, 1] * kx * ky + cov[0, 2] * kx * kz + cov[1, 2] * ky * kz)
    field = irfftn(rfftn(noise) * np.exp(-0.5 * quad), s=big)
    return field[tuple(slice(0, s) for s in shape)]


def superellipsoid_object(
    size: int = 32,
    phase_max: float = 1.0,
    edge_width: float = 0.0,
    seed: int | np.random.Generator | None = None,
) -> Sample:
    """A randomly rotated superellipsoid with a Gaussian-correlated phase.

    Parameters
    ----------
    size : int
        Side of the cubic object grid; the particle fits inside it whatever its rotation.
    phase_max : float
        The phase inside the particle is scaled and shifted to ``[0, phase_max]`` radians
        (the paper: ``[0, 1]``).
    edge_width : float
        Width of a logistic edge, pixels; ``0`` gives the paper's sharp (binary) shape.
    seed : int or numpy Generator, optional
        Randomness; the same seed gives the same particle.

    Returns
    -------
    Sample
        Amplitude in [0, 1], phase in ``[0, phase_max]`` inside and 0 outside, and the
        parameters ``a, b, c`` (semi-axes, pixels), ``e, n`` (exponents), ``Lx, Ly, Lz``
        (correlation lengths, pixels) and the rotation as a vector (radians).
    """
    if size < 8:
        raise ValueError(f"superellipsoid size must be at least 8, got {size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    e, n = rng.uniform(0.3, 2.0, 2)
    axes = rng.uniform(0.35, 1.0, 3)
    # Scale so the farthest surface point, in any orientation, stays one pixel off the edge.
    axes *= (size / 2 - 1.5) / _max_radius(*axes, e, n)
    a, b, c = axes
    rot = Rotation.random(random_state=rng)
    lengths = rng.uniform(0.05, 0.3, 3) * size

    grid = np.arange(size, dtype=np.float64) - size // 2
    r = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1)
    p = r @ rot.as_matrix()  # lab -> particle frame (row vectors times R = R^T r)
    x, y, z = np.abs(p[..., 0] / a), np.abs(p[..., 1] / b), np.abs(p[..., 2] / c)
    f = (x ** (2 / e) + y ** (2 / e)) ** (e / n) + z ** (2 / n)
    # f^(n/2) is homogeneous of degree 1, so |r| (1 - f^(-n/2)) is the signed distance to the
    # surface along the ray from the centre: an edge of a given width in pixels.
    gauge = np.maximum(f, 1e-30) ** (n / 2)
    if edge_width > 0:
        dist = np.linalg.norm(r, axis=-1) * (1 - 1 / gauge)
        amplitude = 1 / (1 + np.exp(np.clip(dist / (edge_width / 4), -50, 50)))
    else:
        amplitude = (gauge <= 1).astype(np.float64)
    support = amplitude >= 0.5

    cov = rot.as_matrix() @ np.diag(lengths**2) @ rot.as_matrix().T
    field = _correlated_noise((size,) * 3, cov, rng)
    inside = field[support]
    lo, span = inside.min(), np.ptp(inside)
    phase = np.where(support, (field - lo) * (phase_max / span if span > 0 else 0.0), 0.0)
    rotvec = rot.as_rotvec()
    params = {
        "a": a, "b": b, "c": c, "e": e, "n": n,
        "Lx": lengths[0], "Ly": lengths[1], "Lz": lengths[2],
        "rot_x": rotvec[0], "rot_y": rotvec[1], "rot_z": rotvec[2],
    }  # fmt: skip
    return Sample(amplitude.astype(np.float32), phase.astype(np.float32), support, {k: float(v) for k, v in params.items()})
