"""N patterns refined as one batch (``Measurement.stacked``, ``refine_batch``): what a GPU runs
for a stack, held here on the CPU to the pattern-by-pattern refinement of ``invert``."""

import numpy as np
import pytest
import torch

from cdinn.models import load_model
from cdinn.pipeline.inversion import invert_many
from cdinn.retrieval.state import Measurement, State, run
from cdinn.retrieval import parse_recipe
from cdinn.simulate import faceted_crystal, simulate_pattern


@pytest.fixture(scope="module")
def patterns():
    out = {}
    for seed in (11, 12, 13):
        truth = faceted_crystal((64, 64, 64), oversampling=3.0, phase_range=2.0, seed=seed)
        out[f"p{seed}"] = (simulate_pattern(truth, photons=1e7, seed=seed).numpy(), None)
    mask = np.zeros((64, 64, 64), dtype=bool)
    mask[31:34, 31:34, :] = True  # a beamstop-like stripe on one pattern only
    out["p12"] = (out["p12"][0], mask)
    return out


@pytest.fixture(scope="module")
def model():
    return load_model("autophasenn-64")


def test_a_stacked_measurement_projects_each_item_against_its_own_pattern(patterns):
    singles = [Measurement(p, m) for p, m in patterns.values()]
    stacked = Measurement.stacked(singles)
    assert stacked.patterns == 3 and stacked.shape == (64, 64, 64) and stacked.ndim == 3
    gen = torch.Generator().manual_seed(0)
    x = torch.polar(torch.rand((3, 64, 64, 64), generator=gen), 6.28 * torch.rand((3, 64, 64, 64), generator=gen))
    projected, chi2 = stacked.projector(x.clone())
    for i, single in enumerate(singles):
        p, c = single.projector(x[i:i + 1].clone())
        assert torch.allclose(projected[i:i + 1], p, rtol=1e-4, atol=1e-6 * float(p.abs().max()))
        assert torch.allclose(chi2[i], c[0], rtol=1e-5)
    with pytest.raises(ValueError, match="per pattern"):
        stacked.noise_floor


def test_a_state_of_n_patterns_iterates_as_n_states(patterns, monkeypatch):
    """Same arithmetic item by item: the torch operations on both sides (the compiled loops,
    which one pattern takes on a CPU, round differently), so only the order of reductions over
    a batch differs: the projections agree to rounding, and AD (whose rounding grows through
    Adam's normalisation) nearly so."""
    from cdinn.retrieval import kernels

    monkeypatch.setattr(kernels, "applies", lambda *tensors: False)
    singles = [Measurement(p, m) for p, m in patterns.values()]
    support = torch.zeros((64, 64, 64), dtype=torch.bool)
    support[20:44, 20:44, 20:44] = True
    gen = torch.Generator().manual_seed(1)
    starts = torch.polar(torch.rand((3, 64, 64, 64), generator=gen), 6.28 * torch.rand((3, 64, 64, 64), generator=gen)) * support
    for text, rtol in (("AVG**3 * ER**5 * SUP * HIO**12 * RAAR**3 * DM**2", 1e-4), ("AD**3", 1e-3)):
        recipe = parse_recipe(text)
        batch = run(State.from_object(Measurement.stacked(singles), starts, support.expand(3, -1, -1, -1)), recipe)
        assert [len(st["chi2_each"]) for st in batch.stages] == [3] * len(batch.stages)
        for i, single in enumerate(singles):
            alone = run(State.from_object(single, starts[i], support), recipe)
            assert torch.equal(batch.supports()[i], alone.supports()[0])
            np.testing.assert_allclose(batch.chi2_history()[:, i], alone.chi2_history()[:, 0], rtol=rtol)
            scale = float(alone.objects().abs().max())
            assert torch.allclose(batch.objects()[i], alone.objects()[0], rtol=rtol, atol=rtol * scale), (text, i)


@pytest.mark.parametrize("refine", ["AVG**10 * ER**20 * (SUP * ER**10 * HIO**20)**2 * SUP * ER**10 * HIO**30", "ER**3"])
def test_refining_a_batch_gives_each_pattern_its_own_result(patterns, model, refine, monkeypatch):
    """Three patterns, one of them masked, refined batched and one by one in the same
    arithmetic: the default refinement's steps without its BREAK (130 iterations; HIO amplifies
    rounding, most where masked pixels are free: a batch leaves the loop only when every pattern
    has converged, one pattern alone when it has), and three ER iterations, which leave every
    pattern above its noise floor, so that each is retried on its own (one cheap attempt here)."""
    from cdinn.pipeline import inversion
    from cdinn.retrieval import kernels

    monkeypatch.setattr(kernels, "applies", lambda *tensors: False)
    monkeypatch.setattr(inversion, "RETRIES", ({"recipe": "ER**10 * HIO**20", "dilation": 3},))
    batched = dict(invert_many(patterns, model, refine, batch_refine=True, retry=True))
    single = dict(invert_many(patterns, model, refine, batch_refine=False, retry=True))
    if refine == "ER**3":
        assert all(len(r.provenance["retries"]) == 1 for r in batched.values())
    assert list(batched) == list(patterns)
    for name in patterns:
        a, b = batched[name], single[name]
        np.testing.assert_allclose(a.chi2, b.chi2, rtol=5e-2)  # rounding, amplified by HIO: 0-3 % seen
        assert [s["stage"] for s in a.provenance["stages"]] == [s["stage"] for s in b.provenance["stages"]]
        assert a.history["chi2"].shape == b.history["chi2"].shape
        assert [r["attempt"] for r in a.provenance["retries"]] == [r["attempt"] for r in b.provenance["retries"]]
        assert a.provenance["refine"] == b.provenance["refine"] and a.provenance["masked_pixels"] == b.provenance["masked_pixels"]
        overlap = abs(np.vdot(a.object, b.object)) / (np.linalg.norm(a.object) * np.linalg.norm(b.object))
        assert overlap > 0.99, (name, overlap)
    assert batched["p12"].provenance["masked_pixels"] == 3 * 3 * 64


def test_network_steps_are_refined_pattern_by_pattern(patterns, model):
    """TL tunes the network on one pattern: the batch path refuses it and invert_many does not batch it."""
    from cdinn.pipeline.inversion import refine_batch

    with pytest.raises(ValueError, match="TL and DIP"):
        refine_batch([patterns["p11"]], torch.zeros(1, 32, 32, 32, dtype=torch.complex64), None, 0.0, model, "TL**1")


def test_a_batch_too_big_for_memory_is_refined_in_parts(patterns, model, monkeypatch):
    """The patterns of one network call are refined in as many batches as memory needs."""
    from cdinn.pipeline import inversion

    sizes = []
    original = inversion.refine_batch
    monkeypatch.setattr(inversion, "refine_batch", lambda pats, *a, **k: sizes.append(len(pats)) or original(pats, *a, **k))
    from cdinn.retrieval import engine

    monkeypatch.setattr(engine, "available_memory", lambda: 2 * 2 * 64**3 * 76)  # room for two 64³ patterns
    assert engine.patterns_per_batch(64**3, "cpu") == 2
    results = dict(invert_many(patterns, model, "ER**3", batch_refine=True, retry=False))
    assert sizes == [2, 1] and all(r.chi2 < 0.1 for r in results.values())


def test_a_stack_phased_in_batches_gives_each_pattern_its_own_phase_retrieval(patterns, monkeypatch):
    """``phase_stack`` in batches (what a GPU runs) against ``phase_retrieval(seed=seed + i)``
    one pattern at a time, in the same arithmetic: the same starts, iterates and results."""
    from cdinn.retrieval import kernels, phase_retrieval, phase_stack

    monkeypatch.setattr(kernels, "applies", lambda *tensors: False)
    stack = np.stack([p for p, _ in patterns.values()])
    mask = np.stack([np.zeros(p.shape, bool) if m is None else m for p, m in patterns.values()])
    recipe = "ER**5 * SUP * HIO**20 * ER**10"
    batched = list(phase_stack(stack, recipe, mask, seed=40, batch=2))
    assert len(batched) == 3
    for i, got in enumerate(batched):
        alone = phase_retrieval(stack[i], recipe, mask=mask[i], seed=40 + i, progress=False)
        assert got.provenance["seed"] == 40 + i and got.provenance["recipe"] == recipe
        assert got.provenance["masked_pixels"] == alone.provenance["masked_pixels"]
        np.testing.assert_allclose(got.history["chi2"], alone.history["chi2"], rtol=1e-3)
        np.testing.assert_allclose(got.chi2, alone.chi2, rtol=1e-3)
        overlap = abs(np.vdot(got.object, alone.object)) / (np.linalg.norm(got.object) * np.linalg.norm(alone.object))
        assert overlap > 0.999, (i, overlap)
    # one at a time (a CPU's default) is phase_retrieval itself
    single = list(phase_stack(stack[:2], recipe, mask[:2], seed=40))
    np.testing.assert_array_equal(single[1].object, phase_retrieval(stack[1], recipe, mask=mask[1], seed=41, progress=False).object)


def _small_patterns(size: int) -> dict:
    """Three 2D patterns of ``size``² pixels (1e8 photons), by seed."""
    return {s: (simulate_pattern(faceted_crystal((size, size), oversampling=3.0, phase_range=1.0, seed=s), photons=1e8,
                                 seed=s).numpy(), None) for s in range(3)}


def test_small_patterns_are_refined_as_one_batch_on_a_cpu_too(monkeypatch):
    """By default a CPU batches the refinement of small patterns only (per-call overhead is
    most of their iteration), a GPU always; an explicit choice wins."""
    from cdinn.pipeline import inversion

    from cdinn.retrieval.engine import batch_pays

    assert batch_pays(64 * 64, "cpu") and batch_pays(256 * 256, "cpu")
    assert not batch_pays(64**3, "cpu") and batch_pays(64**3, "cuda")
    calls = []
    original = inversion.refine_batch
    monkeypatch.setattr(inversion, "refine_batch", lambda pats, *a, **k: calls.append(len(pats)) or original(pats, *a, **k))
    model, small = load_model("cdinn2d-fast"), _small_patterns(64)
    results = dict(invert_many(small, model, "ER**5", retry=False, shared_grid=True))  # one grid: one batch
    assert calls == [3] and all(r.chi2 < 0.05 for r in results.values())
    dict(invert_many(small, model, "ER**5", retry=False, shared_grid=True, batch_refine=False))
    assert calls == [3]  # the explicit choice: pattern by pattern


def test_the_retries_of_a_batch_run_as_one_batch(monkeypatch):
    """Patterns of a batch still above their floor after the refinement are retried together,
    attempt by attempt; each records its attempt and keeps the lower chi²."""
    from cdinn.pipeline import inversion
    from cdinn.retrieval import phase_retrieval

    monkeypatch.setattr(inversion, "RETRIES", ({"phase_seed": 0},))
    sizes = []
    original = inversion.phase_batch
    monkeypatch.setattr(inversion, "phase_batch", lambda ms, *a, **k: sizes.append(len(ms)) or original(ms, *a, **k))
    model, small = load_model("cdinn2d-fast"), _small_patterns(32)
    results = dict(invert_many(small, model, "ER**2", retry=True, shared_grid=True, seed=4))
    assert sizes == [3]  # two ER iterations leave every pattern above its floor: all three retried at once
    for name, r in results.items():
        (attempt,) = r.provenance["retries"]
        assert attempt["attempt"] == "cdinn phase default, seed 4"
        refined = r.provenance["stages"][-2]["chi2"]
        assert r.chi2 == pytest.approx(min(refined, attempt["chi2"]))
        # the batched attempt is cdinn phase's default from that seed, in the batch's arithmetic
        alone = phase_retrieval(small[name][0], seed=4, progress=False)
        assert attempt["chi2"] == pytest.approx(alone.chi2, rel=0.5)


def test_a_cpu_batch_of_small_patterns_phases_each_as_alone():
    """On a CPU the fused loops serve a stacked measurement item by item: a batch of small
    patterns (the default for them) gives each pattern, bit for bit, ``phase_retrieval``'s
    result from the same seed."""
    from cdinn.retrieval import phase_retrieval
    from cdinn.retrieval.engine import phase_stack

    stack = np.stack([p for p, _ in _small_patterns(32).values()])
    masks = np.zeros(stack.shape, dtype=bool)
    masks[1, 14:17, :] = True  # a gap on one pattern: its own free pixels in the batch
    recipe = "(SUP * ER**5 * HIO**15)**2"
    batched = list(phase_stack(stack, recipe, masks, seed=5))
    for i, result in enumerate(batched):
        alone = phase_retrieval(stack[i], recipe, mask=masks[i], seed=5 + i, progress=False)
        assert np.array_equal(result.object, alone.object) and result.chi2 == alone.chi2
