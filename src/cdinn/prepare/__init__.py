"""Preparing measured patterns for reconstruction: centring (Bragg peak or centre of symmetry),
cropping, binning, resampling to a target oversampling (Fourier or block-DCT), Bragg geometry
from the scan record, CXI output."""

from cdinn.prepare.bragg import CENTRES, Prepared, bin_pattern, fft_friendly, find_centre, geometry_from_spec, prepare_pattern
from cdinn.prepare.resample import METHODS, block_dct_resample, fourier_resample
from cdinn.prepare.cxi import read_geometry, write_prepared

__all__ = [
    "CENTRES",
    "METHODS",
    "Prepared",
    "block_dct_resample",
    "bin_pattern",
    "fft_friendly",
    "find_centre",
    "fourier_resample",
    "geometry_from_spec",
    "prepare_pattern",
    "read_geometry",
    "write_prepared",
]
