"""CDI NN (Cherukara et al. 2018): two 2D encoder-decoders, structure and phase."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cdinn.models.base import CDIModel, phase_from_unit
from cdinn.models.blocks import Block, Decoder, Encoder, lrelu_bn_block, relu_block
from cdinn.models.registry import register


class _EncoderDecoder(nn.Module):
    """An encoder, a 2x pooling and a decoder; logits of ``out_channels`` maps."""

    def __init__(self, widths: Sequence[int], batch_norm: bool = False, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        block = lrelu_bn_block if batch_norm else relu_block
        # The paper pools after every level (32 -> 4) and up-samples after every decoder level.
        self.encoder = Encoder(2, in_channels, widths, block)
        self.pool = nn.MaxPool2d(2)
        self.decoder = _decoder(widths, block, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.pool(self.encoder(x)))


def _decoder(widths: Sequence[int], block: Block, out_channels: int) -> Decoder:
    """The paper's decoder: the encoder's widths reversed, an up-sampling after every level."""
    return Decoder(2, widths[-1], list(reversed(widths)), len(widths), block, out_channels=out_channels)


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

    Two options trade the paper's layout for throughput (a stack of thousands of 2D frames):
    ``space_to_depth`` f > 1 folds each f x f block of pattern pixels into f² input channels
    (``PixelUnshuffle``) and unfolds f² output channels back into pixels (``PixelShuffle``),
    so every layer runs on 1/f² of the pixels; ``shared_encoder`` gives the two decoders one
    encoder, as 3D-CDI-NN does. Both together (the shipped ``cdinn2d-fast``): ~3x the paper
    layout's patterns/s at width 16 on a 2-core CPU in bfloat16 (``benchmarks/results/networks.md``,
    section on stacks).
    """

    family = "cdinn2d"
    ndim = 2

    def __init__(self, width: int = 32, size: int = 32, batch_norm: bool = False, space_to_depth: int = 1,
                 shared_encoder: bool = False):
        super().__init__()
        if space_to_depth < 1 or size % (space_to_depth * 8):
            raise ValueError(f"size {size} must be a multiple of 8 x space_to_depth ({space_to_depth})")
        widths = [width, 2 * width, 4 * width]
        channels = space_to_depth ** 2
        self.input_size = self.output_size = size
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(space_to_depth), nn.PixelShuffle(space_to_depth)
        if shared_encoder:
            block = lrelu_bn_block if batch_norm else relu_block
            self.encoder = nn.Sequential(Encoder(2, channels, widths, block), nn.MaxPool2d(2))
            self.shape_decoder = _decoder(widths, block, channels)
            self.phase_decoder = _decoder(widths, block, channels)
        else:
            self.shape_net = _EncoderDecoder(widths, batch_norm, channels, channels)
            self.phase_net = _EncoderDecoder(widths, batch_norm, channels, channels)
        self.config = {"width": width, "size": size, "batch_norm": batch_norm}
        if space_to_depth > 1 or shared_encoder:
            self.config.update(space_to_depth=space_to_depth, shared_encoder=shared_encoder)

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.unshuffle(amplitude)
        if hasattr(self, "encoder"):
            code = self.encoder(x)
            shape, phase = self.shape_decoder(code), self.phase_decoder(code)
        else:
            shape, phase = self.shape_net(x), self.phase_net(x)
        return (torch.sigmoid(self.shuffle(shape)).squeeze(1),
                phase_from_unit(torch.sigmoid(self.shuffle(phase))).squeeze(1))
