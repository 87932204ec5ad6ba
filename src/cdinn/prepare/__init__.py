"""Preparing measured patterns for reconstruction: peak centring, cropping, binning,
resampling to a target oversampling, Bragg geometry from the scan record, CXI output."""

from cdinn.prepare.bragg import Prepared, bin_pattern, fft_friendly, find_peak, fourier_resample, geometry_from_spec, prepare_pattern
from cdinn.prepare.cxi import read_geometry, write_prepared

__all__ = [
    "Prepared",
    "bin_pattern",
    "fft_friendly",
    "find_peak",
    "fourier_resample",
    "geometry_from_spec",
    "prepare_pattern",
    "read_geometry",
    "write_prepared",
]
