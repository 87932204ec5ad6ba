"""Agreement measures in reciprocal space (chi², Pearson, likelihoods, FSC) and real space
(amplitude SSIM, phase error)."""

from __future__ import annotations

import numpy as np
import torch

from cdinn.physics.alignment import _numpy, align
from cdinn.physics.fourier import ArrayLike, as_tensor, forward, radius_grid, spatial_dims


def chi2_amplitude(
    calc: torch.Tensor, meas: torch.Tensor, weight: torch.Tensor | None = None, ndim: int | None = None
) -> torch.Tensor:
    """Reciprocal-space chi² between amplitudes, the calculated one scaled by least squares.

    ``chi2 = sum((s*calc - meas)**2) / sum(meas**2)`` with ``s = sum(calc*meas) / sum(calc**2)``,
    which equals ``1 - sum(calc*meas)**2 / (sum(calc**2) * sum(meas**2))``. This is the one
    chi² of the package; :func:`chi2` is its front end for intensities.

    Parameters
    ----------
    calc, meas : tensors ``(B, *spatial)`` or ``(*spatial)``
        Calculated and measured amplitudes (square roots of intensities).
    weight : tensor, optional
        1 for measured pixels, 0 for masked ones (broadcast against ``calc``).
    ndim : int, optional
        Number of spatial dimensions.

    Returns
    -------
    torch.Tensor
        chi² per batch item (a 0-d tensor for unbatched input).
    """
    dims = spatial_dims(calc, ndim)
    if weight is not None:
        calc = calc * weight
        meas = meas * weight
    return chi2_from_sums(
        (calc * meas).sum(dim=dims, dtype=torch.float64),
        calc.square().sum(dim=dims, dtype=torch.float64),
        meas.square().sum(dim=dims, dtype=torch.float64),
    )


def chi2_from_sums(calc_meas: torch.Tensor, calc_calc: torch.Tensor, meas_meas: torch.Tensor) -> torch.Tensor:
    """chi² from the three sums ``sum(calc*meas)``, ``sum(calc**2)``, ``sum(meas**2)``.

    The closed form of the least-squares-scaled chi² of :func:`chi2_amplitude`; iterative
    loops that already hold the sums call it directly. The fused CPU loop of the Fourier
    projection (``cdinn/retrieval/_fused.c``) evaluates this same expression in C, where these
    scalar steps cost nothing; ``tests/test_kernels.py`` holds the two equal.
    """
    return (1.0 - calc_meas.square() / (calc_calc * meas_meas).clamp_min(1e-300)).clamp_min(0.0).to(torch.float32)


def chi2(
    model_intensity: ArrayLike, measured_intensity: ArrayLike, mask: ArrayLike | None = None, ndim: int | None = None
) -> torch.Tensor:
    """chi² between a model intensity and a measured intensity (see :func:`chi2_amplitude`).

    ``mask`` follows the CXI convention: non-zero marks a bad (unmeasured) pixel.
    """
    calc = as_tensor(model_intensity).to(torch.float32).clamp_min(0).sqrt()
    meas = as_tensor(measured_intensity, calc.device).to(torch.float32).clamp_min(0).sqrt()
    weight = None if mask is None else (as_tensor(mask, calc.device) == 0).to(torch.float32)
    return chi2_amplitude(calc, meas, weight, ndim)


def pearson(a: ArrayLike, b: ArrayLike, ndim: int | None = None) -> torch.Tensor:
    """Pearson correlation coefficient over the spatial axes (per batch item)."""
    x = as_tensor(a).to(torch.float32)
    y = as_tensor(b, x.device).to(torch.float32)
    dims = spatial_dims(x, ndim)
    x = x - x.mean(dim=dims, keepdim=True)
    y = y - y.mean(dim=dims, keepdim=True)
    return (x * y).sum(dim=dims) / ((x.square().sum(dim=dims) * y.square().sum(dim=dims)).sqrt() + 1e-30)


def _scaled_model(model_intensity: ArrayLike, measured_intensity: ArrayLike, ndim: int | None):
    calc = as_tensor(model_intensity).to(torch.float64)
    meas = as_tensor(measured_intensity, calc.device).to(torch.float64)
    dims = spatial_dims(calc, ndim)
    # The model's scale is free: match its total to the measured total.
    calc = calc * (meas.sum(dim=dims, keepdim=True) / calc.sum(dim=dims, keepdim=True).clamp_min(1e-300))
    return calc, meas, dims


def poisson_nll(model_intensity: ArrayLike, measured_intensity: ArrayLike, ndim: int | None = None) -> torch.Tensor:
    """Poisson negative log-likelihood per pixel, up to the model-independent ``log(k!)`` term.

    The model is first scaled to the measured total count.
    """
    calc, meas, dims = _scaled_model(model_intensity, measured_intensity, ndim)
    calc = calc.clamp_min(1e-12)
    return (calc - meas * calc.log()).mean(dim=dims).to(torch.float32)


def gaussian_nll(model_intensity: ArrayLike, measured_intensity: ArrayLike, ndim: int | None = None) -> torch.Tensor:
    """Gaussian negative log-likelihood per pixel with Poisson-like variance ``I_meas + 1``."""
    calc, meas, dims = _scaled_model(model_intensity, measured_intensity, ndim)
    var = meas + 1.0
    return (0.5 * (calc - meas).square() / var + 0.5 * var.log()).mean(dim=dims).to(torch.float32)


def ssim_amplitude(obj: ArrayLike, reference: ArrayLike) -> float:
    """Structural similarity of two amplitudes, each normalised to maximum 1 (scikit-image).

    Align first (:func:`cdinn.physics.alignment.align`) when the two may differ by a translation or twin.
    """
    a = np.abs(_numpy(obj)).astype(np.float64)
    b = np.abs(_numpy(reference)).astype(np.float64)
    a /= max(a.max(), 1e-30)
    b /= max(b.max(), 1e-30)
    from skimage.metrics import structural_similarity  # imported on use: start-up of commands without metrics

    return float(structural_similarity(a, b, data_range=1.0))


def phase_error(
    obj: ArrayLike, reference: ArrayLike, support: ArrayLike | None = None, threshold: float = 0.5
) -> float:
    """RMS phase difference (radians) inside the reference's support.

    ``obj`` is aligned onto ``reference`` first: translation, global phase and twin image
    removed. The support defaults to reference amplitude ≥ ``threshold`` × its maximum.
    """
    ref = _numpy(reference)
    aligned = align(obj, ref).aligned
    inside = np.abs(ref) >= threshold * np.abs(ref).max() if support is None else _numpy(support).astype(bool)
    product = aligned[inside] * np.conj(ref[inside])
    # Where the reconstruction is empty its phase is undefined: count the RMS of a uniformly
    # random phase (pi / sqrt 3) there, so that predicting nothing never scores well.
    diff2 = np.where(np.abs(product) > 0, np.angle(product) ** 2, np.pi**2 / 3)
    return float(np.sqrt(np.mean(diff2)))


def support_dice(obj: ArrayLike, reference: ArrayLike, level: float = 0.5, aligned: bool = False) -> float:
    """Overlap (Dice) of the two half-maximum supports, after removing translation and twin.

    ``2 |A ∩ B| / (|A| + |B|)`` with ``A``, ``B`` the voxels whose amplitude is at least
    ``level`` × the array's maximum. Unlike SSIM on a mostly empty grid, a shape that ignores
    the data scores visibly lower than the right one. ``aligned`` skips the alignment when
    ``obj`` was aligned onto ``reference`` already.
    """
    ref = np.abs(_numpy(reference))
    moved = np.abs(_numpy(obj) if aligned else align(obj, reference).aligned)
    a = moved >= level * max(moved.max(), 1e-30)
    b = ref >= level * max(ref.max(), 1e-30)
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def _shell_index(shape: tuple[int, ...], device: torch.device, nbins: int | None) -> tuple[torch.Tensor, int]:
    r = radius_grid(shape, device=device)
    rmax = min(shape) // 2
    nbins = nbins or rmax
    idx = (r / rmax * nbins).long().clamp_max(nbins)  # the last bin collects the corners
    return idx.flatten(), nbins + 1


def spectral_weight(pattern: ArrayLike, nbins: int | None = None) -> torch.Tensor:
    """Shell-averaged intensity versus spatial frequency (radius from the array centre)."""
    p = as_tensor(pattern).to(torch.float64)
    idx, n = _shell_index(tuple(p.shape), p.device, nbins)
    total = torch.bincount(idx, weights=p.flatten(), minlength=n)
    count = torch.bincount(idx, minlength=n).clamp_min(1)
    return (total / count)[:-1].to(torch.float32)


def fourier_shell_correlation(a: ArrayLike, b: ArrayLike, nbins: int | None = None) -> torch.Tensor:
    """Fourier shell (ring in 2D) correlation of two real-space images (unbatched)."""
    fa = forward(as_tensor(a).to(torch.complex64)).to(torch.complex128)
    fb = forward(as_tensor(b).to(torch.complex64)).to(torch.complex128)
    idx, n = _shell_index(tuple(fa.shape), fa.device, nbins)
    cross = (fa * fb.conj()).flatten()
    num = torch.bincount(idx, weights=cross.real, minlength=n) + 1j * torch.bincount(idx, weights=cross.imag, minlength=n)
    pa = torch.bincount(idx, weights=fa.abs().square().flatten(), minlength=n)
    pb = torch.bincount(idx, weights=fb.abs().square().flatten(), minlength=n)
    return (num.abs() / (pa * pb).sqrt().clamp_min(1e-300))[:-1].to(torch.float32)
