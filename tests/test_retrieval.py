import numpy as np
import pytest
import torch

from cdinn.errors import InputError
from cdinn.physics import align, intensity, phase_error, ssim_amplitude, to_native
from cdinn.retrieval import FourierProjector, Support, phase_retrieval
from cdinn.retrieval.algorithms import difference_map, error_reduction, hybrid_input_output, raar
from cdinn.simulate import simulate_pattern


def test_fourier_projection_is_idempotent_and_keeps_masked_pixels_free(crystal2d):
    amp = to_native(intensity(crystal2d).sqrt())
    x = torch.randn((1, 64, 64), dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    project = FourierProjector(amp)
    p1 = project(x)[0].clone()
    p2, chi2 = project(p1)
    assert torch.allclose(p1, p2, atol=1e-5)
    assert float(chi2[0]) < 1e-6  # float32 FFT round-off
    measured = torch.ones(64, 64, dtype=torch.bool)
    measured[:3, :3] = False  # low frequencies in native layout
    masked = FourierProjector(amp, measured)
    fx = torch.fft.fftn(x, dim=(-2, -1), norm="ortho")
    fp = torch.fft.fftn(masked(x)[0], dim=(-2, -1), norm="ortho")
    assert torch.allclose(fp[0, :3, :3], fx[0, :3, :3], atol=1e-4)
    assert torch.allclose(fp[0, 10:, 10:].abs(), amp[10:, 10:], atol=1e-4)


def test_support_projection_is_idempotent():
    s = Support(torch.rand(1, 16, 16) > 0.5)
    x = torch.randn(1, 16, 16, dtype=torch.complex64)
    once = x * s.inside
    assert torch.equal(once * s.inside, once)


@pytest.mark.parametrize(
    "algorithm, params",
    [(error_reduction, {}), (hybrid_input_output, {"beta": 0.9}), (raar, {"beta": 0.85}), (difference_map, {"beta": 1.0}), (difference_map, {"beta": 0.7})],
)
def test_each_algorithm_converges_with_a_known_support(crystal2d, algorithm, params):
    truth = crystal2d
    project = FourierProjector(to_native(intensity(truth).sqrt()))
    support = Support(to_native(truth.abs() > 0.05).unsqueeze(0))
    gen = torch.Generator().manual_seed(1)
    x = torch.polar(torch.rand((1, 64, 64), generator=gen), 6.3 * torch.rand((1, 64, 64), generator=gen)) * support.inside
    history = []
    for _ in range(300):
        x, chi2 = algorithm(x, project, support, **params)
        history.append(float(chi2[0]))
    for _ in range(30):  # a few ER steps turn any algorithm's iterate into an estimate
        x, chi2 = error_reduction(x, project, support)
    assert float(project.chi2(x)[0]) < 0.2 * history[0]
    assert float(project.chi2(x)[0]) < 0.02


def test_default_recipe_reconstructs_a_3d_crystal(crystal3d):
    pattern = simulate_pattern(crystal3d, photons=1e8, seed=0).numpy()
    result = phase_retrieval(pattern, starts=2, seed=0, progress=False)
    assert result.object.shape == pattern.shape and result.object.dtype == np.complex64
    assert result.history["chi2"].shape == (600, 2)
    assert result.chi2 == pytest.approx(float(result.extras["chi2_starts"].min()), rel=1e-4)
    assert result.chi2 < 0.01
    aligned = align(result.object, crystal3d).aligned
    assert ssim_amplitude(aligned, crystal3d) > 0.85
    assert phase_error(result.object, crystal3d) < 0.4
    # The object is centred in its array.
    com = np.array(np.nonzero(result.support)).mean(axis=1)
    assert np.all(np.abs(com - 16) < 2.5)


def test_seed_makes_runs_reproducible_and_starts_differ(crystal2d):
    pattern = intensity(crystal2d).numpy()
    a = phase_retrieval(pattern, "ER**10 * HIO**20", starts=3, seed=4, progress=False)
    b = phase_retrieval(pattern, "ER**10 * HIO**20", starts=3, seed=4, progress=False)
    assert np.array_equal(a.object, b.object)
    assert len(set(np.round(a.extras["chi2_starts"], 8))) == 3
    # Batching the starts (the GPU default) changes the speed, not the starts or their results.
    c = phase_retrieval(pattern, "AVG**5 * ER**10 * (SUP * HIO**20)**2", starts=3, seed=4, progress=False, batch=1)
    d = phase_retrieval(pattern, "AVG**5 * ER**10 * (SUP * HIO**20)**2", starts=3, seed=4, progress=False, batch=2)
    assert np.allclose(c.extras["chi2_starts"], d.extras["chi2_starts"], rtol=1e-3)
    assert c.history["chi2"].shape == d.history["chi2"].shape == (55, 3)
    assert c.provenance["best_start"] == d.provenance["best_start"]
    with pytest.raises(InputError, match="batch"):
        phase_retrieval(pattern, starts=2, batch=0)


def test_initial_guess_from_the_truth_stays_at_the_truth(crystal2d):
    pattern = intensity(crystal2d).numpy()
    support = crystal2d.abs().numpy() > 1e-6
    r = phase_retrieval(pattern, "ER**5", initial=crystal2d.numpy(), support=support, progress=False)
    assert r.chi2 < 1e-6
    assert phase_error(r.object, crystal2d) < 1e-3


def test_averaging_best_starts(crystal2d):
    pattern = simulate_pattern(crystal2d, photons=1e7, seed=2).numpy()
    r = phase_retrieval(pattern, "AVG**10 * ER**40 * (SUP * ER**10 * HIO**50)**3", starts=4, average_best=2, seed=0, progress=False)
    done = r.provenance["averaging"]
    assert r.provenance["average_best"] == 2 and r.chi2 < 0.05
    # Never worse than the best start by more than the stated margin.
    assert r.chi2 <= (1 + done["margin"]) * float(r.extras["chi2_starts"].min()) + 1e-7


def test_average_of_agreeing_starts_beats_each_and_of_disagreeing_ones_is_refused(crystal2d):
    from cdinn.retrieval.engine import average_starts
    from cdinn.retrieval.state import Measurement

    truth = crystal2d
    measurement = Measurement(intensity(truth))
    support = truth.abs() > 0
    gen = torch.Generator().manual_seed(0)
    # Three estimates of the same solution, each with its own noise, global phase and shift.
    noisy = []
    for k in range(3):
        noise = torch.complex(torch.randn(truth.shape, generator=gen), torch.randn(truth.shape, generator=gen))
        one = (truth + 0.03 * noise * support) * np.exp(1j * (0.7 * k))
        noisy.append(torch.roll(one, (k, -k), (0, 1)).to(torch.complex64))
    chi2 = [float(measurement.chi2(o.unsqueeze(0))[0]) for o in noisy]
    done = average_starts(measurement, noisy, chi2)
    assert done["used"] == 3 and not done["note"] and min(done["correlation"]) > 0.99
    err = lambda x: float(np.linalg.norm(align(x, truth).aligned - truth.numpy()))  # noqa: E731
    assert err(done["object"]) < 0.7 * min(err(o) for o in noisy)  # noise averages out
    assert done["chi2"] < min(chi2)
    # Two different solutions (the second's phase flipped in one half) do not average.
    other = truth.clone()
    other[: truth.shape[0] // 2] *= -1
    pair = [truth.to(torch.complex64), other.to(torch.complex64)]
    refused = average_starts(measurement, pair, [1e-3, 1e-3])
    assert refused["used"] == 1 and "different solutions" in refused["note"]
    assert np.array_equal(refused["object"], truth.numpy().astype(np.complex128))


def test_mask_leaves_missing_data_free(crystal2d):
    pattern = simulate_pattern(crystal2d, photons=1e8, seed=1).numpy()
    mask = np.zeros(pattern.shape, dtype=bool)
    mask[31:34, 31:34] = True  # beamstop over the central speckle
    damaged = pattern.copy()
    damaged[mask] = 0.0
    r = phase_retrieval(damaged, mask=mask, seed=0, starts=2, progress=False)
    assert r.provenance["masked_pixels"] == 9
    assert ssim_amplitude(align(r.object, crystal2d).aligned, crystal2d) > 0.85


def test_bad_arguments_are_input_errors(crystal2d):

    pattern = intensity(crystal2d).numpy()
    with pytest.raises(InputError):
        phase_retrieval(pattern, starts=0)
    with pytest.raises(InputError):
        phase_retrieval(pattern, starts=2, initial=crystal2d.numpy())
    with pytest.raises(InputError):
        phase_retrieval(pattern, support=np.ones((8, 8), bool))
    with pytest.raises(InputError):
        phase_retrieval(pattern, device="cuda" if not torch.cuda.is_available() else "nonsense")


def test_a_pattern_that_cannot_fit_is_refused_before_any_allocation(monkeypatch, crystal2d):
    from cdinn.retrieval import engine

    pattern = simulate_pattern(crystal2d, photons=1e7, seed=0).numpy()
    monkeypatch.setattr(engine, "available_memory", lambda: 64 * 64 * 50)  # a machine with almost nothing free
    with pytest.raises(InputError, match="GiB are available"):
        phase_retrieval(pattern, "ER**3", starts=2, progress=False)
    monkeypatch.setattr(engine, "available_memory", lambda: 8 << 30)
    assert phase_retrieval(pattern, "ER**3", starts=2, progress=False).chi2 < 1


def test_starts_stop_once_one_reaches_the_noise_floor(crystal2d):
    counts = simulate_pattern(crystal2d, photons=1e6, seed=2).numpy()
    all_starts = phase_retrieval(counts, "ER**200 * HIO**200", starts=4, seed=0, progress=False)
    converged = phase_retrieval(counts, "ER**200 * HIO**200", starts=4, seed=0, progress=False, until_converged=True)
    floor = converged.provenance["chi2_noise_floor"]
    # Each start that runs is the same start as without stopping (same seed, one at a time).
    ran = converged.provenance["starts_run"]
    assert ran < 4 and all_starts.provenance["starts_run"] == 4
    chi2 = all_starts.extras["chi2_starts"]
    assert np.allclose(converged.extras["chi2_starts"], chi2[:ran], rtol=1e-5)
    assert chi2[ran - 1] <= floor and np.all(chi2[:ran - 1] > floor)
    # Without photon counts there is no floor: every start runs.
    scaled = phase_retrieval(counts * 0.5, "ER**200 * HIO**200", starts=3, seed=0, progress=False, until_converged=True)
    assert scaled.provenance["starts_run"] == 3 and scaled.provenance["chi2_noise_floor"] is None


def test_a_measurements_device_wins_over_the_device_argument(crystal2d):
    """invert's retries hand phase_retrieval the pattern's Measurement and no device: the random
    starts must be drawn where the measurement lives (a CPU start times a GPU support failed)."""
    from cdinn.retrieval.state import Measurement

    pattern = simulate_pattern(crystal2d, photons=1e7, seed=2).numpy()
    other = "cuda" if not torch.cuda.is_available() else "cpu"
    measurement = Measurement(pattern, None, "cuda" if other == "cpu" else "cpu")
    res = phase_retrieval(measurement, "ER**3", seed=0, progress=False, device=other)
    assert res.provenance["device"] == str(measurement.device)
