"""Process-wide settings that make a cdinn command run at the speed of its arithmetic.

Both are set by the ``cdinn`` command and the benchmark runner at start-up, before any heavy
work; a Python user who wants the same speed calls :func:`tune_process` once.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 64 * 2**20
"""Allocations below this size come from the heap rather than from fresh ``mmap`` pages."""
TRIM_THRESHOLD = 256 * 2**20
"""Free memory at the top of the heap is kept up to this size instead of being returned to the OS."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)


def limit_openblas_threads() -> None:
    """One OpenBLAS thread unless the user set a number (call before numpy is imported).

    numpy's OpenBLAS does no heavy work in cdinn, but its threads spin for a while after a
    call and took the cores from torch: a network call right after an alignment ran 2.3x slower.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def tune_allocator() -> bool:
    """Keep multi-megabyte tensors on the heap (glibc only); return whether it was applied.

    glibc serves an allocation above its ``mmap`` threshold with fresh pages and returns them
    to the OS when freed, so a loop that allocates and frees the same few megabytes page-faults
    them back every time. Its dynamic threshold usually adapts, but once a process has freed
    a few large blocks (importing scipy and numpy does) it no longer does: measured on a 2-core
    Xeon, an allocating 64³ FFT pair took 1.8 ms instead of 0.7 ms, and the shipped 64³ network
    34-42 ms per pattern instead of 20-27 ms. Fixed thresholds make the speed independent of
    what ran before.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def tune_process() -> None:
    """Both settings of this module, for a process that runs cdinn's heavy work."""
    limit_openblas_threads()
    tune_allocator()
