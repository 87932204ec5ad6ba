import numpy as np
import pytest
import torch

from cdinn.cli.main import main
from cdinn.errors import InputError
from cdinn.io import read_result
from cdinn.models import build
from cdinn.physics import align, chi2, intensity, pad_to, ssim_amplitude
from cdinn.pipeline import invert, parse_refinement, to_input_grid, to_model_grid, weibull_beta
from cdinn.pipeline.network_refine import fine_tune
from cdinn.retrieval.autodiff import autodiff_refine
from cdinn.simulate import faceted_crystal, simulate_pattern


@pytest.fixture(scope="module")
def tiny2d():
    torch.manual_seed(0)
    return build("cdinn2d", width=4, size=32).eval()


@pytest.fixture(scope="module")
def crystal():
    obj = faceted_crystal((64, 64), oversampling=2.2, phase_range=1.0, seed=8)
    return obj, simulate_pattern(obj, photons=1e8, seed=0)


def test_parse_refinement():
    assert [r.kind for r in parse_refinement("tl:10+er:5+ad:3")] == ["tl", "recipe", "ad"]
    assert parse_refinement("er:50")[0].recipe == "ER**50"
    assert parse_refinement("pr:150")[0].recipe == "AVG**10*ER**40*(SUP*ER**10*HIO**40)**2"
    assert parse_refinement("none") == []
    assert parse_refinement("HIO**10*ER**5")[0].recipe == "HIO**10*ER**5"
    with pytest.raises(InputError):
        parse_refinement("er:0")
    with pytest.raises(InputError):
        parse_refinement("magic:10")


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
    binned, t2 = to_model_grid(pattern, 32, bin_factor=2)
    assert t2.binned_shape == (32, 32) and float(binned.sum()) == pytest.approx(float(pattern.sum()), rel=1e-5)


@pytest.mark.parametrize("refine", ["er:30", "ad:40", "ER**10*HIO**20", "tl:15"])
def test_each_refinement_lowers_chi2_from_the_prediction(tiny2d, crystal, refine):
    _, pattern = crystal
    result = invert(pattern, tiny2d, refine=refine)
    stages = result.provenance["stages"]
    assert stages[-1]["chi2"] < stages[0]["chi2"]
    assert result.object.shape == (64, 64) and result.chi2 == pytest.approx(stages[-1]["chi2"])
    assert result.provenance["timings"]["total_s"] > 0


def test_autodiff_refinement_from_a_perturbed_truth(crystal):
    obj, pattern = crystal
    noisy = obj * torch.exp(1j * 0.6 * torch.rand(obj.shape, generator=torch.Generator().manual_seed(3)))
    support = obj.abs() > 0.05
    start = float(chi2(intensity(noisy * support), pattern))
    for optimizer in ("adam", "lbfgs"):
        r = autodiff_refine(pattern, noisy, support, steps=60, shrink_every=0, optimizer=optimizer)
        assert r.chi2 < 0.5 * start, optimizer


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
