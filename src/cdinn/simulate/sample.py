"""The record every generator returns: a real-space target before diffraction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One simulated object on its object grid.

    Attributes
    ----------
    amplitude : ndarray, float32
        Amplitude in [0, 1], centred in its array.
    phase : ndarray, float32
        Phase in radians, unwrapped (as generated), zero outside the object.
    support : ndarray, bool
        Where the object is.
    params : dict of str to float
        Scalar parameters of this draw; the keys are fixed for a generator so that a
        dataset can store them as columns.
    """

    amplitude: np.ndarray
    phase: np.ndarray
    support: np.ndarray
    params: dict[str, float] = field(default_factory=dict)

    @property
    def object(self) -> np.ndarray:
        """The complex object ``amplitude * exp(i phase)`` (complex64)."""
        return (self.amplitude * np.exp(1j * self.phase)).astype(np.complex64)
