import math

import numpy as np
import pytest

from cdinn.physics.geometry import BraggGeometry, real_space_basis, rotation, to_lab, voxel_sizes


def symmetric(two_theta=30.0, step=0.01, energy=9.0):
    # Coplanar case: detector at 2θ about y, sample rocked about y; known closed forms.
    return BraggGeometry(energy, 1.0, (55e-6, 55e-6), step, (two_theta / 2, 0.0, 0.0), (two_theta, 0.0))


def test_rotation_is_right_handed():
    assert np.allclose(rotation("z+", 90) @ [1, 0, 0], [0, 1, 0])
    assert np.allclose(rotation("y-", 90) @ [1, 0, 0], [0, 0, 1])
    with pytest.raises(ValueError):
        rotation("w+", 1)


def test_bragg_vector_and_reciprocal_steps_known_answer():
    g = symmetric()
    k = 2 * math.pi / g.wavelength_nm
    assert np.linalg.norm(g.q_bragg()) == pytest.approx(2 * k * math.sin(math.radians(15)), rel=1e-9)
    b = g.reciprocal_basis()
    assert np.linalg.norm(b[:, 1]) == pytest.approx(k * 55e-6, rel=1e-3)  # one pixel at 1 m
    assert np.linalg.norm(b[:, 0]) == pytest.approx(np.linalg.norm(g.q_bragg()) * math.radians(0.01), rel=1e-3)
    assert abs(b[:, 0] @ g.q_bragg()) < 1e-3 * np.linalg.norm(b[:, 0]) * np.linalg.norm(g.q_bragg())  # rocking ⟂ q (to first order)


def test_matches_xrayutilities():
    xu = pytest.importorskip("xrayutilities")
    g = BraggGeometry(9.0, 0.5, (55e-6, 55e-6), 0.005, (0.22, 90.0, -5.0), (32.174, 12.6346))
    qc = xu.experiment.QConversion(g.sample_axes, g.detector_axes, (0, 0, 1), en=9000.0)
    qc.init_area("y-", "x+", 1, 1, 3, 3, distance=0.5, pwidth1=55e-6, pwidth2=55e-6)
    q = np.array(qc.area(np.array([0.22, 0.225]), 90.0, -5.0, 32.174, 12.6346, deg=True))
    lab = lambda v: qc.transformSample2Lab(v, 0.22, 90.0, -5.0) * 10  # noqa: E731  (Å⁻¹ -> nm⁻¹)
    q0 = lab(q[:, 0, 1, 1])
    expected = np.column_stack([lab(q[:, 1, 1, 1]) - q0, lab(q[:, 0, 2, 1]) - q0, lab(q[:, 0, 1, 2]) - q0])
    assert np.allclose(g.q_bragg(), q0, rtol=1e-8)
    assert np.allclose(g.reciprocal_basis(), expected, atol=1e-9 * np.abs(expected).max() + 1e-12)


def test_real_space_basis_is_dual():
    b = symmetric().reciprocal_basis()
    a = real_space_basis(b, (32, 48, 64))
    assert np.allclose(b.T @ a, 2 * np.pi * np.diag([1 / 32, 1 / 48, 1 / 64]))


def test_to_lab_recovers_a_sphere_from_skewed_sampling():
    # A sphere of radius 60 nm sampled on the skewed detector grid comes back round, right size.
    g = BraggGeometry(9.0, 0.5, (110e-6, 110e-6), 0.04, (0.22, 90.0, -5.0), (32.174, 12.6346))
    shape = (64, 64, 64)
    a = g.real_space_basis(shape)
    m = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")).reshape(3, -1)
    r = a @ m
    sphere = (np.linalg.norm(r, axis=0) <= 60.0).reshape(shape).astype(np.float32)
    lab, voxel = to_lab(sphere, a, voxel_nm=4.0, shape=(64, 64, 64))
    assert voxel == 4.0
    inside = lab > 0.5
    radius = (inside.sum() * 4.0**3 * 3 / (4 * np.pi)) ** (1 / 3)
    assert radius == pytest.approx(60.0, rel=0.05)
    z, y, x = np.nonzero(inside)
    extents = [(v.max() - v.min() + 1) * 4.0 for v in (z, y, x)]
    assert np.allclose(extents, 120.0, rtol=0.12)
    assert np.allclose([v.mean() for v in (z, y, x)], 32, atol=1.0)  # centred
    assert voxel_sizes(a).shape == (3,)


def test_geometry_round_trips_through_dict():
    g = symmetric()
    assert BraggGeometry.from_dict(g.to_dict()) == g
    assert g.scaled((2, 3, 4)).pixel_size_m == pytest.approx((3 * 55e-6, 4 * 55e-6))
