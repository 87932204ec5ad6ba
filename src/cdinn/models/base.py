"""What every cdinn network shares: its input convention, outputs and metadata."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from cdinn.models.cpu_inference import fuse_for_inference, swap_for_cpu
from cdinn.physics.fourier import inverse
from cdinn.physics.support import autocorrelation, fill_masked

CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


class CDIModel(nn.Module):
    """Base class: a network from a diffraction amplitude to an object's amplitude and phase.

    Subclasses set ``ndim``, ``input_size`` and ``output_size`` (per axis) and implement
    :meth:`heads`, which returns raw amplitude and phase maps ``(B, *output)``.

    Input convention (recorded in every model card): the network sees ``sqrt(I)`` normalised
    to maximum 1 (``input_scale = "sqrt"``, the papers' choice) or ``log(1 + I)`` normalised
    to maximum 1 (``"log"``, which lifts the weak high-q fringes that carry the facets), shape
    ``(B, 1, *input)``, zero frequency at the centre, unmeasured pixels zero. A model with
    ``autocorrelation = True`` sees a second channel: the modulus of the pattern's inverse
    transform (:func:`autocorrelation_channel`), the object's autocorrelation, whose support is
    the crystal's shape doubled: real-space shape information that a convolutional encoder
    of the pattern alone would have to learn a Fourier transform to reach. A model with
    ``autocorrelation_phase = True`` sees two more: the autocorrelation's phase as the unit
    phasor's real and imaginary parts, weighted by the log-scaled modulus
    (:func:`autocorrelation_phase_channels`). ``|A|`` is the same for every phase of the
    object; the phase of ``A(r) = sum_x rho(x) rho*(x - r)`` near the rim of its support is the
    phase difference between the two tips of the crystal that overlap there.
    """

    family: str = ""
    ndim: int = 3
    input_size: int = 64
    output_size: int = 32
    input_scale: str = "sqrt"
    autocorrelation: bool = False
    autocorrelation_phase: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def prepare(self, intensity: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The network input from measured counts ``(B, *input)``: ``(B, C, *input)``, scaled
        per pattern (``C`` = 2 with the autocorrelation channel, else 1)."""
        counts = intensity.float().clamp_min(0)
        x = counts.log1p() if self.input_scale == "log" else counts.sqrt()
        if mask is not None:
            x = x * (~mask.bool())
        channels = [_per_pattern_max(x, self.ndim)]
        if self.autocorrelation_phase:
            channels.extend(autocorrelation_phase_channels(counts, mask, self.ndim))
        elif self.autocorrelation:
            channels.append(autocorrelation_channel(counts, mask, self.ndim))
        return torch.stack(channels, dim=-self.ndim - 1)

    def forward(self, amplitude: torch.Tensor) -> dict[str, torch.Tensor]:
        """``amplitude``: the prepared input ``(B, 1, *input)``; returns ``amplitude`` and ``phase`` maps."""
        amp, phase = self.heads(amplitude)
        return {"amplitude": amp, "phase": phase}

    def heads(self, amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, intensity: torch.Tensor, mask: torch.Tensor | None = None,
                precision: str = "auto") -> torch.Tensor:
        """Complex object ``(B, *output)`` predicted from measured intensities ``(B, *input)``.

        ``precision``: ``"auto"`` (:func:`inference_dtype`), ``"fp32"`` or ``"bf16"``; the
        network's layers run in it, input and output stay float32.
        """
        dtype = inference_dtype(intensity.device, precision)
        x = self.prepare(intensity, mask)
        if dtype == torch.bfloat16 and x.device.type == "cpu":
            out = self.cpu_bf16_copy()(x.to(torch.bfloat16, memory_format=CHANNELS_LAST[self.ndim]))
        else:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                out = self(x)
        return torch.polar(out["amplitude"].float().contiguous(), out["phase"].float().contiguous())

    def cpu_bf16_copy(self) -> nn.Module:
        """This network with bfloat16 weights in channels-last layout, for CPU inference.

        oneDNN's bf16 convolutions want both: on a 2-core AMX Xeon the copy predicts a 64³
        pattern in 32 ms and 64 2D patterns in 90 ms, against 56 ms and 210 ms under autocast,
        which re-casts every weight and converts layouts at every call. Pooling and the
        single-channel input convolution are swapped for equivalent, faster layers
        (:func:`cdinn.models.cpu_inference.swap_for_cpu`); in evaluation mode, convolutions
        and their activations are fused and BatchNorm moves past pooling
        (:func:`~cdinn.models.cpu_inference.fuse_for_inference`). The copy is rebuilt when a
        weight or buffer of this network changes (training, fine-tuning, loading) or its
        train/eval mode does.
        """
        cache = self.__dict__.setdefault("_bf16_copy", {})
        key = (self.training, *(t._version for t in (*self.parameters(), *self.buffers())))
        if cache.get("key") != key:
            cache.clear()  # before copying, so the copy does not hold the old copy
            net = swap_for_cpu(copy.deepcopy(self).to(torch.bfloat16, memory_format=CHANNELS_LAST[self.ndim]))
            cache.update(key=key, net=net if self.training else fuse_for_inference(net))
        return cache["net"]

    def describe(self) -> dict[str, Any]:
        """Architecture facts for the model card."""
        return {
            "family": self.family,
            "ndim": self.ndim,
            "input_shape": [self.input_size] * self.ndim,
            "output_shape": [self.output_size] * self.ndim,
            "input_scale": self.input_scale,
            "input_channels": ["counts"] + (["autocorrelation"] if self.autocorrelation else [])
                              + (["autocorrelation phase (real)", "autocorrelation phase (imaginary)"]
                                 if self.autocorrelation_phase else []),
            "parameters": sum(p.numel() for p in self.parameters()),
            "config": self.config,
        }


AUTOCORRELATION_RANGE = 1e4
"""Dynamic range of the autocorrelation channel: its log maps [1e-4, 1] of the peak to [0, 1]."""


def _per_pattern_max(x: torch.Tensor, ndim: int) -> torch.Tensor:
    peak = x.flatten(start_dim=x.ndim - ndim).amax(dim=-1).clamp_min(1e-12)
    return x / peak.reshape(peak.shape + (1,) * ndim)


def autocorrelation_channel(counts: torch.Tensor, mask: torch.Tensor | None, ndim: int) -> torch.Tensor:
    """The autocorrelation input of a batch of patterns ``(B, *input)``: ``|inverse(I)|``
    (unmeasured pixels filled from their neighbours first), over its peak, log-scaled so that
    1e-4 of the peak maps to 0 and the peak to 1. The shape sits in its weak outer part: the
    overlap of a crystal with its shifted copy falls to zero at twice the crystal's extent."""
    if mask is not None:
        counts = fill_masked(counts, mask.bool(), ndim=ndim)
    return _log_range(_per_pattern_max(autocorrelation(counts, ndim), ndim))


def _log_range(a: torch.Tensor) -> torch.Tensor:
    return torch.log1p(AUTOCORRELATION_RANGE * a) / math.log1p(AUTOCORRELATION_RANGE)


def autocorrelation_phase_channels(counts: torch.Tensor, mask: torch.Tensor | None,
                                   ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The autocorrelation channel of :func:`autocorrelation_channel` and its phase: the complex
    ``A = inverse(I)`` (:func:`cdinn.physics.fourier.inverse`, unmeasured pixels filled first)
    as ``w``, ``w cos(arg A)`` and ``w sin(arg A)`` with ``w`` the log-scaled modulus, so that
    the phase fades out with the modulus where it is noise. ``A(-r) = conj(A(r))``: the
    imaginary channel is odd about the centre, zero for an object of uniform phase."""
    if mask is not None:
        counts = fill_masked(counts, mask.bool(), ndim=ndim)
    a = inverse(counts.to(torch.complex64), ndim)
    modulus = a.abs()
    w = _log_range(_per_pattern_max(modulus, ndim))
    unit = a / modulus.clamp_min(torch.finfo(modulus.dtype).tiny)
    return w, w * unit.real, w * unit.imag


PRECISIONS = ("auto", "fp32", "bf16")


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype a network's layers run in for inference on ``device``.

    ``"auto"`` picks bfloat16 where the hardware computes it natively, float32 elsewhere: a
    CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16 (oneDNN's bf16 convolutions, several
    times faster than float32 on such a Xeon, with support and phase unchanged within the
    spread of held-out crystals: ``benchmarks/results/networks.md``). Without native support
    bf16 is emulated and slower, so "auto" keeps float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        native = (getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
                  or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
        return torch.bfloat16 if native else torch.float32
    return torch.float32


def phase_from_unit(p: torch.Tensor) -> torch.Tensor:
    """Map a [0, 1] output to a phase in [-pi, pi] (CDI NN, 3D-CDI-NN)."""
    return (p - 0.5) * (2 * math.pi)
