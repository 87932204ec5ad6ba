"""Layers swapped, in a network's CPU inference copy, for equivalent ones that run faster.

oneDNN's bfloat16 kernels on a CPU are slow for two shapes every cdinn network has: a
convolution of a single input channel (the pattern) and 2x max pooling. Measured on a 2-core
AMX Xeon, 64³ input, channels-last bfloat16: a 1 -> 8 convolution 10.6 ms, the same with a
second all-zero input channel 3.3 ms; pooling 8 x 64³ channels 3.2 ms, the maximum of the
strided halves 0.7 ms. The replacements compute the same numbers (the zero channel has zero
weights; a maximum is exact), so a model card's figures hold for the copy.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class PairwiseMaxPool(nn.Module):
    """2x max pooling (kernel 2, stride 2, floor mode) as maxima of strided views, one axis at a time."""

    def __init__(self, ndim: int):
        super().__init__()
        self.ndim = ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in range(x.ndim - self.ndim, x.ndim):
            even = x.shape[axis] // 2 * 2  # floor mode drops an odd last row
            x = torch.maximum(x.narrow(axis, 0, even)[(slice(None),) * axis + (slice(0, None, 2),)],
                              x.narrow(axis, 0, even)[(slice(None),) * axis + (slice(1, None, 2),)])
        return x


class ZeroChannelConv(nn.Module):
    """A convolution of one input channel run as one of two, the second channel all zeros with
    zero weights: the same output, from a kernel oneDNN runs about 3x faster."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d):
        super().__init__()
        self.conv = copy.deepcopy(conv)
        weight = self.conv.weight
        self.conv.weight = nn.Parameter(torch.cat([weight, torch.zeros_like(weight)], dim=1), weight.requires_grad)
        self.conv.in_channels = 2
        self.pad = (0, 0) * (weight.ndim - 2) + (0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def _pairwise_poolable(m: nn.Module) -> bool:
    def pair(v: int | tuple[int, ...]) -> bool:
        return all(s == 2 for s in ((v,) if isinstance(v, int) else v))

    return (isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)) and pair(m.kernel_size) and pair(m.stride or m.kernel_size)
            and not any(((m.padding,) if isinstance(m.padding, int) else m.padding))
            and all(d == 1 for d in ((m.dilation,) if isinstance(m.dilation, int) else m.dilation))
            and not m.ceil_mode and not m.return_indices)


def swap_for_cpu(net: nn.Module) -> nn.Module:
    """Replace, in place, 2x max pooling by :class:`PairwiseMaxPool` and single-input-channel
    convolutions by :class:`ZeroChannelConv`; returns ``net``."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if _pairwise_poolable(child):
                setattr(parent, name, PairwiseMaxPool(2 if isinstance(child, nn.MaxPool2d) else 3))
            elif (isinstance(child, (nn.Conv2d, nn.Conv3d)) and child.in_channels == 1 and child.groups == 1
                  and child.padding_mode == "zeros"):
                setattr(parent, name, ZeroChannelConv(child))
    return net
