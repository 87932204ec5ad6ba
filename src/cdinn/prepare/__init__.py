"""Preparing measured patterns for reconstruction: centring (Bragg peak or centre of symmetry),
cropping, binning, resampling to a target oversampling (Fourier or block-DCT), Bragg geometry
from the scan record, CXI output."""

from cdinn.prepare.bragg import CENTRES, Prepared, fft_friendly, find_centre, geometry_from_spec, prepare_pattern
from cdinn.prepare.resample import METHODS, bin_pattern, block_dct_resample, resample_pattern
from cdinn.prepare.cxi import read_geometry, write_prepared

__all__ = [
    "CENTRES",
    "METHODS",
    "Prepared",
    "block_dct_resample",
    "bin_pattern",
    "fft_friendly",
    "find_centre",
    "resample_pattern",
    "geometry_from_spec",
    "prepare_pattern",
    "read_geometry",
    "write_prepared",
]
