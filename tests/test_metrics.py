import numpy as np
import pytest
import torch

from cdinn.physics import (
    align,
    chi2,
    chi2_amplitude,
    fourier_shell_correlation,
    gaussian_nll,
    intensity,
    pearson,
    phase_error,
    poisson_nll,
    spectral_weight,
    ssim_amplitude,
    twin,
)


def test_chi2_is_least_squares_scaled(crystal2d):
    i = intensity(crystal2d)
    noisy = i * (1 + 0.1 * torch.rand(i.shape, generator=torch.Generator().manual_seed(0)))
    a, b = noisy.sqrt(), i.sqrt()
    s = (a * b).sum() / (a * a).sum()
    explicit = ((s * a - b) ** 2).sum() / (b * b).sum()
    assert float(chi2(noisy, i)) == pytest.approx(float(explicit), rel=1e-3)
    assert float(chi2(7.0 * i, i)) < 1e-6  # the scale is free


def test_chi2_invariant_to_translation_and_twin(crystal2d):
    i = intensity(crystal2d)
    assert float(chi2(intensity(torch.roll(crystal2d, (4, 2), (0, 1))), i)) < 1e-6
    assert float(chi2(intensity(twin(crystal2d)), i)) < 1e-6
    other = torch.roll(crystal2d, 5, 0) * torch.exp(1j * torch.linspace(0, 3, 64)).to(torch.complex64)
    assert float(chi2(intensity(other), i)) > 1e-3


def test_chi2_ignores_masked_pixels(crystal2d):
    i = intensity(crystal2d)
    corrupt = i.clone()
    mask = torch.zeros_like(i, dtype=torch.bool)
    mask[30:34, 30:34] = True
    corrupt[mask] = 0.0
    assert float(chi2(corrupt, i)) > 1e-3
    assert float(chi2(corrupt, i, mask=mask)) < 1e-6


def test_chi2_amplitude_batched(crystal2d):
    a = intensity(crystal2d).sqrt()
    batch = torch.stack([a, a * 3, a.flip(0)])
    out = chi2_amplitude(batch, a, ndim=2)
    assert out.shape == (3,)
    assert out[0] < 1e-6 and out[1] < 1e-6 and out[2] > 1e-3


def test_pearson_and_likelihoods(crystal2d):
    i = intensity(crystal2d)
    assert float(pearson(i, 2 * i + 1)) == pytest.approx(1.0, abs=1e-5)
    counts = torch.poisson(i / i.sum() * 1e6, generator=torch.Generator().manual_seed(1))
    wrong = intensity(torch.roll(crystal2d, 1, 0) * torch.exp(1j * torch.linspace(0, 2, 64)).to(torch.complex64))
    assert poisson_nll(i, counts) < poisson_nll(wrong, counts)
    assert gaussian_nll(i, counts) < gaussian_nll(wrong, counts)


def test_alignment_removes_shift_phase_and_twin(crystal2d):
    moved = twin(torch.roll(crystal2d, (3, -2), (0, 1))) * np.exp(1.1j)
    a = align(moved, crystal2d)
    assert a.twin
    assert a.correlation > 0.999
    assert ssim_amplitude(a.aligned, crystal2d) > 0.99
    assert phase_error(moved, crystal2d) < 0.02


def test_phase_error_detects_a_wrong_phase(crystal2d):
    wrong = crystal2d.abs() * torch.exp(1j * (crystal2d.angle() + torch.linspace(-3, 3, 64)[:, None])).to(torch.complex64)
    assert phase_error(wrong, crystal2d) > 0.2


def test_fsc_and_spectral_weight(crystal3d):
    fsc = fourier_shell_correlation(crystal3d, crystal3d)
    assert torch.allclose(fsc[:10], torch.ones(10), atol=1e-4)
    noise = torch.randn(crystal3d.shape, generator=torch.Generator().manual_seed(0)).to(torch.complex64)
    assert fourier_shell_correlation(crystal3d, noise)[5:].abs().mean() < 0.3
    sw = spectral_weight(intensity(crystal3d))
    assert sw.shape == (16,)
    assert sw[0] > 100 * sw[-1]  # compact object: weight falls with frequency


@pytest.mark.parametrize("shape,photons", [((64, 64), 1e6), ((64, 64), 1e8), ((48, 48, 48), 1e7)])
def test_noise_floor_is_the_true_objects_chi2(shape, photons):
    """The floor estimated from the counts alone matches the chi² of the object that made them."""
    from cdinn.physics.noise import noise_floor_chi2
    from cdinn.simulate import faceted_crystal, simulate_pattern

    truth = faceted_crystal(shape, oversampling=2.8, phase_range=2.0, seed=5)
    counts = simulate_pattern(truth, photons=photons, seed=6)
    true_chi2 = float(chi2(intensity(truth), counts))
    floor = noise_floor_chi2(counts)
    assert 0.9 * true_chi2 <= floor <= 1.12 * true_chi2, (floor, true_chi2)
    # Masked pixels do not count: a gap and a beamstop change little.
    mask = np.zeros(shape, dtype=bool)
    mask[:, 40:43] = True
    mask[tuple(slice(n // 2 - 2, n // 2 + 3) for n in shape)] = True
    masked = noise_floor_chi2(counts, mask)
    true_masked = float(chi2(intensity(truth), counts, mask))
    assert 0.9 * true_masked <= masked <= 1.12 * true_masked, (masked, true_masked)
    # Without photon counts there is no floor to know.
    assert noise_floor_chi2(counts * 1.5) is None
    assert noise_floor_chi2(counts - 1.0) is None


def test_sqrt_count_variance_matches_sampled_poisson_counts():
    from cdinn.physics.noise import sqrt_count_variance

    lam = torch.tensor([0.0, 1e-6, 0.05, 0.7, 3.0, 40.0, 5e4], dtype=torch.float64)
    f = sqrt_count_variance(lam)
    g = torch.Generator().manual_seed(0)
    k = torch.poisson(lam.expand(400_000, -1).contiguous(), generator=g)
    sampled = (k.sqrt() - lam.sqrt()).square().mean(0)
    assert f[0] == 0 and abs(float(f[1]) - 2e-6) < 1e-7  # dark pixels: ~2 lam
    assert torch.allclose(f[2:], sampled[2:], rtol=0.02), (f, sampled)
    assert abs(float(f[-1]) - 0.25) < 1e-3


def test_noise_floors_of_a_batch_are_each_patterns_own():
    """The batched floor (a stack's network-only inversion) is the single-pattern floor of each item,
    with a per-pattern mask and a pattern that is not counts in the same batch."""
    from cdinn.physics.noise import noise_floor_chi2, noise_floors
    from cdinn.simulate import faceted_crystal, simulate_pattern

    counts = [simulate_pattern(faceted_crystal((48, 48), oversampling=3.0, seed=s), photons=p, seed=s).float()
              for s, p in ((1, 1e5), (2, 1e7), (3, 1e9))]
    counts[2] = counts[2] * 0.5  # normalised data: no floor
    masks = torch.zeros(3, 48, 48, dtype=torch.bool)
    masks[1, :, 20:23] = True
    masks[1, 0, 0] = True
    batch = torch.stack(counts)
    batch[1, 0, 0] = float("nan")  # an unmeasured pixel may hold anything
    floors = noise_floors(batch, masks, ndim=2)
    assert floors[2] is None
    for i in range(2):
        single = noise_floor_chi2(batch[i], masks[i])
        assert single is not None and abs(floors[i] - single) <= 1e-4 * single, (floors[i], single)
    assert floors[0] > floors[1]  # fewer photons, a larger relative noise
