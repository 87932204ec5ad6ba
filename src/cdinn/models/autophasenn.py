"""AutoPhaseNN (Yao et al. 2022): unsupervised, physics-aware 3D phase retrieval network."""

from __future__ import annotations

import math

import torch

from cdinn.models.base import CDIModel
from cdinn.models.blocks import Decoder, Encoder, SpaceToDepth3d, lrelu_bn_block
from cdinn.models.registry import register


@register("autophasenn")
class AutoPhaseNN(CDIModel):
    """64³ pattern in (``sqrt(I)`` or ``log(1 + I)``, normalised by its maximum; with
    ``autocorrelation``, the pattern's autocorrelation as a second channel; with
    ``autocorrelation_phase``, its phase as two more), 32³ amplitude and phase out.

    Encoder blocks of [conv 3³ -> LeakyReLU(0.01) -> BatchNorm] x2 at 32, 64, 128, 256
    channels with max-pooling between them (64 -> 8); two decoders back up to half the input
    size (8 -> 32); amplitude = sigmoid, phase = pi tanh. The physics (support threshold,
    zero-padding to the input size, |FFT|) is the layer :class:`cdinn.train.losses.FourierLoss`
    applies to the outputs, so training needs no real-space labels.
    """

    family = "autophasenn"
    ndim = 3

    def __init__(self, width: int = 32, size: int = 64, input_scale: str = "sqrt", space_to_depth: int = 1,
                 autocorrelation: bool = False, autocorrelation_phase: bool = False):
        super().__init__()
        if input_scale not in ("sqrt", "log"):
            raise ValueError(f"input_scale must be sqrt or log, got {input_scale!r}")
        if space_to_depth not in (1, 2) or size % (16 * space_to_depth):
            raise ValueError(f"space_to_depth must be 1 or 2 and divide size {size} / 16")
        self.input_scale = input_scale
        if autocorrelation_phase and not autocorrelation:
            raise ValueError("autocorrelation_phase needs autocorrelation = true")
        self.autocorrelation = bool(autocorrelation)
        self.autocorrelation_phase = bool(autocorrelation_phase)
        # With space_to_depth = 2 the encoder starts on the folded 32³ grid, one level fewer:
        # its bottleneck stays at 1/8 of the input, and the 64³ level (most of the cost) goes.
        levels = 4 if space_to_depth == 1 else 3
        widths = [width * 2**k for k in range(levels)]
        self.input_size = size
        self.output_size = size // 2
        self.fold = SpaceToDepth3d(space_to_depth)
        self.encoder = Encoder(3, space_to_depth**3 * (1 + self.autocorrelation + 2 * self.autocorrelation_phase), widths, lrelu_bn_block)
        rev = list(reversed(widths))[1:]
        n_up = len(rev) - 1 + (space_to_depth == 2)
        self.amplitude_decoder = Decoder(3, widths[-1], rev, n_up, lrelu_bn_block)
        self.phase_decoder = Decoder(3, widths[-1], rev, n_up, lrelu_bn_block)
        self.config = {"width": width, "size": size, "input_scale": input_scale}
        if space_to_depth > 1:
            self.config["space_to_depth"] = space_to_depth
        if self.autocorrelation:
            self.config["autocorrelation"] = True
        if self.autocorrelation_phase:
            self.config["autocorrelation_phase"] = True

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(self.fold(amplitude))
        amp = torch.sigmoid(self.amplitude_decoder(code)).squeeze(1)
        phase = math.pi * torch.tanh(self.phase_decoder(code)).squeeze(1)
        return amp, phase
