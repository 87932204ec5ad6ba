"""Readers and writers (npy, npz, HDF5/CXI, TIFF, EDF) and input validation."""

from cdinn.io.atomic import atomic_path, check_output
from cdinn.io.readers import PATTERN_SUFFIXES, read_array, read_pattern, read_stack
from cdinn.io.results import (RESULT_SUFFIXES, Result, StackWriter, check_result_path, read_frame, read_result,
                              read_stack_table, write_result)
from cdinn.io.validate import validate_intensity, validate_mask

__all__ = [
    "PATTERN_SUFFIXES",
    "RESULT_SUFFIXES",
    "Result",
    "StackWriter",
    "atomic_path",
    "check_output",
    "check_result_path",
    "read_array",
    "read_frame",
    "read_pattern",
    "read_stack",
    "read_stack_table",
    "read_result",
    "validate_intensity",
    "validate_mask",
    "write_result",
]
