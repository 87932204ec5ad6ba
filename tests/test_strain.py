import numpy as np
import pytest

from cdinn.physics.strain import bragg_norm, gradient_inside, remove_ramp, strain_map


def test_bragg_norm_gold_111():
    assert bragg_norm((1, 1, 1), 0.408) == pytest.approx(2 * np.pi * np.sqrt(3) / 0.408)


@pytest.mark.parametrize("g", [(0, 0, 1), (1, 1, 1), (0.3, -0.5, 0.8)])
def test_strain_of_a_known_displacement_field(g):
    # u = a (r·ĝ)² along G: phase |G| u wraps many times; ε = ∂u/∂x_G = 2 a (r·ĝ).
    n, voxel, g_norm, a = 40, 5.0, 26.67, 1e-4  # nm, nm⁻¹, nm⁻¹
    ghat = np.asarray(g, float) / np.linalg.norm(g)
    axes = [(np.arange(n) - n // 2) * voxel for _ in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    s = np.tensordot(ghat, grid, axes=1)
    support = np.linalg.norm(grid, axis=0) <= 80.0
    u = a * s**2
    assert (g_norm * u[support]).max() > 2 * np.pi  # the phase does wrap
    obj = support * np.exp(1j * g_norm * u)
    smap = strain_map(obj, support, ghat, g_norm, voxel)
    expected = 2 * a * s
    err = np.abs(smap.strain[support] - expected[support])
    # exact for a quadratic, surface included (second-order one-sided differences there)
    assert np.nanmax(err) < 1e-6 * np.abs(expected[support]).max()
    # displacement: ramp and offset removed, the quadratic part survives
    _, ramp = remove_ramp(np.where(support, u, 0), support)
    assert np.abs(ramp).max() < 1e-9
    d = smap.displacement[support] - np.nanmean(smap.displacement[support])
    assert np.allclose(d, (u - u[support].mean())[support], atol=1e-3 * np.abs(u).max() + 1e-6)


def test_strain_on_a_skewed_grid_uses_the_chain_rule():
    # The same field sampled at r = A m with a strongly non-orthogonal A (as a Bragg detector grid).
    n, g_norm, a = 40, 26.67, 1e-4
    basis = np.array([[4.0, 2.5, 0.0], [0.0, 5.0, -3.0], [1.0, 0.0, 6.0]])
    ghat = np.array([0.2, -0.6, 0.77])
    ghat /= np.linalg.norm(ghat)
    m = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for _ in range(3)], indexing="ij"))
    r = np.tensordot(basis, m, axes=1)
    s = np.tensordot(ghat, r, axes=1)
    support = np.linalg.norm(r, axis=0) <= 70.0
    obj = support * np.exp(1j * g_norm * a * s**2)
    smap = strain_map(obj, support, ghat, g_norm, basis)
    # The support is not quite centro-symmetric on the grid, so a tiny mean ramp is removed.
    err = np.abs(smap.strain - 2 * a * s)[support] / np.abs(2 * a * s[support]).max()
    assert np.nanmedian(err) < 2e-4 and np.nanmax(err) < 0.05  # first-order only where the surface allows one step
    with pytest.raises(ValueError, match="basis"):
        strain_map(obj, support, ghat, g_norm, np.zeros((3, 3)))


def test_gradient_ignores_values_outside_the_support():
    field = np.zeros((10, 10)) + np.arange(10)[None, :]
    support = np.zeros((10, 10), bool)
    support[3:7, 3:7] = True
    field[~support] = 1e6
    gy, gx = gradient_inside(field, support)
    assert np.allclose(gx[support], 1.0) and np.allclose(gy[support], 0.0)
    assert np.isnan(gx[~support]).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        strain_map(np.ones((4, 4, 4), complex), np.zeros((4, 4, 4), bool), (0, 0, 1), 1.0, 1.0)
    with pytest.raises(ValueError):
        strain_map(np.ones((4, 4, 4), complex), np.ones((4, 4, 4), bool), (0, 0), 1.0, 1.0)
