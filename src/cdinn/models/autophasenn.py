"""AutoPhaseNN (Yao et al. 2022): unsupervised, physics-aware 3D phase retrieval network."""

from __future__ import annotations

import math

import torch

from cdinn.models.base import CDIModel
from cdinn.models.blocks import Decoder, Encoder, lrelu_bn_block
from cdinn.models.registry import register


@register("autophasenn")
class AutoPhaseNN(CDIModel):
    """64³ pattern in (``sqrt(I)`` or ``log(1 + I)``, normalised by its maximum), 32³ amplitude and phase out.

    Encoder blocks of [conv 3³ -> LeakyReLU(0.01) -> BatchNorm] x2 at 32, 64, 128, 256
    channels with max-pooling between them (64 -> 8); two decoders back up to half the input
    size (8 -> 32); amplitude = sigmoid, phase = pi tanh. The physics (support threshold,
    zero-padding to the input size, |FFT|) is the layer :class:`cdinn.train.losses.FourierLoss`
    applies to the outputs, so training needs no real-space labels.
    """

    family = "autophasenn"
    ndim = 3

    def __init__(self, width: int = 32, size: int = 64, input_scale: str = "sqrt"):
        super().__init__()
        if input_scale not in ("sqrt", "log"):
            raise ValueError(f"input_scale must be sqrt or log, got {input_scale!r}")
        self.input_scale = input_scale
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.input_size = size
        self.output_size = size // 2
        self.encoder = Encoder(3, 1, widths, lrelu_bn_block)
        rev = list(reversed(widths))[1:]
        self.amplitude_decoder = Decoder(3, widths[-1], rev, len(rev) - 1, lrelu_bn_block)
        self.phase_decoder = Decoder(3, widths[-1], rev, len(rev) - 1, lrelu_bn_block)
        self.config = {"width": width, "size": size, "input_scale": input_scale}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(amplitude)
        amp = torch.sigmoid(self.amplitude_decoder(code)).squeeze(1)
        phase = math.pi * torch.tanh(self.phase_decoder(code)).squeeze(1)
        return amp, phase
