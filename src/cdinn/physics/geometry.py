"""Bragg CDI geometry: from detector/rocking-curve coordinates to an orthonormal lab frame.

The lab frame is xrayutilities': the incident beam along +z, and rotation axes named in its
notation (``'y+'`` is a right-handed rotation about +y). A prepared Bragg pattern has axes
``(rocking step, detector row, detector column)``; one step along each is a vector in
reciprocal space, the columns of the *reciprocal basis* ``B``. The reconstructed object
shares those axes; one voxel step along them is a lab vector, a column of the *real-space
basis* ``A = 2π (Bᵀ)⁻¹ diag(1/N)`` (so that ``q·r = 2π n·m/N``, the DFT phase). These
bases are not orthogonal; :func:`to_lab` interpolates the object onto a cubic grid.

As in cohere and bcdi, the detector angles are taken to point at the centre of the prepared
array (the Bragg peak), and the lab frame is that of the sample at the middle of the
rocking curve. Lengths are in nm, wave vectors in nm⁻¹.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

HC_KEV_NM = 1.239841984  # h c in keV nm: wavelength (nm) = HC_KEV_NM / energy (keV)

DIFFRACTOMETERS: dict[str, dict[str, tuple[str, ...]]] = {
    # APS 34-ID-C (cohere's 34idc): sample Theta, Chi, Phi; detector arm Delta, Gamma; Timepix
    # rows run along -y, columns along +x (cohere's TIM2 pixel orientation, frames untransposed).
    "34idc": {
        "sample_axes": ("y+", "z-", "y+"),
        "sample_motors": ("Theta", "Chi", "Phi"),
        "sample_mnemonics": ("th", "chi", "phi"),
        "detector_axes": ("y+", "x-"),
        "detector_motors": ("Delta", "Gamma"),
        "pixel_directions": ("y-", "x+"),
    },
}


def rotation(axis: str, angle_deg: float) -> np.ndarray:
    """Right-handed rotation matrix about a lab axis in xrayutilities notation (``'x+'``, ``'z-'``, ...)."""
    if len(axis) != 2 or axis[0] not in "xyz" or axis[1] not in "+-":
        raise ValueError(f"unknown rotation axis {axis!r}; use x+, x-, y+, y-, z+ or z-")
    a = math.radians(angle_deg) * (1.0 if axis[1] == "+" else -1.0)
    c, s = math.cos(a), math.sin(a)
    i = "xyz".index(axis[0])
    j, k = (i + 1) % 3, (i + 2) % 3
    r = np.eye(3)
    r[j, j], r[j, k], r[k, j], r[k, k] = c, -s, s, c
    return r


def _compose(axes: Sequence[str], angles: Sequence[float]) -> np.ndarray:
    # The first axis is the outermost circle: its rotation is applied last.
    r = np.eye(3)
    for axis, angle in zip(axes, angles):
        r = r @ rotation(axis, angle)
    return r


def _unit(direction: str) -> np.ndarray:
    v = np.zeros(3)
    v["xyz".index(direction[0])] = 1.0 if direction[1] == "+" else -1.0
    return v


@dataclass(frozen=True)
class BraggGeometry:
    """Diffractometer geometry of one Bragg CDI scan, for the prepared array's sampling.

    Attributes
    ----------
    energy_kev : X-ray energy
    distance_m : sample-detector distance
    pixel_size_m : (row, column) size of one prepared pixel (detector pixel times binning)
    rocking_step_deg : rocking-angle increment per prepared frame
    sample_angles_deg : sample circles at the middle of the rocking curve (outermost first)
    detector_angles_deg : detector circles (outermost first)
    rocking_axis : index of the rocked circle in ``sample_axes``
    sample_axes, detector_axes : circles in xrayutilities notation, outermost first
    pixel_directions : lab directions of increasing detector row and column at zero angles
    """

    energy_kev: float
    distance_m: float
    pixel_size_m: tuple[float, float]
    rocking_step_deg: float
    sample_angles_deg: tuple[float, ...]
    detector_angles_deg: tuple[float, ...]
    rocking_axis: int = 0
    sample_axes: tuple[str, ...] = DIFFRACTOMETERS["34idc"]["sample_axes"]
    detector_axes: tuple[str, ...] = DIFFRACTOMETERS["34idc"]["detector_axes"]
    pixel_directions: tuple[str, str] = ("y-", "x+")

    @property
    def wavelength_nm(self) -> float:
        """X-ray wavelength."""
        return HC_KEV_NM / self.energy_kev

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> BraggGeometry:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def scaled(self, factors: Sequence[float]) -> BraggGeometry:
        """The geometry after resampling ``factors`` measured steps into one (rocking, row, column)."""
        f0, f1, f2 = (float(f) for f in factors)
        return BraggGeometry(
            self.energy_kev,
            self.distance_m,
            (self.pixel_size_m[0] * f1, self.pixel_size_m[1] * f2),
            self.rocking_step_deg * f0,
            self.sample_angles_deg,
            self.detector_angles_deg,
            self.rocking_axis,
            self.sample_axes,
            self.detector_axes,
            self.pixel_directions,
        )

    def q_pixel(self, row: float = 0.0, column: float = 0.0) -> np.ndarray:
        """Lab-frame scattering vector ``k_f - k_i`` (nm⁻¹) at a pixel offset from the array centre."""
        k = 2 * math.pi / self.wavelength_nm
        r_det = _compose(self.detector_axes, self.detector_angles_deg)
        pos = np.array([0.0, 0.0, self.distance_m])
        pos = pos + row * self.pixel_size_m[0] * _unit(self.pixel_directions[0])
        pos = pos + column * self.pixel_size_m[1] * _unit(self.pixel_directions[1])
        kf = r_det @ pos
        return k * kf / np.linalg.norm(kf) - np.array([0.0, 0.0, k])

    def q_bragg(self) -> np.ndarray:
        """Lab-frame scattering vector at the array centre: the measured Bragg vector G (nm⁻¹)."""
        return self.q_pixel()

    def reciprocal_basis(self) -> np.ndarray:
        """3×3 matrix whose columns are the q increments (nm⁻¹) of one step along (rocking, row, column)."""
        q0 = self.q_pixel()
        angles = list(self.sample_angles_deg)
        r_now = _compose(self.sample_axes, angles)
        angles[self.rocking_axis] += self.rocking_step_deg
        r_next = _compose(self.sample_axes, angles)
        # A fixed lab q seen by the sample one step later, expressed back in the lab frame.
        dq_rock = r_now @ r_next.T @ q0 - q0
        return np.column_stack([dq_rock, self.q_pixel(1.0, 0.0) - q0, self.q_pixel(0.0, 1.0) - q0])

    def real_space_basis(self, shape: Sequence[int]) -> np.ndarray:
        """3×3 matrix whose columns are the lab vectors (nm) of one voxel step along the array axes."""
        return real_space_basis(self.reciprocal_basis(), shape)


def real_space_basis(reciprocal: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Real-space basis ``2π (Bᵀ)⁻¹ diag(1/N)`` conjugate to the reciprocal basis ``B`` on an array of ``shape``."""
    return 2 * math.pi * np.linalg.inv(np.asarray(reciprocal).T) / np.asarray(shape, dtype=float)[None, :]


def voxel_sizes(basis: np.ndarray) -> np.ndarray:
    """Length (nm) of one step along each array axis: the column norms of a real-space basis."""
    return np.linalg.norm(basis, axis=0)


def to_lab(
    volume: np.ndarray,
    basis: np.ndarray,
    voxel_nm: float | None = None,
    shape: Sequence[int] | None = None,
    order: int = 1,
) -> tuple[np.ndarray, float]:
    """Interpolate a volume from its (skewed) array axes onto a cubic lab grid.

    Parameters
    ----------
    volume : 3D array (real or complex), centred
        Sampled at ``r = basis @ (m - N//2)`` for integer array index ``m``.
    basis : 3×3 real-space basis (columns in nm), e.g. :meth:`BraggGeometry.real_space_basis`
    voxel_nm : float, optional
        Edge of the cubic output voxel; default the cube root of the input voxel volume.
    shape : output shape, default the input shape
    order : spline order of the interpolation (1 = trilinear)

    Returns
    -------
    (lab volume, voxel_nm)
        Output axes are lab ``(z, y, x)`` (z along the beam), centred on the input centre;
        points outside the input array are zero.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"to_lab takes a 3D volume, got shape {vol.shape}")
    basis = np.asarray(basis, dtype=float)
    if voxel_nm is None:
        voxel_nm = float(abs(np.linalg.det(basis)) ** (1.0 / 3.0))
    out_shape = tuple(vol.shape) if shape is None else tuple(int(s) for s in shape)
    axes = [(np.arange(n) - n // 2) * voxel_nm for n in out_shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    r = np.stack([x.ravel(), y.ravel(), z.ravel()])
    m = np.linalg.solve(basis, r) + (np.asarray(vol.shape)[:, None] // 2)
    from scipy.ndimage import map_coordinates  # imported on use: start-up of commands that never map to the lab

    def sample(a: np.ndarray) -> np.ndarray:
        return map_coordinates(a, m, order=order, mode="constant", cval=0.0).reshape(out_shape)

    if np.iscomplexobj(vol):
        return (sample(vol.real) + 1j * sample(vol.imag)).astype(vol.dtype), voxel_nm
    return sample(vol.astype(np.float64)).astype(vol.dtype if vol.dtype.kind == "f" else np.float64), voxel_nm


def lab_vector_to_grid(v: np.ndarray) -> np.ndarray:
    """A lab vector ``(x, y, z)`` as components along the axes ``(z, y, x)`` of a :func:`to_lab` grid."""
    return np.asarray(v, dtype=float)[::-1].copy()
