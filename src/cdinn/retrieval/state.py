"""The state of a reconstruction, and the operators that map a state to a state.

One :class:`Measurement` is built per pattern (the only conversion of the user's array to a
device tensor); a :class:`State` holds it with the current objects (a batch of starts), their
support, the chi² history and the per-block stages. Every step of a recipe is an operator on
the state, in one algebra (PyNX's): the projection algorithms ER, HIO, RAAR, DM and AVG, the
support update SUP, automatic-differentiation steps AD, and the network operators TL
(per-pattern fine-tuning of a trained network) and DIP (an untrained network), which the
state reaches through its ``network`` (built by :mod:`cdinn.pipeline`, which knows the models).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from cdinn.errors import InputError
from cdinn.physics.fourier import as_tensor, from_native, match_norm, to_native
from cdinn.physics.metrics import chi2_amplitude
from cdinn.physics.noise import noise_floor_chi2, noise_floors
from cdinn.physics.support import shrink_wrap
from cdinn.retrieval import graphs
from cdinn.retrieval.algorithms import ALGORITHMS
from cdinn.retrieval.projections import FourierProjector, Support
from cdinn.retrieval.recipe import ITERATING, Step


class Measurement:
    """One measured pattern on its device: intensity, mask and the Fourier projector, built once.

    Parameters
    ----------
    intensity : array ``(*spatial)``, 2D or 3D, zero frequency at the centre
    mask : array, optional; non-zero where a pixel was not measured
    device : torch device

    :meth:`stacked` joins the measurements of N patterns of one shape into one, whose state
    iterates N objects, item ``i`` against pattern ``i`` (a stack iterated as one batch).
    """

    def __init__(self, intensity: Any, mask: Any = None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.intensity = as_tensor(intensity, self.device).to(torch.float32)
        self.patterns: int | None = None  # N for a stacked measurement
        if self.intensity.ndim not in (2, 3):
            raise InputError(f"expected a 2D or 3D pattern, got shape {tuple(self.intensity.shape)}")
        self.mask = None if mask is None else (as_tensor(mask, self.device) != 0)
        if self.mask is not None and tuple(self.mask.shape) != self.shape:
            raise InputError(f"mask shape {tuple(self.mask.shape)} does not match the pattern shape {self.shape}")

    @classmethod
    def stacked(cls, measurements: Sequence[Measurement]) -> Measurement:
        """One measurement of N patterns of one shape and device (intensity and mask ``(N, *spatial)``)."""
        first = measurements[0]
        if any(m.shape != first.shape or m.device != first.device or m.patterns for m in measurements):
            raise ValueError("stacked measurements must be single patterns of one shape, on one device")
        out = cls.__new__(cls)
        out.device, out.patterns = first.device, len(measurements)
        out.intensity = torch.stack([m.intensity for m in measurements])
        out.mask = None if all(m.mask is None for m in measurements) else torch.stack(
            [torch.zeros(first.shape, dtype=torch.bool, device=first.device) if m.mask is None else m.mask
             for m in measurements])
        return out

    @functools.cached_property
    def projector(self) -> FourierProjector:
        """The Fourier projector of this pattern (FFT-native layout), built when first needed:
        a network-only inversion never iterates."""
        measured = None if self.mask is None else to_native(~self.mask, self.ndim)
        return FourierProjector(to_native(self.intensity.clamp_min(0).sqrt(), self.ndim), measured, self.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape of the pattern (of each pattern, when stacked)."""
        return tuple(self.intensity.shape[-self.ndim:])

    @property
    def ndim(self) -> int:
        return self.intensity.ndim - (self.patterns is not None)

    def chi2(self, obj: torch.Tensor) -> torch.Tensor:
        """chi² of centred objects ``(B, *spatial)`` against the measurement, per object."""
        return self.projector.chi2(to_native(obj.to(torch.complex64), self.ndim))

    @functools.cached_property
    def noise_floor(self) -> float | None:
        """The chi² counting noise alone gives the true object (:func:`noise_floor_chi2`; None
        when the pattern is not photon counts), computed once per measurement of one pattern."""
        if self.patterns is not None:
            raise ValueError("a stacked measurement has a floor per pattern: Measurement.floors")
        return noise_floor_chi2(self.intensity, self.mask)

    @functools.cached_property
    def floors(self) -> list[float | None]:
        """The counting-noise floor of each pattern (one item unless stacked), computed once."""
        if self.patterns is None:
            return [self.noise_floor]
        return noise_floors(self.intensity, self.mask, ndim=self.ndim)


class NetworkOperator(Protocol):
    """What TL and DIP need: a network that can be tuned on the state's measurement."""

    def refine(self, state: State, step: Step, count: int) -> None: ...


@dataclass
class State:
    """Current objects (FFT-native layout, ``(B, *spatial)``), support, history and stages."""

    measurement: Measurement
    x: torch.Tensor
    support: Support
    network: NetworkOperator | None = None
    history: list[torch.Tensor] = field(default_factory=list)  # chi² rows (iterations, B), block by block
    stages: list[dict[str, Any]] = field(default_factory=list)
    average: torch.Tensor | None = None
    n_average: int = 0
    reference: torch.Tensor | None = None
    graphs: graphs.Graphs | None = None

    @classmethod
    def from_object(cls, measurement: Measurement, obj: torch.Tensor, support: torch.Tensor,
                    network: NetworkOperator | None = None) -> State:
        """A state from centred objects ``(B, *spatial)`` (or one object) and their support, scaled to the measured norm."""
        ndim = measurement.ndim
        obj = obj.to(measurement.device, torch.complex64)
        support = support.to(measurement.device, torch.bool)
        if obj.ndim == ndim:
            obj, support = obj.unsqueeze(0), support.unsqueeze(0)
        if measurement.patterns is not None and obj.shape[0] != measurement.patterns:
            raise InputError(f"{obj.shape[0]} objects for a measurement of {measurement.patterns} patterns")
        if tuple(obj.shape[1:]) != measurement.shape or tuple(support.shape[-ndim:]) != measurement.shape:
            raise InputError(f"object {tuple(obj.shape[1:])} / support {tuple(support.shape[-ndim:])} must match the pattern {measurement.shape}")
        # Parseval: the object's norm must match the measured amplitude's norm.
        x = match_norm(to_native(obj, ndim), measurement.projector.norm2, ndim)  # to_native returns a new tensor
        sup = to_native(support, ndim).expand(x.shape)
        return cls(measurement, x, Support(sup), network)

    @property
    def ndim(self) -> int:
        return self.measurement.ndim

    def final(self) -> torch.Tensor:
        """The result of the schedule so far (native layout): the AVG average if any, else ``x`` in the support."""
        return self.average / self.n_average if self.average is not None else self.x * self.support.inside

    def objects(self) -> torch.Tensor:
        """Centred final objects ``(B, *spatial)``."""
        return from_native(self.final(), self.ndim)

    def supports(self) -> torch.Tensor:
        """Centred boolean supports ``(B, *spatial)``."""
        return from_native(self.support.mask, self.ndim)

    def chi2(self) -> torch.Tensor:
        """chi² of the final objects, per start."""
        return self.measurement.projector.chi2(self.final())

    def chi2_history(self) -> np.ndarray:
        """chi² after every iterating step, ``(iterations, starts)``."""
        if not self.history:
            return np.zeros((0, self.x.shape[0]), dtype=np.float32)
        return torch.cat(self.history).cpu().numpy().astype(np.float32)

    def new_history(self, count: int) -> torch.Tensor:
        """A block's chi² rows ``(count, starts)``, appended to the history and filled as it runs.

        One buffer per block, not a tensor per iteration: a small tensor kept alive after each
        iteration sits in the heap between the FFTs' multi-megabyte buffers, which then cannot
        be reused in place, and every iteration page-faults fresh ones (64³ on 2 cores: 1.2 ms
        per ER iteration without the small tensors, 1.8-2.2 ms keeping them).
        """
        rows = torch.empty((count, self.x.shape[0]), dtype=torch.float32, device=self.x.device)
        self.history.append(rows)
        return rows


def block_length(steps: Sequence[Step], i: int) -> int:
    """How many steps from ``steps[i]`` repeat it: ``AD**10`` is one block of 10 steps, so an
    optimiser (AD, TL, DIP) keeps its state within a block; a BREAK stands alone."""
    n = 1
    while steps[i].name != "BREAK" and i + n < len(steps) and steps[i + n] == steps[i]:
        n += 1
    return n


def blocks(steps: Sequence[Step]) -> list[tuple[Step, int]]:
    """Consecutive repeats of one step as ``(step, count)`` (:func:`block_length`)."""
    out: list[tuple[Step, int]] = []
    i = 0
    while i < len(steps):
        out.append((steps[i], block_length(steps, i)))
        i += out[-1][1]
    return out


def _project(state: State, step: Step, count: int) -> None:
    algorithm = ALGORITHMS[step.name]
    if step.name != "AVG" and graphs.enabled(state.x):  # AVG's running average stays outside the record
        graphs.iterate(state, algorithm, str(step), step.params, count)
        return
    shape = (-1,) + (1,) * state.ndim
    rows = state.new_history(count)
    for i in range(count):
        state.x, rows[i] = algorithm(state.x, state.measurement.projector, state.support, **step.params)
        if step.name == "AVG":
            # Phase-align to the first averaged iterate so the global phase cannot wash out.
            if state.reference is None:
                state.reference = state.x.clone()
            # <reference, x> per start as a BLAS dot product: a product then a sum wrote and
            # re-read a full temporary (10 AVG iterations after ER at 64³: 31 -> 25 ms)
            overlap = torch.stack([torch.vdot(r.flatten(), v.flatten()) for r, v in zip(state.reference, state.x)])
            turn = torch.exp(-1j * torch.angle(overlap)).reshape(shape)
            if state.average is None:
                state.average = state.x * turn
            else:  # in place: a new multi-megabyte sum per iteration is a fresh allocation each time
                state.average.addcmul_(state.x, turn)
            state.n_average += 1


def _shrink_wrap(state: State, step: Step, count: int) -> None:
    for _ in range(count):
        state.support = Support(shrink_wrap(state.x, step.params["sigma"], step.params["threshold"], state.ndim))


def _autodiff(state: State, step: Step, count: int) -> None:
    """Adam on the object's values inside the support, minimising the masked amplitude chi².

    The object is optimised in units of its mean amplitude in the support, so the learning
    rate means the same for any photon count (3D-CDI-NN's refinement).
    """
    project = state.measurement.projector
    dims = tuple(range(-state.ndim, 0))
    inside = state.support.inside
    x = state.x * inside
    count_in = inside.sum(dim=dims, keepdim=True).clamp_min(1.0)
    scale = (x.abs().sum(dim=dims, keepdim=True) / count_in).clamp_min(1e-30)
    params = torch.view_as_real((x / scale).contiguous()).clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=step.params["lr"])
    rows = state.new_history(count)
    with torch.enable_grad():
        for i in range(count):
            obj = torch.view_as_complex(params) * scale * inside
            calc = torch.fft.fftn(obj, dim=dims, norm="ortho").abs()
            chi2 = chi2_amplitude(calc, project.amplitude, project.weight, state.ndim)
            opt.zero_grad(set_to_none=True)
            chi2.sum().backward()
            opt.step()
            rows[i] = chi2.detach()
    with torch.no_grad():
        state.x = (torch.view_as_complex(params.detach()) * scale * inside).contiguous()


def converged(state: State, chi2: torch.Tensor, below: float) -> bool:
    """Whether every object's ``chi2`` is at most ``below`` times its pattern's counting-noise
    floor (all starts of one pattern share its floor); never for a pattern without a floor."""
    floors = state.measurement.floors
    if any(f is None for f in floors):
        return False
    limit = torch.tensor(floors, dtype=chi2.dtype, device=chi2.device).repeat_interleave(len(chi2) // len(floors))
    return bool((chi2 <= below * limit).all())


def _network(state: State, step: Step, count: int) -> None:
    if state.network is None:
        raise InputError(f"{step.name} tunes a network: use it in `cdinn invert --refine`, not in `cdinn phase`")
    state.network.refine(state, step, count)


OPERATORS = {"ER": _project, "HIO": _project, "RAAR": _project, "DM": _project, "AVG": _project,
             "SUP": _shrink_wrap, "AD": _autodiff, "TL": _network, "DIP": _network}


def run(state: State, steps: Sequence[Step], progress: bool = False, label: str = "refinement") -> State:
    """Apply a recipe's steps (execution order) to ``state``, block by block.

    Each block appends ``{"stage", "chi2", "seconds"}`` to ``state.stages``; the AVG average
    of a previous block ends when a later block changes the objects. A BREAK that finds every
    object :func:`converged` skips the rest of its group (``"taken": True`` in its stage).
    """
    n_iter = sum(s.name in ITERATING for s in steps)
    # no bar object at all without progress: creating a disabled one cost 0.17 ms per pattern of a stack
    bar = tqdm(total=n_iter * state.x.shape[0], desc=label, unit="it", leave=False) if progress else None
    latest: torch.Tensor | None = None  # chi² of the last iteration, while no other step changed the objects
    i = 0
    with torch.no_grad():
        while i < len(steps):
            step, count = steps[i], block_length(steps, i)
            i += count
            t = time.perf_counter()
            if step.name == "BREAK":
                chi2 = state.chi2() if latest is None else latest
                taken = converged(state, chi2, step.params["below"])
                if taken:
                    if bar is not None:  # the bar ends full at the iterations that ran
                        bar.total -= state.x.shape[0] * sum(s.name in ITERATING for s in steps[i:i + step.skip])
                        bar.refresh()
                    i += step.skip
                state.stages.append({"stage": str(step), "chi2": float(chi2.min()), "taken": taken,
                                     "seconds": time.perf_counter() - t})
                if state.measurement.patterns is not None:
                    state.stages[-1]["chi2_each"] = chi2.tolist()
                continue
            if step.name != "AVG" and step.name != "SUP" and state.average is not None:
                state.average, state.n_average, state.reference = None, 0, None
            OPERATORS[step.name](state, step, count)
            chi2 = state.history[-1][-1] if step.name in ITERATING and state.history else state.chi2()
            latest = chi2 if step.name in ITERATING else None
            state.stages.append({"stage": f"{step}**{count}" if count > 1 else str(step),
                                 "chi2": float(chi2.min()), "seconds": time.perf_counter() - t})
            if state.measurement.patterns is not None:  # N patterns: each result gets its own
                state.stages[-1]["chi2_each"] = chi2.tolist()
            if bar is not None and step.name in ITERATING:
                bar.update(count * state.x.shape[0])
                bar.set_postfix(chi2=f"{float(chi2.min()):.3e}")
    if bar is not None:
        bar.close()
    return state
