"""The networks' differentiable physics: predicted object -> far-field amplitude, masked.

One object carries what a network, a loss or a refinement needs to know about the
measurement (deepinv's ``PhaseRetrieval`` physics in miniature): the forward operator
(:func:`cdinn.physics.fourier.forward` of the object zero-padded to the pattern's shape), the
measured amplitude normalised as the networks see it, and the sensor mask. Training losses,
autodiff refinement, per-pattern fine-tuning and untrained-network retrieval all go through
it, so a beamstop or a detector gap is never fitted as data.
"""

from __future__ import annotations

import torch

from cdinn.physics.fourier import far_field_modulus, pad_to
from cdinn.physics.metrics import chi2_amplitude, pearson


def predicted_object(outputs: dict[str, torch.Tensor], threshold: float | None = None) -> torch.Tensor:
    """Complex object from a network's amplitude and phase maps, optionally cut to amplitude ≥ threshold.

    The threshold is AutoPhaseNN's support layer; the cut is a mask, so gradients reach the
    amplitude inside the support.
    """
    amp, phase = outputs["amplitude"].float(), outputs["phase"].float()
    if threshold is not None:
        amp = amp * (amp.detach() >= threshold)
    return torch.polar(amp, phase)


def normalised_amplitude(intensity: torch.Tensor, ndim: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sqrt(I)`` divided by its maximum over measured pixels, per pattern ``(B, *spatial)``."""
    amp = intensity.float().clamp_min(0).sqrt()
    if mask is not None:
        amp = amp * (~mask.bool())
    peak = amp.flatten(start_dim=amp.ndim - ndim).amax(dim=-1).clamp_min(1e-12)
    return amp / peak.reshape(peak.shape + (1,) * ndim)


class FarField:
    """Measured far-field amplitudes with their mask: the physics a network prediction is judged by.

    Parameters
    ----------
    intensity : tensor ``(B, *spatial)``
        Measured counts.
    mask : tensor, optional
        Non-zero where a pixel was not measured (beamstop, gaps, hot pixels); broadcastable
        to ``intensity``.

    Attributes
    ----------
    amplitude : ``sqrt(I)`` normalised to maximum 1 over measured pixels, per pattern
    weights : 1 on measured pixels, 0 elsewhere (float, same shape as ``amplitude``)
    """

    def __init__(self, intensity: torch.Tensor, mask: torch.Tensor | None = None):
        self.ndim = intensity.ndim - 1
        self.shape = tuple(intensity.shape[1:])
        self.amplitude = normalised_amplitude(intensity, self.ndim, mask)
        self.weights = torch.ones_like(self.amplitude) if mask is None else (~mask.bool()).float().expand_as(self.amplitude)

    def modulus(self, obj: torch.Tensor) -> torch.Tensor:
        """``|F|`` of ``obj`` ``(B, *object)`` zero-padded to the pattern's shape (unscaled)."""
        return far_field_modulus(pad_to(obj, self.shape), self.ndim)

    def predict(self, obj: torch.Tensor) -> torch.Tensor:
        """Far-field amplitude of ``obj``, scaled by least squares onto the measured pixels."""
        calc = self.modulus(obj)
        dims = tuple(range(1, calc.ndim))
        w = self.weights
        scale = (w * calc * self.amplitude).sum(dim=dims) / (w * calc.square()).sum(dim=dims).clamp_min(1e-20)
        return calc * scale.detach().reshape((-1,) + (1,) * self.ndim)

    def l1(self, obj: torch.Tensor) -> torch.Tensor:
        """Mean absolute amplitude misfit over measured pixels, per pattern ``(B,)``."""
        dims = tuple(range(1, self.amplitude.ndim))
        diff = (self.predict(obj) - self.amplitude).abs() * self.weights
        return diff.sum(dim=dims) / self.weights.sum(dim=dims).clamp_min(1.0)

    def chi2(self, modulus: torch.Tensor) -> torch.Tensor:
        """Amplitude chi² of a :meth:`modulus` over measured pixels, per pattern ``(B,)``: the
        project's one chi² (scale-free), differentiable."""
        return chi2_amplitude(modulus, self.amplitude, self.weights, self.ndim)

    def pearson(self, modulus: torch.Tensor) -> torch.Tensor:
        """Pearson correlation of a :meth:`modulus` with the measurement over measured pixels (scale-free)."""
        return pearson(modulus * self.weights, self.amplitude * self.weights, self.ndim)
