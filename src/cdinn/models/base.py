"""What every cdinn network shares: its input convention, outputs and metadata."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class CDIModel(nn.Module):
    """Base class: a network from a diffraction amplitude to an object's amplitude and phase.

    Subclasses set ``ndim``, ``input_size`` and ``output_size`` (per axis) and implement
    :meth:`heads`, which returns raw amplitude and phase maps ``(B, *output)``.

    Input convention (recorded in every model card): the network sees ``sqrt(I)`` normalised
    to maximum 1, shape ``(B, 1, *input)``, zero frequency at the centre.
    """

    family: str = ""
    ndim: int = 3
    input_size: int = 64
    output_size: int = 32

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    @staticmethod
    def normalise(intensity: torch.Tensor, ndim: int) -> torch.Tensor:
        """``sqrt(I) / max`` per pattern, with a channel axis: ``(B, 1, *spatial)``."""
        amp = intensity.clamp_min(0).sqrt()
        peak = amp.flatten(start_dim=amp.ndim - ndim).amax(dim=-1).clamp_min(1e-12)
        amp = amp / peak.reshape(peak.shape + (1,) * ndim)
        return amp.unsqueeze(-ndim - 1)

    def forward(self, amplitude: torch.Tensor) -> dict[str, torch.Tensor]:
        """``amplitude``: normalised input ``(B, 1, *input)``; returns ``amplitude`` and ``phase`` maps."""
        amp, phase = self.heads(amplitude)
        return {"amplitude": amp, "phase": phase}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, intensity: torch.Tensor) -> torch.Tensor:
        """Complex object ``(B, *output)`` predicted from measured intensities ``(B, *input)``."""
        out = self(self.normalise(intensity, self.ndim))
        return torch.polar(out["amplitude"], out["phase"])

    def describe(self) -> dict[str, Any]:
        """Architecture facts for the model card."""
        return {
            "family": self.family,
            "ndim": self.ndim,
            "input_shape": [self.input_size] * self.ndim,
            "output_shape": [self.output_size] * self.ndim,
            "parameters": sum(p.numel() for p in self.parameters()),
            "config": self.config,
        }


def phase_from_unit(p: torch.Tensor) -> torch.Tensor:
    """Map a [0, 1] output to a phase in [-pi, pi] (CDI NN, 3D-CDI-NN)."""
    return (p - 0.5) * (2 * math.pi)
