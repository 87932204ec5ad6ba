"""CUDA graphs of projection blocks: GPU iterations without kernel-launch overhead.

One iteration is two FFTs and a dozen small element-wise kernels. On a GPU at 64³ the
launches, not the work, set the pace (measured once on an H100: an iteration cost 5.5× its
two FFTs). A block such as ``HIO**80`` repeats one iteration on the same tensors, which is what
a CUDA graph replays: :class:`Graphs` records :data:`GRAPH_ITERATIONS` iterations of an
algorithm once per state, on the state's own object tensor and a static copy of its support,
and replays the record; the chi² of each recorded iteration lands in a static ``(k, B)`` tensor
that is copied to the history after every replay. A shrink-wrap between blocks copies its new
support into the static one, so the records serve the whole recipe.

The first block of an algorithm runs its first iterations eagerly (at least one: cuFFT plans
and the projector's buffers are made before capture, where allocations are not allowed) and
the rest as replays; iterations that do not fill a replay run eagerly. Elsewhere than on CUDA
the record is the Python function itself: the tests run this whole path on the CPU and hold it
to the plain loop, and only the capture is left to a GPU. A capture that fails sends the rest
of the state's iterations through the plain loop, with one warning. ``CDINN_CUDA_GRAPHS=0``
turns graphs off.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from cdinn.retrieval.projections import FourierProjector, Support

if TYPE_CHECKING:
    from cdinn.retrieval.state import State

GRAPH_ITERATIONS = 10
"""Iterations per record: enough that one replay's launch is negligible, few enough that a
block's leftover eager iterations are few."""

ENV = "CDINN_CUDA_GRAPHS"

Algorithm = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def enabled(x: torch.Tensor) -> bool:
    """Whether blocks iterating on ``x`` are replayed from CUDA graphs: on CUDA, unless
    ``CDINN_CUDA_GRAPHS=0``."""
    return x.is_cuda and os.environ.get(ENV, "1") != "0"


class Record:
    """``body`` recorded once and replayed: a CUDA graph on a GPU; elsewhere ``body`` itself,
    called at each replay (the stand-in under which the CPU tests run everything but capture)."""

    def __init__(self, body: Callable[[], None], device: torch.device, pool: Any = None):
        self.body = body
        self.graph: torch.cuda.CUDAGraph | None = None
        if device.type == "cuda":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                body()
            self.graph = graph

    def replay(self) -> None:
        if self.graph is None:
            self.body()
        else:
            self.graph.replay()

    def pool(self) -> Any:
        """The memory pool of the captured graph (``None`` for the stand-in)."""
        return None if self.graph is None else self.graph.pool()


class Graphs:
    """The records of one state: static support, chi² buffers and one record per algorithm.

    Every record iterates on one object tensor, the state's ``x`` when the first record was
    made; a block that finds another tensor in ``state.x`` (after AD or a network step) copies
    it in. The records share one memory pool: they are replayed one at a time and leave
    nothing in it that the next one could overwrite (chi² and the object are outside it).
    """

    def __init__(self, state: State):
        self.x = state.x
        self.support = Support(state.support.mask.contiguous())
        self.records: dict[str, tuple[Record, torch.Tensor]] = {}
        self.failed = False
        self._pool: Any = None

    def load(self, state: State) -> None:
        """Bring the state's object and support into the tensors the records iterate on."""
        if state.x is not self.x:
            self.x.copy_(state.x)
            state.x = self.x
        if state.support is not self.support:
            self.support.inside.copy_(state.support.inside)
            self.support.outside.copy_(state.support.outside)
            state.support = self.support

    def record(self, key: str, algorithm: Algorithm, projector: FourierProjector,
               params: dict[str, float]) -> tuple[Record, torch.Tensor] | None:
        """The record of ``key`` (made now if new) and its chi² buffer; ``None`` when a capture
        failed (this one or an earlier one: then none is tried again)."""
        if self.failed or key in self.records:
            return self.records.get(key)
        chi2 = torch.empty((GRAPH_ITERATIONS, self.x.shape[0]), dtype=torch.float32, device=self.x.device)

        def body() -> None:
            for i in range(GRAPH_ITERATIONS):
                out, value = algorithm(self.x, projector, self.support, **params)
                if out is not self.x:  # every algorithm updates its iterate in place
                    raise RuntimeError(f"{key} returned a new tensor: it cannot be replayed")
                chi2[i].copy_(value)

        try:
            made = Record(body, self.x.device, self._pool)
        except RuntimeError as exc:
            warnings.warn(f"CUDA graph capture of {key} failed ({exc}); iterating without graphs", RuntimeWarning,
                          stacklevel=2)
            self.failed = True
            return None
        self._pool = self._pool or made.pool()
        self.records[key] = (made, chi2)
        return self.records[key]


def iterate(state: State, algorithm: Algorithm, key: str, params: dict[str, float], count: int) -> None:
    """``count`` iterations of ``algorithm`` on ``state``, as replays of its record where they fill one.

    The history gets one chi² per iteration, as the plain loop gives it.
    """
    graphs: Graphs = state.graphs if state.graphs is not None else Graphs(state)
    state.graphs = graphs
    made = graphs.failed or key in graphs.records
    # a new record needs at least one eager iteration first (plans and buffers made outside capture)
    eager = count if count <= GRAPH_ITERATIONS else (count % GRAPH_ITERATIONS if made else
                                                     (count - 1) % GRAPH_ITERATIONS + 1)
    project = state.measurement.projector
    rows = state.new_history(count)
    for i in range(eager):
        state.x, rows[i] = algorithm(state.x, project, state.support, **params)
    replays = (count - eager) // GRAPH_ITERATIONS
    if not replays:
        return
    graphs.load(state)
    found = graphs.record(key, algorithm, project, params)
    if found is None:
        for i in range(eager, count):
            state.x, rows[i] = algorithm(state.x, project, state.support, **params)
        return
    record, chi2 = found
    for r in range(replays):
        record.replay()
        rows[eager + r * GRAPH_ITERATIONS: eager + (r + 1) * GRAPH_ITERATIONS] = chi2
