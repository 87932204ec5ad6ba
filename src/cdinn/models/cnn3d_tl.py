"""3D CNN with supervised and unsupervised transfer learning (superellipsoid-trained)."""

from __future__ import annotations

import math

import torch

from cdinn.models.base import CDIModel
from cdinn.models.blocks import Decoder, Encoder, factorised_block
from cdinn.models.registry import register


@register("cnn3d-tl")
class CNN3DTL(CDIModel):
    """Encoder and two decoders of [3x3x3 conv + LReLU + BN] + factorised [3x1x1, 1x3x1, 1x1x3]
    blocks; outputs half the input size per axis (zero-padded back for the forward model).

    The amplitude head ends in a ReLU, as in the paper; the phase head in ``pi tanh`` (the
    paper's phase range is not stated; tanh keeps it within one wrap).
    """

    family = "cnn3d-tl"
    ndim = 3

    def __init__(self, width: int = 32, size: int = 64, levels: int = 4):
        super().__init__()
        widths = [width * 2**k for k in range(levels)]
        self.input_size = size
        self.output_size = size // 2
        self.encoder = Encoder(3, 1, widths, factorised_block)
        rev = list(reversed(widths))[1:]
        self.amplitude_decoder = Decoder(3, widths[-1], rev, len(rev) - 1, factorised_block)
        self.phase_decoder = Decoder(3, widths[-1], rev, len(rev) - 1, factorised_block)
        self.config = {"width": width, "size": size, "levels": levels}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(amplitude)
        amp = torch.relu(self.amplitude_decoder(code)).squeeze(1)
        phase = math.pi * torch.tanh(self.phase_decoder(code)).squeeze(1)
        return amp, phase
