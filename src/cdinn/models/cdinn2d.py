"""CDI NN (Cherukara et al. 2018): two separate 2D encoder-decoders, structure and phase."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cdinn.models.base import CDIModel, phase_from_unit
from cdinn.models.blocks import Decoder, Encoder, lrelu_bn_block, relu_block
from cdinn.models.registry import register


class _EncoderDecoder(nn.Module):
    def __init__(self, widths: Sequence[int], batch_norm: bool = False):
        super().__init__()
        block = lrelu_bn_block if batch_norm else relu_block
        # The paper pools after every level (32 -> 4) and up-samples after every decoder level.
        self.encoder = Encoder(2, 1, widths, block)
        self.pool = nn.MaxPool2d(2)
        self.decoder = Decoder(2, widths[-1], list(reversed(widths)), len(widths), block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.pool(self.encoder(x)))).squeeze(1)


@register("cdinn2d")
class CDINN2D(CDIModel):
    """sCDI NN + pCDI NN: 32x32 diffraction amplitude in, 32x32 amplitude and phase out.

    Each network: encoder of two 3x3 convolutions (ReLU) at 32, 64, 128 channels, each
    followed by 2x max-pooling; decoder of two convolutions at 128, 64, 32 channels with 2x
    up-sampling; a final 1-channel convolution and a sigmoid. The phase network's [0, 1]
    output maps to [-pi, pi]. ``width`` scales the channel counts (32 = the paper).
    ``batch_norm`` swaps the paper's ReLU blocks for LeakyReLU + BatchNorm blocks (as in
    AutoPhaseNN): on small objects in a mostly empty frame the ReLU network dies into an
    empty output within a hundred steps.
    """

    family = "cdinn2d"
    ndim = 2

    def __init__(self, width: int = 32, size: int = 32, batch_norm: bool = False):
        super().__init__()
        widths = [width, 2 * width, 4 * width]
        self.input_size = self.output_size = size
        self.shape_net = _EncoderDecoder(widths, batch_norm)
        self.phase_net = _EncoderDecoder(widths, batch_norm)
        self.config = {"width": width, "size": size, "batch_norm": batch_norm}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shape_net(amplitude), phase_from_unit(self.phase_net(amplitude))
