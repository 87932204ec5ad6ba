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
    to maximum 1 (``input_scale = "sqrt"``, the papers' choice) or ``log(1 + I)`` normalised
    to maximum 1 (``"log"``, which lifts the weak high-q fringes that carry the facets), shape
    ``(B, 1, *input)``, zero frequency at the centre, unmeasured pixels zero.
    """

    family: str = ""
    ndim: int = 3
    input_size: int = 64
    output_size: int = 32
    input_scale: str = "sqrt"

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def prepare(self, intensity: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The network input from measured counts ``(B, *input)``: ``(B, 1, *input)``, scaled per pattern."""
        x = intensity.float().clamp_min(0)
        x = x.log1p() if self.input_scale == "log" else x.sqrt()
        if mask is not None:
            x = x * (~mask.bool())
        peak = x.flatten(start_dim=x.ndim - self.ndim).amax(dim=-1).clamp_min(1e-12)
        return (x / peak.reshape(peak.shape + (1,) * self.ndim)).unsqueeze(-self.ndim - 1)

    def forward(self, amplitude: torch.Tensor) -> dict[str, torch.Tensor]:
        """``amplitude``: the prepared input ``(B, 1, *input)``; returns ``amplitude`` and ``phase`` maps."""
        amp, phase = self.heads(amplitude)
        return {"amplitude": amp, "phase": phase}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, intensity: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Complex object ``(B, *output)`` predicted from measured intensities ``(B, *input)``."""
        out = self(self.prepare(intensity, mask))
        return torch.polar(out["amplitude"].float(), out["phase"].float())

    def describe(self) -> dict[str, Any]:
        """Architecture facts for the model card."""
        return {
            "family": self.family,
            "ndim": self.ndim,
            "input_shape": [self.input_size] * self.ndim,
            "output_shape": [self.output_size] * self.ndim,
            "input_scale": self.input_scale,
            "parameters": sum(p.numel() for p in self.parameters()),
            "config": self.config,
        }


def phase_from_unit(p: torch.Tensor) -> torch.Tensor:
    """Map a [0, 1] output to a phase in [-pi, pi] (CDI NN, 3D-CDI-NN)."""
    return (p - 0.5) * (2 * math.pi)
