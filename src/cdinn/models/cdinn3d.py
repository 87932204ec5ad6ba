"""3D-CDI-NN (Chan et al. 2021): shared 3D encoder, shape and phase decoders."""

from __future__ import annotations

import torch
from torch import nn

from cdinn.models.base import CDIModel, phase_from_unit
from cdinn.models.blocks import Decoder, Encoder, relu_block
from cdinn.models.registry import register


@register("cdinn3d")
class CDINN3D(CDIModel):
    """32³ amplitude in; 32³ shape and phase out.

    Shared encoder: two 3x3x3 convolutions at 32, 64, 128 channels with max-pooling
    (32 -> 4); two decoders of two convolutions at 128, 64, 32 channels with up-sampling,
    then a 1-channel convolution. ReLU; dropout 0.1 on the input and after convolutions.
    The phase output (sigmoid) maps as ``(p - 0.5) 2 pi``. ``width`` scales the channels.
    """

    family = "cdinn3d"
    ndim = 3

    def __init__(self, width: int = 32, size: int = 32, dropout: float = 0.1):
        super().__init__()
        widths = [width, 2 * width, 4 * width]
        self.input_size = self.output_size = size
        self.input_dropout = nn.Dropout(dropout)
        self.encoder = nn.Sequential(Encoder(3, 1, widths, relu_block, dropout), nn.MaxPool3d(2))
        rev = list(reversed(widths))
        self.shape_decoder = Decoder(3, widths[-1], rev, len(widths), relu_block, dropout)
        self.phase_decoder = Decoder(3, widths[-1], rev, len(widths), relu_block, dropout)
        self.config = {"width": width, "size": size, "dropout": dropout}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(self.input_dropout(amplitude))
        shape = torch.sigmoid(self.shape_decoder(code)).squeeze(1)
        phase = phase_from_unit(torch.sigmoid(self.phase_decoder(code))).squeeze(1)
        return shape, phase

    def stage_modules(self) -> dict[str, nn.Module]:
        """Named parts for the paper's sequential training."""
        return {"encoder": self.encoder, "shape_decoder": self.shape_decoder, "phase_decoder": self.phase_decoder}
