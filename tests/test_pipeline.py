import numpy as np
import pytest
import torch

from cdinn.cli.main import main
from cdinn.errors import InputError
from cdinn.io import read_result
from cdinn.models import build
from cdinn.physics import align, chi2, intensity, pad_to, ssim_amplitude
from cdinn.pipeline import invert, mask_to_model_grid, refinement_recipe, to_input_grid, to_model_grid, weibull_beta
from cdinn.pipeline.network_refine import fine_tune
from cdinn.retrieval import parse_recipe
from cdinn.retrieval.state import Measurement, State, blocks, run
from cdinn.simulate import faceted_crystal, simulate_pattern


@pytest.fixture(scope="module")
def tiny2d():
    torch.manual_seed(0)
    return build("cdinn2d", width=4, size=32).eval()


@pytest.fixture(scope="module")
def crystal():
    obj = faceted_crystal((64, 64), oversampling=2.2, phase_range=1.0, seed=8)
    return obj, simulate_pattern(obj, photons=1e8, seed=0)


def test_refinement_language_and_its_aliases():
    # The chain forms mean the recipe they translate to: leftmost first.
    assert [s.name for s in parse_recipe(refinement_recipe("tl:2+er:3+ad:1"))] == ["TL", "TL", "ER", "ER", "ER", "AD"]
    assert refinement_recipe("er:50") == "(ER**50)"
    assert refinement_recipe("pr:150") == "(AVG**10*ER**40*(SUP*ER**10*HIO**40)**2)"
    assert refinement_recipe("none") == "" and refinement_recipe(None) == ""
    assert refinement_recipe("ER**20 * AD**10") == "ER**20 * AD**10"
    for bad in ("er:0", "magic:10", "er:²", "ad:1e23", "ER**0", "TL(beta=1)"):
        with pytest.raises(InputError):
            refinement_recipe(bad)


def test_grid_round_trip_keeps_the_object():
    obj = faceted_crystal((64, 64), oversampling=2.0, phase_range=1.0, seed=1)
    pattern = intensity(obj)
    small, transform = to_model_grid(pattern, 32)
    assert small.shape == (32, 32) and transform.model_shape == (32, 32)
    # The centre crop keeps the oversampling: the small pattern is that of a 2x coarser object.
    coarse = to_model_grid(torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(obj))), 32)[0]
    back = to_input_grid(torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(coarse))) / 2, transform)
    assert back.shape == (64, 64)
    assert ssim_amplitude(align(back, obj).aligned, obj) > 0.8
    binned, t2 = to_model_grid(pattern, 32, binning=2)
    assert t2.resampled_shape == (32, 32) and float(binned.sum()) == pytest.approx(float(pattern.sum()), rel=1e-5)


def test_binning_to_the_model_grid_is_the_mask_aware_one():
    pattern = torch.ones(33, 33)
    pattern[16, 16] = 100.0  # the centre of a 33-pixel axis (index n // 2)
    mask = torch.zeros(33, 33, dtype=torch.bool)
    mask[2, 2] = True  # a dead pixel: its block is rescaled from the three measured ones
    pattern[2, 2] = 0.0
    binned, transform = to_model_grid(pattern, 16, binning=2, mask=mask)
    # The odd pixel is dropped from both ends alike, so the peak stays at the centre index.
    assert binned.shape == (16, 16) and tuple(np.unravel_index(int(binned.argmax()), (16, 16))) == (8, 8)
    assert float(binned[8, 8]) == 103.0 and torch.allclose(binned[:8, :8], torch.full((8, 8), 4.0))
    assert not bool(mask_to_model_grid(mask, transform).any())  # three of four measured: the block is good


@pytest.mark.parametrize("refine", ["er:30", "AD**40", "ER**10*HIO**20", "TL**15", "ER**10 * AD**10 * ER**5"])
def test_each_refinement_lowers_chi2_from_the_prediction(tiny2d, crystal, refine):
    _, pattern = crystal
    result = invert(pattern, tiny2d, refine=refine)
    stages = result.provenance["stages"]
    assert result.chi2 < stages[0]["chi2"]
    assert result.object.shape == (64, 64) and len(stages) == 1 + len(blocks(parse_recipe(refinement_recipe(refine))))
    assert result.provenance["timings"]["total_s"] > 0


def test_the_network_alone_keeps_its_own_support(crystal):
    # Dilation prepares the support for refinement; without refinement the result is the
    # network's prediction, its support where the cleaned prediction is non-zero.
    from cdinn.models import load_model

    model = load_model("cdinn2d")
    _, pattern = crystal
    alone = invert(pattern, model, refine="none", dilation=3)
    refined = invert(pattern, model, refine="ER**1", dilation=3)
    assert np.array_equal(alone.support, np.abs(alone.extras["prediction"]) > 0)
    assert alone.provenance["dilation"] == 0 and refined.provenance["dilation"] == 3
    assert refined.support.sum() > alone.support.sum()
    assert alone.chi2 == alone.provenance["stages"][0]["chi2"]


def test_autodiff_operator_from_a_perturbed_truth(crystal):
    obj, pattern = crystal
    noisy = obj * torch.exp(1j * 0.6 * torch.rand(obj.shape, generator=torch.Generator().manual_seed(3)))
    support = obj.abs() > 0.05
    start = float(chi2(intensity(noisy * support), pattern))
    state = run(State.from_object(Measurement(pattern), noisy, support), parse_recipe("AD**60"))
    assert float(state.chi2()[0]) < 0.3 * start
    assert state.chi2_history().shape[0] == 60 and state.stages[-1]["stage"] == "AD(lr=0.02)**60"
    # Outside the support the object stays zero.
    assert float(state.objects()[0][~support].abs().max()) == 0.0


def test_untrained_network_recovers_a_simple_object():
    # A flat-phase box; dip fits a randomly initialised network whose half-size output,
    # zero-padded for the forward model, is the oversampling constraint.
    obj = torch.zeros(16, 16, 16, dtype=torch.complex64)
    obj[6:11, 5:11, 6:10] = 1.0
    pattern = intensity(obj)
    model = build("autophasenn", width=2, size=16)
    pred, history = fine_tune(model, pattern, steps=120, random_init=True, seed=1, lr=0.01)
    assert history[-1] < 0.05 * history[0]
    assert ssim_amplitude(align(pad_to(pred, (16, 16, 16)), obj).aligned, obj) > 0.8


def test_weibull_schedule():
    assert weibull_beta(0, 100) == pytest.approx(1e4)
    assert weibull_beta(99, 100) == pytest.approx(1.0)
    values = [weibull_beta(i, 100) for i in range(100)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_dimension_mismatch_is_clear(tiny2d):
    with pytest.raises(InputError, match="2D"):
        invert(np.ones((16, 16, 16), np.float32), tiny2d)


def test_invert_cli_batches_patterns(tmp_path, tiny2d, crystal):
    _, pattern = crystal
    weights = tmp_path / "tiny.pt"
    torch.save(tiny2d.state_dict(), weights)
    (tmp_path / "tiny.json").write_text('{"family": "cdinn2d", "arguments": {"width": 4, "size": 32}, "name": "tiny"}')
    for k in range(2):
        np.save(tmp_path / f"p{k}.npy", pattern.numpy())
    out = tmp_path / "out"
    assert main(["invert", str(tmp_path / "p0.npy"), str(tmp_path / "p1.npy"), "-o", str(out), "--model", str(weights), "--refine", "er:10", "-q"]) == 0
    r = read_result(out / "p0.h5")
    assert r.provenance["model"] == "tiny" and r.extras["prediction"].shape == (64, 64)
    assert main(["invert", str(tmp_path / "p0.npy"), "-o", str(tmp_path / "x.h5"), "--model", "nonexistent"]) == 2
    assert r.provenance["model_weights"] == str(weights) and r.provenance["refine"] == "(ER**10)"


def test_phase_retrieval_has_no_network_operators(crystal):
    from cdinn.retrieval import phase_retrieval

    with pytest.raises(InputError, match="cdinn invert"):
        phase_retrieval(crystal[1], "ER**5 * TL**2", progress=False, seed=0)


def test_mask_follows_the_pattern_to_the_model_grid():
    mask = torch.zeros(48, 48, dtype=torch.bool)
    mask[22:26, 22:26] = True  # a beamstop
    pattern = intensity(faceted_crystal((48, 48), oversampling=2.5, phase_range=1.0, seed=2))
    _, transform = to_model_grid(pattern, 64)  # zero-padded: the added border was never measured
    grid = mask_to_model_grid(mask, transform)
    assert grid.shape == (64, 64) and bool(grid[30:34, 30:34].all()) and bool(grid[0].all())
    assert int(grid[8:56, 8:56].sum()) == 16
    _, binned = to_model_grid(pattern, 16, binning=2)
    assert int(mask_to_model_grid(mask, binned).sum()) == 4


def test_twin_check_matches_the_alignment(crystal):
    from cdinn.physics import twin
    from cdinn.pipeline.inversion import is_twin

    obj = torch.roll(crystal[0], (3, -2), (0, 1))
    assert not is_twin(obj, crystal[0])
    assert is_twin(torch.as_tensor(np.asarray(twin(obj))), crystal[0])


def test_patterns_are_brought_to_the_models_oversampling_and_back():
    from cdinn.physics.support import estimate_oversampling

    obj = faceted_crystal((96, 96), oversampling=5.0, phase_range=1.0, seed=4)
    pattern = simulate_pattern(obj, photons=1e9, seed=1)
    measured = estimate_oversampling(pattern)
    target = (0.5 * min(measured), 0.6 * min(measured))  # a model trained on coarser sampling
    on_grid, transform = to_model_grid(pattern, 64, oversampling=target)
    assert transform.oversampling_measured == pytest.approx(measured, abs=1e-3)
    assert all(t == pytest.approx(target[1]) for t in transform.oversampling_model)
    assert all(r < 96 for r in transform.resampled_shape)
    # The resampled pattern really has the model's oversampling, and keeps the counts.
    resampled = pad_to(on_grid, transform.resampled_shape) if min(transform.resampled_shape) > 64 else on_grid
    assert np.mean(estimate_oversampling(resampled)) == pytest.approx(target[1], rel=0.15)
    assert float(on_grid.sum()) == pytest.approx(float(pattern.sum()), rel=0.02)
    # An object on the model's grid maps back onto the measured grid at the measured pixel size:
    # a model pixel is resampled/model measured pixels.
    box = torch.zeros(32, 32, dtype=torch.complex64)
    box[12:20, 12:20] = 1
    back = to_input_grid(box, transform)
    width = int((back.abs()[48] > 0.5).sum())
    assert back.shape == (96, 96) and width == pytest.approx(8 * transform.resampled_shape[0] / 64, abs=1)
    # Inside the range nothing is resampled.
    _, same = to_model_grid(pattern, 64, oversampling=(0.5 * min(measured), 2 * max(measured)))
    assert same.resampled_shape == (96, 96)


def test_a_network_only_stack_is_each_patterns_own_inversion():
    """``--refine none`` on a stack runs every step on the whole batch: the same objects, supports,
    chi² and noise floors as inverting each pattern alone, and an unreadable pattern stays its own error."""
    from cdinn.models import load_model
    from cdinn.pipeline.inversion import invert, invert_many, invert_stack

    model = load_model("cdinn2d")
    stack = np.stack([simulate_pattern(faceted_crystal((64, 64), oversampling=6.0, phase_range=1.0, seed=s), photons=1e7,
                                       seed=s).numpy() for s in range(5)])
    together = [r for _, r in invert_stack(stack, None, model, "none", batch=4)]
    for pattern, batched in zip(stack, together):
        alone = invert(pattern, model, refine="none")
        assert np.allclose(batched.object, alone.object, atol=1e-4 * np.abs(alone.object).max())
        assert np.array_equal(batched.support, alone.support)
        assert abs(batched.chi2 - alone.chi2) <= 1e-5 * alone.chi2
        assert abs(batched.provenance["chi2_noise_floor"] - alone.provenance["chi2_noise_floor"]) <= 1e-5 * alone.chi2
        assert batched.provenance["stages"][0]["stage"] == "network" and batched.provenance["refine"] == "none"
    masks = np.zeros(stack.shape, dtype=bool)
    masks[1, 30:34, :] = True  # a gap in one pattern only
    masked = [r for _, r in invert_stack(stack[:3], masks[:3], model, "none")]
    alone = invert(stack[1], model, refine="none", mask=masks[1])
    assert abs(masked[1].chi2 - alone.chi2) <= 1e-5 * alone.chi2 and masked[1].provenance["masked_pixels"] == 4 * 64
    assert masked[0].provenance["masked_pixels"] == 0 and abs(masked[0].chi2 - together[0].chi2) <= 1e-5 * together[0].chi2
    bad = dict(enumerate((p, None) for p in stack[:2]))
    bad[1] = (stack[1][None], None)  # the wrong dimensionality for this model
    found = dict(invert_many(bad, model, "none"))
    assert isinstance(found[0].chi2, float) and "2D" in str(found[1])


def test_a_patterns_inversion_does_not_depend_on_the_others_given():
    """Files inverted together share network calls, but each is brought to the model's grid with
    its own oversampling estimate: the same result as inverting it alone (a shared estimate on
    the batch's sum resampled a pattern to the other's sampling). A stack's frames share one."""
    from cdinn.models import load_model
    from cdinn.pipeline.inversion import invert_many, invert_stack

    model = load_model("autophasenn-64")
    patterns = {os_: simulate_pattern(faceted_crystal((64, 64, 64), oversampling=os_, phase_range=1.0, seed=3),
                                      photons=1e7, seed=3).numpy() for os_ in (1.8, 2.2)}
    for refine in ("none", "ER**5"):
        together = dict(invert_many({k: (p, None) for k, p in patterns.items()}, model, refine))
        transforms = [r.provenance["grid_transform"]["resampled_shape"] for r in together.values()]
        assert transforms[0] != transforms[1]  # both resampled, differently
        for key, pattern in patterns.items():
            alone = invert(pattern, model, refine=refine)
            assert np.array_equal(together[key].object, alone.object), refine
            assert together[key].provenance["grid_transform"] == alone.provenance["grid_transform"]
    stack = np.stack(list(patterns.values()))
    shared = [r.provenance["grid_transform"] for _, r in invert_stack(stack, None, model, "none")]
    assert shared[0] == shared[1]


def test_oversampling_of_a_pattern_with_a_hole_is_estimated_across_it():
    """A beamstop over the bright centre takes most of the autocorrelation's peak: estimated on
    the masked pattern as it is, the autocorrelation's extent (2 * 64 / oversampling, in steps of
    two pixels) is off on every axis; to_model_grid estimates it with the hole recovered."""
    obj = faceted_crystal((64, 64, 64), oversampling=4.0, phase_range=1.0, seed=3)
    pattern = simulate_pattern(obj, photons=1e7, seed=1)
    z, y, x = torch.meshgrid(*(torch.arange(64) - 32,) * 3, indexing="ij")
    hole = z**2 + y**2 + x**2 <= 4
    holed = pattern.masked_fill(hole, 0.0)

    def extent(p, mask=None):
        return 128 / np.array(to_model_grid(p, 64, oversampling=(1.0, 10.0), mask=mask)[1].oversampling_measured)

    assert np.abs(extent(holed) - extent(pattern)).min() >= 1.9  # every axis off by a step or more
    assert np.allclose(extent(holed, hole), extent(pattern))
