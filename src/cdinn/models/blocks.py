"""Building blocks shared by the network families: conv stacks, encoders, decoders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def conv(ndim: int, cin: int, cout: int, kernel: int | tuple[int, ...] = 3) -> nn.Module:
    """Same-padded convolution in 2D or 3D."""
    k = (kernel,) * ndim if isinstance(kernel, int) else tuple(kernel)
    cls = nn.Conv2d if ndim == 2 else nn.Conv3d
    return cls(cin, cout, k, padding=tuple(s // 2 for s in k))


def batch_norm(ndim: int, channels: int) -> nn.Module:
    """Batch normalisation of the right dimensionality."""
    return nn.BatchNorm2d(channels) if ndim == 2 else nn.BatchNorm3d(channels)


def max_pool(ndim: int) -> nn.Module:
    """2x down-sampling by max pooling."""
    return nn.MaxPool2d(2) if ndim == 2 else nn.MaxPool3d(2)


def upsample() -> nn.Module:
    """2x nearest-neighbour up-sampling (any dimensionality)."""
    return nn.Upsample(scale_factor=2, mode="nearest")


def relu_block(ndim: int, cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    """CDI NN / 3D-CDI-NN block: two 3x3(x3) convolutions with ReLU (and dropout)."""
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers += [conv(ndim, c, cout), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def lrelu_bn_block(ndim: int, cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    """AutoPhaseNN block: [conv -> LeakyReLU(0.01) -> BatchNorm] twice."""
    del dropout
    return nn.Sequential(
        conv(ndim, cin, cout), nn.LeakyReLU(0.01, inplace=True), batch_norm(ndim, cout),
        conv(ndim, cout, cout), nn.LeakyReLU(0.01, inplace=True), batch_norm(ndim, cout),
    )


def factorised_block(ndim: int, cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    """Transfer-learning CNN block: a full 3x3x3 conv, then a factorised 3x1x1 + 1x3x1 + 1x1x3 stack.

    Each convolution is followed by LeakyReLU and BatchNorm.
    """
    del dropout
    layers: list[nn.Module] = [conv(ndim, cin, cout), nn.LeakyReLU(0.01, inplace=True), batch_norm(ndim, cout)]
    for axis in range(ndim):
        kernel = tuple(3 if a == axis else 1 for a in range(ndim))
        layers += [conv(ndim, cout, cout, kernel), nn.LeakyReLU(0.01, inplace=True), batch_norm(ndim, cout)]
    return nn.Sequential(*layers)


class SpaceToDepth3d(nn.Module):
    """Each f x f x f block of voxels folded into f³ channels: ``(B, C, D, H, W)`` ->
    ``(B, C f³, D/f, H/f, W/f)``, channel ``c f³ + (a f + b) f + e`` holding voxel
    ``(f i + a, f j + b, f k + e)``, as ``nn.PixelUnshuffle`` orders 2D pixels (torch has no 3D one)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        if f == 1:
            return x
        b, c, d, h, w = x.shape
        x = x.reshape(b, c, d // f, f, h // f, f, w // f, f).permute(0, 1, 3, 5, 7, 2, 4, 6)
        return x.reshape(b, c * f**3, d // f, h // f, w // f)


Block = Callable[..., nn.Module]


class Encoder(nn.Module):
    """A block per level, halving the size after every level but the last."""

    def __init__(self, ndim: int, cin: int, widths: Sequence[int], block: Block, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for level, w in enumerate(widths):
            layers.append(block(ndim, cin, w, dropout))
            if level < len(widths) - 1:
                layers.append(max_pool(ndim))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Blocks of decreasing width with ``n_up`` 2x up-samplings, then an ``out_channels``
    convolution (one map; more where the output is rearranged into pixels, as after a
    space-to-depth input)."""

    def __init__(self, ndim: int, cin: int, widths: Sequence[int], n_up: int, block: Block, dropout: float = 0.0,
                 out_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for level, w in enumerate(widths):
            layers.append(block(ndim, cin, w, dropout))
            if level < n_up:
                layers.append(upsample())
            cin = w
        layers.append(conv(ndim, cin, out_channels))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
