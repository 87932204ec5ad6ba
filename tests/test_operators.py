"""Every operator of the algebra against its textbook update on a small known state."""

import numpy as np
import pytest
import torch

from cdinn.physics.support import shrink_wrap
from cdinn.pipeline import invert
from cdinn.retrieval import parse_recipe
from cdinn.retrieval.state import Measurement, State, run

N = 12


@pytest.fixture
def state():
    gen = torch.Generator().manual_seed(4)
    amplitude = torch.rand(N, N, generator=gen) + 0.1
    obj = torch.polar(torch.rand(N, N, generator=gen), 6.28 * torch.rand(N, N, generator=gen))
    support = torch.zeros(N, N, dtype=torch.bool)
    support[3:9, 2:8] = True
    return State.from_object(Measurement(amplitude.square()), obj * support, support)


def p_m(state, x):
    """Fourier-modulus projection, textbook: keep the phase of F(x), take the measured modulus."""
    f = torch.fft.fftn(x, dim=(-2, -1), norm="ortho")
    return torch.fft.ifftn(state.measurement.projector.amplitude * torch.exp(1j * torch.angle(f)), dim=(-2, -1), norm="ortho")


def step(state, text):
    x = state.x.clone()
    s = state.support.inside.clone()
    run(state, parse_recipe(text))
    return x, s, state.x


def close(a, b):
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())


def test_er(state):
    x, s, new = step(state, "ER")
    close(new, s * p_m(state, x))


def test_hio(state):
    x, s, new = step(state, "HIO(beta=0.7)")
    p = p_m(state, x)
    close(new, s * p + (1 - s) * (x - 0.7 * p))


def test_raar(state):
    x, s, new = step(state, "RAAR(beta=0.8)")
    p = p_m(state, x)
    r_m = 2 * p - x
    r_s_r_m = 2 * s * r_m - r_m
    close(new, 0.4 * (r_s_r_m + x) + 0.2 * p)


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_difference_map(state, beta):
    x, s, new = step(state, f"DM(beta={beta})")
    # Elser's f_M = (1 + g_M) P_M - g_M, f_S = (1 + g_S) P_S - g_S with g_S = -1/beta, g_M = 1/beta.
    f_m = (1 + 1 / beta) * p_m(state, x) - (1 / beta) * x
    f_s = (1 - 1 / beta) * s * x + (1 / beta) * x
    close(new, x + beta * (s * f_m - p_m(state, f_s)))


def test_avg_averages_phase_aligned_iterates(state):
    x0 = state.x.clone()
    run(state, parse_recipe("AVG**2"))
    s = state.support.inside
    first = s * p_m(state, x0)
    second = s * p_m(state, first)
    # The second iterate is rotated onto the first before the sum: a global phase cannot wash out.
    overlap = (first.conj() * second).sum()
    close(state.final(), (first + second * torch.exp(-1j * torch.angle(overlap))) / 2)
    # ... and a later projection block ends the average.
    run(state, parse_recipe("ER"))
    assert state.average is None


def test_sup_is_the_shrink_wrap_of_the_iterate(state):
    x = state.x.clone()
    run(state, parse_recipe("ER * SUP(sigma=1.5, threshold=0.2)"))  # SUP first, then ER inside the new support
    new = shrink_wrap(x, 1.5, 0.2, 2)
    assert torch.equal(state.support.mask, new) and not torch.equal(new, x.abs() > 0) and bool(new.any())
    close(state.x, new * p_m(state, x))


def test_ad_first_step_is_adams_sign_step(state):
    x, s, new = step(state, "AD(lr=0.01)")
    inside = s.bool()
    scale = x.abs()[inside].mean()
    params = torch.view_as_real((x * s / scale).contiguous()).clone().requires_grad_(True)
    obj = torch.view_as_complex(params) * scale * s
    calc = torch.fft.fftn(obj, dim=(-2, -1), norm="ortho").abs()
    a = state.measurement.projector.amplitude
    chi2 = 1 - (calc * a).sum() ** 2 / ((calc**2).sum() * (a**2).sum())
    chi2.backward()
    # Adam's first step moves every coordinate by lr against the sign of its gradient.
    expected = torch.view_as_complex(params.detach() - 0.01 * torch.sign(params.grad)) * scale * s
    close(new, expected)
    assert float(state.chi2()[0]) < float(chi2.detach())


def test_one_conversion_of_the_pattern_per_invert(monkeypatch):
    from cdinn.models import build
    from cdinn.physics import fourier
    from cdinn.simulate import faceted_crystal, simulate_pattern

    pattern = simulate_pattern(faceted_crystal((32, 32), oversampling=2.5, seed=1), photons=1e8, seed=1).numpy()
    torch.manual_seed(0)
    model = build("cdinn2d", width=4, size=32).eval()
    seen = []
    real = fourier.as_tensor

    def counting(x, device=None):
        if isinstance(x, np.ndarray) and x is pattern:
            seen.append(1)
        return real(x, device)

    import importlib

    for module in ("cdinn.physics.fourier", "cdinn.retrieval.state", "cdinn.retrieval.engine", "cdinn.physics.metrics"):
        monkeypatch.setattr(importlib.import_module(module), "as_tensor", counting)
    invert(pattern, model, refine="ER**5 * AD**3 * TL**2")
    assert len(seen) == 1


def test_the_history_is_one_buffer_per_block(state):
    """chi² goes into one (iterations, starts) buffer per block: a small tensor kept per
    iteration sat between the FFTs' buffers in the heap and made every iteration page-fault
    fresh ones (benchmarks/results/retrieval.md)."""
    run(state, parse_recipe("AVG**3 * SUP * ER**7 * AD**2 * HIO**5"))
    assert [tuple(h.shape) for h in state.history] == [(5, 1), (2, 1), (7, 1), (3, 1)]
    assert state.chi2_history().shape == (17, 1)
    assert np.all(np.isfinite(state.chi2_history()))


def _counted(obj: torch.Tensor, seed: int) -> torch.Tensor:
    """A pattern of photon counts (1e6 photons) of a centred object: it has a noise floor."""
    from cdinn.physics.fourier import intensity
    from cdinn.physics.noise import poisson_noise

    return poisson_noise(intensity(obj), 1e6, generator=torch.Generator().manual_seed(seed))


def _crystal(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    support = torch.zeros(32, 32, dtype=torch.bool)
    support[10:22, 11:21] = True
    obj = torch.polar(0.5 + torch.rand(32, 32, generator=gen), 0.5 * torch.rand(32, 32, generator=gen)) * support
    return obj, support


def iterations(state):
    return state.chi2_history().shape[0]


def test_break_leaves_its_group_once_every_object_fits_to_the_noise_floor():
    obj, support = _crystal(1)
    measurement = Measurement(_counted(obj, 0))
    recipe = "ER**3 * (ER**2 * BREAK(below={}))**3 * ER"
    # from the true object: converged at the first check (chi² 1.0x floor, below 1.5x)
    state = run(State.from_object(measurement, obj, support), parse_recipe(recipe.format(1.5)))
    assert iterations(state) == 1 + 3
    assert [st["taken"] for st in state.stages if st["stage"].startswith("BREAK")] == [True]
    # a limit below what the true object reaches is never met: every repetition runs
    state = run(State.from_object(measurement, obj, support), parse_recipe(recipe.format(0.01)))
    assert iterations(state) == 1 + 6 + 3
    assert [st["taken"] for st in state.stages if st["stage"].startswith("BREAK")] == [False] * 3
    # a random start is far above its floor: never taken either
    gen = torch.Generator().manual_seed(2)
    start = torch.polar(torch.rand(32, 32, generator=gen), 6.28 * torch.rand(32, 32, generator=gen)) * support
    state = run(State.from_object(measurement, start, support), parse_recipe(recipe.format(1.5)))
    assert iterations(state) == 10


def test_break_is_never_taken_without_a_noise_floor(state):
    """The fixture's pattern is not photon counts: nothing says when it fits."""
    run(state, parse_recipe("(ER * BREAK(below=99))**4"))
    assert iterations(state) == 4 and state.measurement.floors == [None]


def test_break_in_a_stack_waits_for_every_pattern():
    crystals = [_crystal(s) for s in (3, 4)]
    measurement = Measurement.stacked([Measurement(_counted(o, s)) for s, (o, _) in enumerate(crystals)])
    supports = torch.stack([s for _, s in crystals])
    truth = torch.stack([o for o, _ in crystals])
    recipe = parse_recipe("ER * (ER**2 * BREAK(below=1.5))**2")
    state = run(State.from_object(measurement, truth, supports), recipe)
    assert iterations(state) == 1 and state.stages[0]["taken"] and len(state.stages[0]["chi2_each"]) == 2
    gen = torch.Generator().manual_seed(5)
    mixed = truth.clone()
    mixed[1] = torch.polar(torch.rand(32, 32, generator=gen), 6.28 * torch.rand(32, 32, generator=gen)) * supports[1]
    state = run(State.from_object(measurement, mixed, supports), recipe)
    assert iterations(state) == 5  # pattern 0 has converged, pattern 1 has not
