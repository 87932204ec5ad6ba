"""Physics identities of the simulated object families and their augmentations."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.special import beta

from cdinn.physics import intensity
from cdinn.simulate import (
    SimulationConfig,
    shrink_sample,
    polygon_object,
    random_symmetry,
    simulate_rows,
    superellipsoid_object,
)
from cdinn.simulate.sample import Sample
from cdinn.simulate.superellipsoid import _correlated_noise


def _border(x):
    return np.concatenate([np.moveaxis(x, a, 0)[[0, -1]].ravel() for a in range(x.ndim)])


def _centrosymmetric(pattern):
    """I(-q) for the centred layout: index n//2 + m <-> n//2 - m, i.e. flip then roll by one (even n)."""
    flipped = np.flip(pattern)
    return np.roll(flipped, [1 if n % 2 == 0 else 0 for n in pattern.shape], axis=tuple(range(pattern.ndim)))


@pytest.mark.parametrize("seed", range(8))
def test_polygon_amplitude_phase_and_extent(seed):
    s = polygon_object(32, seed=seed)
    assert s.amplitude.shape == (32, 32) and s.amplitude.dtype == np.float32
    assert s.amplitude.min() >= 0 and s.amplitude.max() <= 1
    assert np.all(_border(s.amplitude) < 1e-3)  # blurred edge stays inside the grid
    inside = s.phase[s.support]
    assert -np.pi <= inside.min() and inside.max() <= np.pi
    assert np.ptp(inside) == pytest.approx(s.params["phase_ptp"], abs=1e-5)
    assert np.all(s.phase[~s.support] == 0)
    assert np.all(s.amplitude[s.support] > 0.25)  # the sharp polygon lies under the blurred one


def test_polygon_phase_range_reaches_full_span():
    spans = [polygon_object(32, seed=i).params["phase_ptp"] for i in range(60)]
    assert max(spans) > 0.8 * 2 * np.pi and min(spans) > 0
    assert max(spans) <= 2 * np.pi


@pytest.mark.parametrize("seed", range(4))
def test_superellipsoid_shape_volume_and_phase(seed):
    s = superellipsoid_object(32, seed=seed)
    p = s.params
    assert s.amplitude.min() >= 0 and s.amplitude.max() == 1
    assert np.all(_border(s.amplitude) == 0)  # any rotation fits in the grid
    # Voxel count of Eq. 4 against the analytic volume 2abc e n B(n/2+1, n) B(e/2, e/2).
    volume = 2 * p["a"] * p["b"] * p["c"] * p["e"] * p["n"] * beta(p["n"] / 2 + 1, p["n"]) * beta(p["e"] / 2, p["e"] / 2)
    assert s.support.sum() == pytest.approx(volume, rel=0.08)
    inside = s.phase[s.support]
    assert inside.min() == pytest.approx(0, abs=1e-6) and inside.max() == pytest.approx(1.0, abs=1e-6)
    assert np.all(s.phase[~s.support] == 0)


def test_superellipsoid_phase_scale_and_soft_edge():
    s = superellipsoid_object(24, phase_max=2.5, edge_width=1.0, seed=3)
    assert s.phase.max() == pytest.approx(2.5, abs=1e-5)
    assert 0 < s.amplitude.min() < 1e-3 or s.amplitude.min() == 0
    assert ((s.amplitude > 0.05) & (s.amplitude < 0.95)).any()


def test_correlated_noise_has_the_gaussian_correlation_lengths():
    lengths = np.array([1.5, 3.0, 4.0])
    field = _correlated_noise((48, 48, 48), np.diag(lengths**2), np.random.default_rng(0))
    field = field - field.mean()
    for axis, length in enumerate(lengths):
        lag = int(2 * length)
        x = np.moveaxis(field, axis, 0)
        corr = (x[:-lag] * x[lag:]).mean() / field.var()
        # Eq. 5 convolves white noise with exp(-x^2 / 2L^2): correlation exp(-d^2 / 4L^2).
        assert corr == pytest.approx(np.exp(-(lag**2) / (4 * length**2)), abs=0.06)


@pytest.mark.parametrize("kind", ["polygons", "superellipsoids", "faceted"])
def test_generators_are_deterministic_by_seed_and_index(kind):
    config = SimulationConfig(kind, object_size=16, photons=(1e4, 1e6), seed=5)
    a, b = simulate_rows(config, 3)[0], simulate_rows(config, 3)[0]
    c = simulate_rows(config, 4)[0]
    for key in ("intensity", "amplitude", "phase", "support"):
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["amplitude"], c["amplitude"])
    assert a["intensity"].shape == (32,) * config.ndim and a["amplitude"].shape == (16,) * config.ndim
    assert np.array_equal(a["intensity"], np.round(a["intensity"]))  # Poisson counts
    assert 1e4 <= a["params"]["photons"] <= 1e6


def test_noise_free_pattern_is_the_forward_model_of_the_target():
    row = simulate_rows(SimulationConfig("polygons", object_size=16, oversampling=2.0, seed=1), 0)[0]
    obj = row["amplitude"] * np.exp(1j * row["phase"])
    padded = np.zeros((32, 32), complex)
    padded[8:24, 8:24] = obj
    assert np.allclose(row["intensity"], intensity(torch.from_numpy(padded)).numpy(), atol=1e-4)
    assert np.isnan(row["params"]["photons"])


def test_phase_is_wrapped_only_when_asked():
    config = SimulationConfig("superellipsoids", object_size=16, seed=2, options={"phase_max": 8.0})
    raw = simulate_rows(config, 0)[0]["phase"]
    assert raw.max() == pytest.approx(8.0, abs=1e-5)
    wrapped = simulate_rows(dataclasses.replace(config, wrap_phase=True), 0)[0]["phase"]
    assert wrapped.max() <= np.pi + 1e-6
    assert np.allclose(np.exp(1j * wrapped), np.exp(1j * raw), atol=1e-4)


def test_random_symmetry_keeps_the_centre_and_the_pattern_up_to_symmetry():
    s = superellipsoid_object(16, seed=1)
    for seed in range(6):
        t = random_symmetry(s, np.random.default_rng(seed))
        assert t.amplitude.sum() == pytest.approx(s.amplitude.sum())
        # A transform that fixes the array centre keeps the centroid at the same distance.
        grid = np.indices(s.amplitude.shape) - 8
        c0 = np.sort(np.abs([(g * s.amplitude).sum() for g in grid]))
        c1 = np.sort(np.abs([(g * t.amplitude).sum() for g in grid]))
        assert np.allclose(c0, c1, atol=1e-3)
        # |F| is invariant under rotations/flips up to the same permutation of its voxels.
        i_s = np.sort(intensity(torch.from_numpy(s.object)).numpy().ravel())
        i_t = np.sort(intensity(torch.from_numpy(t.object)).numpy().ravel())
        assert np.allclose(i_s, i_t, rtol=1e-4, atol=1e-6 * i_s.max())


def test_shrink_sample_shrinks_the_object_and_keeps_the_phase_unwrapped():
    n = 32
    x = np.indices((n, n)) - n // 2
    support = (np.abs(x[0]) < 12) & (np.abs(x[1]) < 12)
    phase = np.where(support, 3.0 * x[1] / 12, 0.0)  # a ramp spanning nearly -3..3 rad
    s = Sample(support.astype(np.float32), phase.astype(np.float32), support)
    r = shrink_sample(s, 0.5)
    assert r.amplitude.max() == pytest.approx(1.0) and r.amplitude.min() >= 0
    assert r.support.sum() == pytest.approx(support.sum() / 4, rel=0.15)
    inside = r.phase[r.support]
    assert inside.max() - inside.min() > 4.5  # still a single ramp, not wrapped
    steps = np.diff(np.where(r.support, r.phase, np.nan), axis=1)
    assert np.nanmax(np.abs(steps)) < 1.0  # no 2 pi jump anywhere inside
    with pytest.raises(ValueError):
        shrink_sample(s, 1.5)


def test_bad_configurations_raise():
    with pytest.raises(ValueError):
        SimulationConfig("nope")
    with pytest.raises(ValueError):
        SimulationConfig("polygons", photons=(10.0, 1.0))
    with pytest.raises(ValueError):
        SimulationConfig("superellipsoids", resample=(0.5, 1.2))
    with pytest.raises(ValueError):
        SimulationConfig("atomistic", object_size=8, options={"cells": 20})
    assert SimulationConfig("polygons", ndim=3).ndim == 2


# --- atomistic gold crystals (need ase + asap3) ---------------------------------------------


@pytest.fixture(scope="module")
def gold_rows():
    pytest.importorskip("asap3")
    config = SimulationConfig("atomistic", object_size=10, oversampling=2.0, seed=3, options={"cells": 7})
    return config, simulate_rows(config, 0)


def test_atomistic_control_has_zero_phase_and_centrosymmetric_pattern(gold_rows):
    _, (strained, control) = gold_rows
    assert np.array_equal(control["amplitude"], strained["amplitude"])
    assert np.all(control["phase"] == 0)
    assert control["params"]["control"] == 1 and strained["params"]["control"] == 0
    i = control["intensity"]
    assert np.allclose(i, _centrosymmetric(i), rtol=1e-4, atol=1e-6 * i.max())
    # The strained crystal's phase breaks Friedel symmetry.
    j = strained["intensity"]
    assert not np.allclose(j, _centrosymmetric(j), rtol=1e-3, atol=1e-4 * j.max())


def test_atomistic_amplitude_phase_and_determinism(gold_rows):
    config, (strained, _) = gold_rows
    amp = strained["amplitude"]
    assert amp.min() >= 0 and amp.max() == 1 and np.all(_border(amp) == 0)
    assert np.any(strained["phase"] != 0) and np.all(strained["phase"][~strained["support"]] == 0)
    eps = [v for k, v in strained["params"].items() if k.startswith("eps_")]
    assert len(eps) == 6 and max(abs(e) for e in eps) <= 0.01
    again = simulate_rows(config, 0)[0]
    assert np.array_equal(again["phase"], strained["phase"]) and np.array_equal(again["intensity"], strained["intensity"])


def test_atomistic_strain_is_at_most_one_percent():
    pytest.importorskip("asap3")
    from cdinn.simulate.atomistic import gold_crystal

    initial, final, params = gold_crystal(cells=7, seed=11)
    u = final - initial
    # The least-squares displacement gradient is the crystal's mean strain (plus rotation).
    coef, *_ = np.linalg.lstsq(np.c_[initial, np.ones(len(initial))], u, rcond=None)
    grad = coef[:3].T
    strain = (grad + grad.T) / 2
    assert np.abs(strain).max() <= 0.0105
    applied = np.array([[params[f"eps_{min(i, j)}{max(i, j)}"] for j in range(3)] for i in range(3)])
    assert np.abs(applied).max() <= 0.01
    assert params["n_atoms"] == len(initial) < 4 * 7**3


@pytest.mark.parametrize("voxel", [1.0, 2.0])
def test_deposited_lattice_is_uniform_inside_and_conserves_atoms(voxel):
    from cdinn.simulate.atomistic import deposit_atoms, fcc_block

    sites = fcc_block(12)  # 12 cells: 6 lattice units each side of the grid centre (voxel 12)
    core = (slice(10, 14),) * 3  # well inside at both voxel sizes
    density, phase = deposit_atoms(sites, np.ones(len(sites)), 24, voxel)
    # Cloud-in-cell on a whole number of unit cells per voxel: no moiré in the interior.
    assert np.allclose(density[core], 1.0, atol=1e-9)
    assert np.allclose(phase[density > 0], 1.0)
    # Every atom is deposited whole: the density sums to the atom count in bulk units.
    assert np.isclose(density.sum() * 4 * voxel**3, len(sites))
    # A 10 % expansion (a lattice period that is no longer the voxel's) varies the interior by
    # at most 12 % here; binning each atom into its nearest voxel jumps by 60-75 % (whole atoms).
    expanded, _ = deposit_atoms(sites * 1.1, np.zeros(len(sites)), 24, voxel)
    core = (slice(9, 15),) * 3 if voxel == 1.0 else core
    assert np.ptp(expanded[core] / expanded[core].max()) < 0.2
