"""Physics core: forward model, noise, support, metrics, alignment.

Batched, device-agnostic torch code (NumPy/scikit-image for the alignment-based metrics). Arrays are ``(B, *spatial)`` or unbatched
``(*spatial)``; functions that cannot tell the two apart take ``ndim``, the number of
spatial dimensions (2 or 3).
"""

from cdinn.physics.fourier import (
    crop_to,
    far_field_modulus,
    forward,
    fourier_resample,
    from_native,
    intensity,
    inverse,
    pad_to,
    to_native,
)
from cdinn.physics.metrics import (
    chi2,
    chi2_amplitude,
    fourier_shell_correlation,
    gaussian_nll,
    pearson,
    phase_error,
    poisson_nll,
    spectral_weight,
    ssim_amplitude,
    support_dice,
)
from cdinn.physics.noise import poisson_noise
from cdinn.physics.support import (
    autocorrelation,
    autocorrelation_support,
    estimate_oversampling,
    fill_masked,
    gaussian_blur,
    grow_support,
    largest_component,
    recover_masked,
    shrink_wrap,
    threshold_support,
)
from cdinn.physics.alignment import align, twin

__all__ = [
    "align",
    "autocorrelation",
    "autocorrelation_support",
    "chi2",
    "chi2_amplitude",
    "crop_to",
    "estimate_oversampling",
    "far_field_modulus",
    "forward",
    "fourier_resample",
    "fourier_shell_correlation",
    "from_native",
    "fill_masked",
    "gaussian_blur",
    "gaussian_nll",
    "grow_support",
    "intensity",
    "inverse",
    "largest_component",
    "pad_to",
    "pearson",
    "phase_error",
    "poisson_nll",
    "poisson_noise",
    "recover_masked",
    "shrink_wrap",
    "spectral_weight",
    "ssim_amplitude",
    "support_dice",
    "threshold_support",
    "to_native",
    "twin",
]
