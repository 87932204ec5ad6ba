"""Training losses as composable objects. Each takes the network outputs and the batch and
returns a per-sample loss ``(B,)``; the physics comes from :mod:`cdinn.physics.farfield` alone,
and a batch's ``mask`` (non-zero = unmeasured pixel), when present, is honoured."""

from __future__ import annotations

import math

import torch

from cdinn.errors import InputError
from cdinn.physics.alignment import twin
from cdinn.physics.farfield import FarField, predicted_object


class FourierLoss:
    """Unsupervised reciprocal-space L1 loss (AutoPhaseNN's physics layer, 3D-CDI-NN's physics term).

    Parameters
    ----------
    threshold : float or (start, end), optional
        Support threshold on the predicted amplitude; a pair ramps linearly over the epochs
        (the PyTorch AutoPhaseNN port ramps 0.07 -> 0.1).
    """

    name = "fourier"

    def __init__(self, threshold: float | tuple[float, float] | None = None):
        self.schedule = threshold
        self.threshold = threshold[0] if isinstance(threshold, (tuple, list)) else threshold

    def set_epoch(self, epoch: int, total: int) -> None:
        if isinstance(self.schedule, (tuple, list)):
            start, end = self.schedule
            self.threshold = start + (end - start) * min(epoch / max(total - 1, 1), 1.0)

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        physics = FarField(batch["intensity"], batch.get("mask"))
        return physics.l1(predicted_object(outputs, self.threshold))


def _twin_maps(amp: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The one twin (conjugate + inversion through the array centre), split into maps.
    t = twin(torch.polar(amp.float(), phase.float()), amp.ndim - 1)
    return t.abs(), t.angle()


def _wrapped(d: torch.Tensor) -> torch.Tensor:
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


class SupervisedLoss:
    """Real-space loss on amplitude and phase, twin-aware: the minimum over the target and
    its twin image, since both give the same pattern.

    Parameters
    ----------
    kind : "mae" or "bce"
        Per-pixel mean absolute error (3D-CDI-NN) or binary cross-entropy on the amplitude and
        on the phase mapped to [0, 1] (CDI NN).
    phase_weight : float
        Weight of the phase term; the phase is compared inside the target's support only.
    shape_weight : float
        Weight of a boundary-sensitive support term: binary cross-entropy plus soft Dice
        between the predicted amplitude and the target support. An accurate support is what
        refinement needs most from a network, and Dice weighs the boundary voxels that a
        per-voxel error on a mostly empty grid hardly sees. The twin is chosen jointly for
        all terms.
    """

    name = "supervised"

    def __init__(self, kind: str = "mae", phase_weight: float = 1.0, shape_weight: float = 0.0):
        if kind not in ("mae", "bce"):
            raise ValueError(f"unknown supervised loss kind {kind!r}")
        self.kind = kind
        self.phase_weight = phase_weight
        self.shape_weight = shape_weight

    def _one(self, outputs: dict[str, torch.Tensor], amp_t: torch.Tensor, phase_t: torch.Tensor) -> torch.Tensor:
        amp, phase = outputs["amplitude"].float(), outputs["phase"].float()
        inside = (amp_t > 0.5).float()
        dims = tuple(range(1, amp.ndim))
        if self.kind == "bce":
            amp_term = torch.nn.functional.binary_cross_entropy(amp.clamp(1e-6, 1 - 1e-6), amp_t.clamp(0, 1), reduction="none")
            p, pt = phase / (2 * math.pi) + 0.5, phase_t / (2 * math.pi) + 0.5
            ph = torch.nn.functional.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), pt.clamp(0, 1), reduction="none")
        else:
            amp_term = (amp - amp_t).abs()
            # The global phase is not measurable: compare after removing the mean offset inside.
            diff = _wrapped(phase - phase_t)
            shape = (-1,) + (1,) * len(dims)
            offset = torch.atan2((diff.sin() * inside).sum(dim=dims), (diff.cos() * inside).sum(dim=dims))
            ph = _wrapped(diff - offset.reshape(shape)).abs()
        phase_term = (ph * inside).sum(dim=dims) / inside.sum(dim=dims).clamp_min(1.0)
        loss = amp_term.mean(dim=dims) + self.phase_weight * phase_term
        if self.shape_weight:
            bce = torch.nn.functional.binary_cross_entropy(amp.clamp(1e-6, 1 - 1e-6), inside, reduction="none").mean(dim=dims)
            dice = 1 - 2 * (amp * inside).sum(dim=dims) / (amp.sum(dim=dims) + inside.sum(dim=dims)).clamp_min(1e-6)
            loss = loss + self.shape_weight * (bce + dice)
        return loss

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        amp_t, phase_t = batch["amplitude"].float(), batch["phase"].float()
        direct = self._one(outputs, amp_t, phase_t)
        twin = self._one(outputs, *_twin_maps(amp_t, phase_t))
        return torch.minimum(direct, twin)


class TransferLearningLoss:
    """Eq. 6 of the transfer-learning paper: mean of the relative RMS amplitude error, the
    relative RMS phase error, and 1 - Pearson correlation of sqrt(I) in reciprocal space."""

    name = "eq6"

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        amp, phase = outputs["amplitude"].float(), outputs["phase"].float()
        amp_t, phase_t = batch["amplitude"].float(), batch["phase"].float()
        dims = tuple(range(1, amp.ndim))
        rel = lambda a, b: (a - b).square().sum(dim=dims).sqrt() / b.square().sum(dim=dims).sqrt().clamp_min(1e-12)  # noqa: E731
        inside = (amp_t > 0.5).float()
        phase_diff = (_wrapped(phase - phase_t) * inside).square().sum(dim=dims).sqrt()
        phase_err = phase_diff / (phase_t * inside).square().sum(dim=dims).sqrt().clamp_min(1e-6)
        physics = FarField(batch["intensity"], batch.get("mask"))
        corr = physics.pearson(physics.modulus(predicted_object(outputs)))
        return (rel(amp, amp_t) + phase_err + (1.0 - corr)) / 3.0


class CompositeLoss:
    """Weighted sum of losses; reports each part for the metrics log."""

    def __init__(self, parts: list[tuple[float, object]]):
        self.parts = parts

    def set_epoch(self, epoch: int, total: int) -> None:
        for _, loss in self.parts:
            if hasattr(loss, "set_epoch"):
                loss.set_epoch(epoch, total)

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total = 0.0
        report: dict[str, float] = {}
        for weight, loss in self.parts:
            value = loss(outputs, batch).mean()
            report[loss.name] = float(value.detach())
            total = total + weight * value
        return total, report


LOSSES = {"fourier": FourierLoss, "supervised": SupervisedLoss, "eq6": TransferLearningLoss}


def build_loss(spec: list[dict]) -> CompositeLoss:
    """Build a :class:`CompositeLoss` from ``[{"name": ..., "weight": ..., **arguments}]``."""
    parts = []
    for item in spec:
        item = dict(item)
        name = item.pop("name", None)
        try:
            weight = float(item.pop("weight", 1.0))
        except (TypeError, ValueError):
            raise InputError(f"loss {name!r}: weight must be a number") from None
        if name not in LOSSES:
            raise InputError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
        if "threshold" in item and isinstance(item["threshold"], list):
            item["threshold"] = tuple(item["threshold"])
        try:
            parts.append((weight, LOSSES[name](**item)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"loss {name!r}: {exc}") from None
    return CompositeLoss(parts)
