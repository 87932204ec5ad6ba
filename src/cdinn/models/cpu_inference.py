"""Layers swapped, in a network's CPU inference copy, for equivalent ones that run faster.

oneDNN's bfloat16 kernels on a CPU are slow for two shapes every cdinn network has: a
convolution of a single input channel (the pattern) and 2x max pooling. Measured on a 2-core
AMX Xeon, 64³ input, channels-last bfloat16: a 1 -> 8 convolution 10.6 ms, the same with a
second all-zero input channel 3.3 ms; pooling 8 x 64³ channels 3.2 ms, the maximum of the
strided halves 0.7 ms. The replacements compute the same numbers (the zero channel has zero
weights; a maximum is exact), so a model card's figures hold for the copy.

For inference (evaluation mode, no gradients) two more passes go. A BatchNorm just before a
2x max pooling moves after it, onto a quarter (2D) or an eighth (3D) of the values, which is
exact when its scales are positive (``max(a x + b) = a max(x) + b`` for ``a > 0``; the shipped
networks' are). And each convolution and the LeakyReLU after it become one oneDNN call that
applies the activation to the accumulator (:class:`ConvLeakyReLU`). Measured on 2 cores,
interleaved rounds, median: the 64² CDI NN 1.13x faster in batches of 256 (12 rounds); the 64³
AutoPhaseNN 1.06x per pattern from the BatchNorm move (12 rounds) and 1.03x more from the
fused activations (40 rounds, range 0.75-1.8x: the VM's noise is larger than the gain). The
results differ from the unfused copy by bfloat16 rounding only (the activation is applied
before rounding, not after).
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


class ChannelsLastPixelShuffle(nn.Module):
    """``nn.PixelShuffle`` as one reshape-permute copy: torch's own kernel takes a slow path
    on a channels-last bfloat16 input (the last convolution's output); the same values land
    in a contiguous ``(B, C, H f, W f)`` result."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        b, c, h, w = x.shape
        x = x.reshape(b, c // f**2, f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // f**2, h * f, w * f)


def _pairwise_poolable(m: nn.Module) -> bool:
    def pair(v: int | tuple[int, ...]) -> bool:
        return all(s == 2 for s in ((v,) if isinstance(v, int) else v))

    return (isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)) and pair(m.kernel_size) and pair(m.stride or m.kernel_size)
            and not any(((m.padding,) if isinstance(m.padding, int) else m.padding))
            and all(d == 1 for d in ((m.dilation,) if isinstance(m.dilation, int) else m.dilation))
            and not m.ceil_mode and not m.return_indices)


_FUSED: bool | None = None


def _fused_conv_works() -> bool:
    """Whether this torch build has oneDNN's fused convolution (``mkldnn._convolution_pointwise``)."""
    global _FUSED
    if _FUSED is None:
        try:
            x = torch.ones((1, 2, 4, 4), dtype=torch.bfloat16)
            w = torch.ones((2, 2, 3, 3), dtype=torch.bfloat16)
            torch.ops.mkldnn._convolution_pointwise(x, w, None, [1, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.01], "")
            _FUSED = True
        except (AttributeError, RuntimeError, NotImplementedError):
            _FUSED = False
    return _FUSED


class ConvLeakyReLU(nn.Module):
    """A convolution (zero padding) and the LeakyReLU after it as one oneDNN call, for inference."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d | ZeroChannelConv, slope: float):
        super().__init__()
        inner = conv.conv if isinstance(conv, ZeroChannelConv) else conv
        self.pad = conv.pad if isinstance(conv, ZeroChannelConv) else None
        self.weight, self.bias = inner.weight, inner.bias
        self.args = (list(inner.padding), list(inner.stride), list(inner.dilation), inner.groups)
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args, "leaky_relu",
                                                       [self.slope], "")


def _positive_scales(bn: nn.Module) -> bool:
    scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return bool((scale > 0).all())


def fuse_for_inference(net: nn.Module) -> nn.Module:
    """In an evaluation-mode copy: convolution + LeakyReLU pairs as :class:`ConvLeakyReLU`
    (where oneDNN's fused call exists), and a block's last BatchNorm moved after the 2x max
    pooling that follows it (where its scales are positive). Returns ``net``, changed in place."""
    fuse = _fused_conv_works()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.children())
        for i, (a, b) in enumerate(zip(children, children[1:])):
            conv = a.conv if isinstance(a, ZeroChannelConv) else a
            if (fuse and isinstance(b, nn.LeakyReLU) and isinstance(conv, (nn.Conv2d, nn.Conv3d))
                    and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)):
                seq[i], seq[i + 1] = ConvLeakyReLU(a, b.negative_slope), nn.Identity()
            elif (isinstance(a, nn.Sequential) and len(a) and isinstance(a[-1], (nn.BatchNorm2d, nn.BatchNorm3d))
                  and isinstance(b, (PairwiseMaxPool, nn.MaxPool2d, nn.MaxPool3d)) and _positive_scales(a[-1])):
                seq[i + 1] = nn.Sequential(b, a[-1])
                a[-1] = nn.Identity()
    return net


def swap_for_cpu(net: nn.Module) -> nn.Module:
    """Replace, in place, 2x max pooling by :class:`PairwiseMaxPool`, single-input-channel
    convolutions by :class:`ZeroChannelConv` and pixel shuffles by
    :class:`ChannelsLastPixelShuffle`; returns ``net``."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if _pairwise_poolable(child):
                setattr(parent, name, PairwiseMaxPool(2 if isinstance(child, nn.MaxPool2d) else 3))
            elif isinstance(child, nn.PixelShuffle):
                setattr(parent, name, ChannelsLastPixelShuffle(child.upscale_factor))
            elif (isinstance(child, (nn.Conv2d, nn.Conv3d)) and child.in_channels == 1 and child.groups == 1
                  and child.padding_mode == "zeros"):
                setattr(parent, name, ZeroChannelConv(child))
    return net
