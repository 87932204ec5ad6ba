import numpy as np
import pytest
import torch

from cdinn.physics import estimate_oversampling, intensity, poisson_noise
from cdinn.simulate import faceted_crystal, simulate_pattern


@pytest.mark.parametrize("shape", [(64, 64), (32, 32, 32)])
def test_crystal_amplitude_phase_and_size(shape):
    obj = faceted_crystal(shape, oversampling=2.0, phase_range=1.2, seed=11)
    amp, phase = obj.abs(), obj.angle()
    assert obj.dtype == torch.complex64 and obj.shape == shape
    assert float(amp.min()) >= 0 and float(amp.max()) <= 1.0 + 1e-6
    inside = amp > 0.5
    assert float(phase[inside].max() - phase[inside].min()) == pytest.approx(1.2, abs=0.02)
    occupied = torch.nonzero(amp > 0.1)
    extent = (occupied.max(0).values - occupied.min(0).values + 1).float()
    assert bool((extent <= shape[0] / 2.0 + 2).all()) and bool((extent >= shape[0] / 4.0).all())


def test_crystal_is_deterministic_by_seed():
    a = faceted_crystal((32, 32, 32), seed=3)
    assert torch.equal(a, faceted_crystal((32, 32, 32), seed=3))
    assert not torch.equal(a, faceted_crystal((32, 32, 32), seed=4))


def test_oversampling_is_as_requested():
    obj = faceted_crystal((64, 64), oversampling=4.0, phase_range=0.0, seed=2)
    ratios = estimate_oversampling(intensity(obj), threshold=0.02)
    assert all(3.2 < r < 7.0 for r in ratios)


def test_poisson_noise_counts():
    obj = faceted_crystal((32, 32, 32), seed=1)
    clean = simulate_pattern(obj)
    noisy = simulate_pattern(obj, photons=1e6, seed=5)
    assert float(noisy.sum()) == pytest.approx(1e6, rel=0.01)
    assert torch.equal(noisy, noisy.round())
    assert torch.equal(noisy, simulate_pattern(obj, photons=1e6, seed=5))
    batch = poisson_noise(torch.stack([clean, clean]), torch.tensor([1e4, 1e7]), ndim=3)
    assert batch[0].sum() < 2e4 < 5e6 < batch[1].sum()
    with pytest.raises(ValueError):
        poisson_noise(torch.zeros(8, 8), 10.0)


def test_bad_generator_arguments():
    with pytest.raises(ValueError):
        faceted_crystal((8,), seed=0)
    with pytest.raises(ValueError):
        faceted_crystal((16, 16), oversampling=0.5)
    assert np.isfinite(faceted_crystal((16, 16, 16), oversampling=1.0, seed=0).numpy()).all()
