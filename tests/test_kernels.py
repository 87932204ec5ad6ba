"""The fused CPU loops (``_fused.c``) against the same arithmetic as torch operations, which is
the path CUDA takes: every algorithm, batched starts with their own or a shared support, a
masked projector, 2D and 3D, and NaN propagation."""

import multiprocessing
import sys

import pytest
import torch

from cdinn.physics import intensity, to_native
from cdinn.retrieval import FourierProjector, Support, kernels
from cdinn.retrieval.algorithms import ALGORITHMS

CASES = [("ER", {}), ("HIO", {"beta": 0.9}), ("RAAR", {"beta": 0.85}), ("DM", {"beta": 1.0}), ("DM", {"beta": 0.7})]


def _problem(obj: torch.Tensor, starts: int, masked: bool):
    shape = tuple(obj.shape)
    gen = torch.Generator().manual_seed(7)
    amp = to_native(intensity(obj).sqrt())
    measured = None
    if masked:
        measured = torch.rand(shape, generator=gen) > 0.1
    support = Support(to_native(torch.rand((starts, *shape), generator=gen) > 0.6, len(shape)).contiguous())
    x = torch.randn((starts, *shape), dtype=torch.complex64, generator=gen)
    return FourierProjector(amp, measured), support, x


def _torch_path(monkeypatch):
    monkeypatch.setattr(kernels, "applies", lambda *tensors: False)


@pytest.mark.parametrize("name, params", CASES)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_iteration_equals_the_torch_operations(monkeypatch, crystal2d, crystal3d, name, params, masked):
    algorithm = ALGORITHMS[name]
    for obj, starts in ((torch.as_tensor(crystal2d), 3), (torch.as_tensor(crystal3d), 2)):
        project, support, x = _problem(obj, starts, masked)
        assert kernels.applies(x, support.outside)
        fused_x, fused_chi2 = x.clone(), None
        for _ in range(3):
            fused_x, fused_chi2 = algorithm(fused_x, project, support, **params)
        with monkeypatch.context() as m:
            _torch_path(m)
            plain_x = x.clone()
            for _ in range(3):
                plain_x, plain_chi2 = algorithm(plain_x, project, support, **params)
        scale = float(plain_x.abs().max())
        assert float((fused_x - plain_x).abs().max()) < 1e-5 * scale, (name, masked)
        assert torch.allclose(fused_chi2, plain_chi2, rtol=1e-5, atol=1e-7), (fused_chi2, plain_chi2)
        assert fused_chi2.shape == (starts,) and bool((fused_chi2 != fused_chi2[0]).any())  # per start


def test_fused_projector_chi2_and_masked_pixels_match(monkeypatch, crystal2d):
    project, _, x = _problem(torch.as_tensor(crystal2d), 2, masked=True)
    fused_p, fused_chi2 = project(x)
    chi2_only = project.chi2(x)
    with monkeypatch.context() as m:
        _torch_path(m)
        plain_p, plain_chi2 = project(x)
    assert torch.allclose(fused_p, plain_p, atol=1e-5 * float(plain_p.abs().max()))
    assert torch.allclose(fused_chi2, plain_chi2, rtol=1e-5) and torch.allclose(chi2_only, plain_chi2, rtol=1e-5)
    # the unmeasured pixels keep their far-field value, the measured ones get the measured modulus
    free = project.free.bool()
    far = torch.fft.fftn(fused_p, dim=(-2, -1), norm="ortho")
    near = torch.fft.fftn(x, dim=(-2, -1), norm="ortho")
    assert torch.allclose(far[:, free], near[:, free], atol=1e-4)
    assert torch.allclose(far[:, ~free].abs(), project.amplitude[~free].expand(2, -1), atol=1e-4)


def test_a_projector_from_strided_arrays_takes_the_loops(monkeypatch, crystal2d):
    amp = to_native(intensity(torch.as_tensor(crystal2d)).sqrt())
    measured = torch.rand(64, 64, generator=torch.Generator().manual_seed(5)) > 0.1
    project = FourierProjector(amp.t(), measured.t())  # views that are not C-contiguous
    x = torch.randn((2, 64, 64), dtype=torch.complex64, generator=torch.Generator().manual_seed(6))
    fused_p, fused_chi2 = project(x)
    with monkeypatch.context() as m:
        _torch_path(m)
        plain_p, plain_chi2 = project(x)
    assert torch.allclose(fused_p, plain_p, atol=1e-5 * float(plain_p.abs().max()))
    assert torch.allclose(fused_chi2, plain_chi2, rtol=1e-5)


def test_a_nan_in_the_iterate_stays_visible(crystal2d):
    project, support, x = _problem(torch.as_tensor(crystal2d), 1, masked=False)
    x[0, 5, 5] = float("nan")
    x, chi2 = ALGORITHMS["HIO"](x, project, support, beta=0.9)
    assert torch.isnan(chi2).all() and torch.isnan(x).any()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built with gcc and OpenMP on Linux")
def test_the_loops_were_compiled_with_the_package():
    # without them every comparison above would compare the torch operations with themselves
    assert kernels.available()


def test_a_support_shared_by_the_batch(monkeypatch, crystal2d):
    project, _, x = _problem(torch.as_tensor(crystal2d), 3, masked=False)
    shared = Support(torch.rand((1, 64, 64), generator=torch.Generator().manual_seed(3)) > 0.5)
    fused_x, _ = ALGORITHMS["HIO"](x.clone(), project, shared, beta=0.9)
    with monkeypatch.context() as m:
        _torch_path(m)
        plain_x, _ = ALGORITHMS["HIO"](x.clone(), project, shared, beta=0.9)
    assert torch.allclose(fused_x, plain_x, atol=1e-5 * float(plain_x.abs().max()))


def _loops_in_a_child(x, amplitude, p, outside):
    # only the fused loops here: torch's own thread pool does not survive a fork either
    kernels.modulus_(x, amplitude, None, None, torch.tensor(1.0, dtype=torch.float64))
    kernels.relax_(x, p, outside, 1.0, -1.9)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_a_forked_child_runs_the_loops_after_the_parent_did():
    # GNU OpenMP's pool does not survive a fork: with the parent's thread count the child hung
    x = torch.randn(1, 32, 32, 32, dtype=torch.complex64)
    amplitude, p, outside = torch.ones(32, 32, 32), x.clone(), torch.ones(1, 32, 32, 32)
    kernels.modulus_(x, amplitude, None, None, torch.tensor(1.0, dtype=torch.float64))
    child = multiprocessing.get_context("fork").Process(target=_loops_in_a_child, args=(x, amplitude, p, outside))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def test_only_contiguous_complex64_cpu_tensors_take_the_kernels():
    x = torch.zeros(2, 8, 8, dtype=torch.complex64)
    assert kernels.applies(x)
    assert not kernels.applies(x.to(torch.complex128))
    assert not kernels.applies(x.transpose(1, 2))
    assert not kernels.applies(x, torch.zeros(2, 8, 8).transpose(1, 2))


@pytest.mark.parametrize("masked", [False, True])
def test_a_stacked_projector_takes_the_fused_loops_item_by_item(masked):
    """N patterns iterated together (one amplitude, mask and norm per item) through the fused
    loops: each item's projection and chi² are bit for bit those of its pattern alone."""
    gen = torch.Generator().manual_seed(11)
    shape = (3, 24, 20)
    amplitude = torch.rand(shape, generator=gen) * 5
    measured = torch.rand(shape, generator=gen) > 0.1 if masked else None
    stacked = FourierProjector(amplitude, measured, ndim=2)
    x = torch.randn(shape, dtype=torch.complex64, generator=gen)
    assert kernels.applies(x)
    projected, chi2 = stacked(x.clone())
    for i in range(shape[0]):
        alone = FourierProjector(amplitude[i], None if measured is None else measured[i])
        p, c = alone(x[i:i + 1].clone())
        assert torch.equal(projected[i], p[0]) and torch.equal(chi2[i], c[0])
    with pytest.MonkeyPatch.context() as m:  # and the same numbers as the torch operations, within rounding
        _torch_path(m)
        plain, plain_chi2 = stacked(x.clone())
    assert torch.allclose(projected, plain, atol=1e-5 * float(plain.abs().max()))
    assert torch.allclose(chi2, plain_chi2, rtol=1e-4)
