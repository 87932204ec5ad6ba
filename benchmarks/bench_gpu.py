"""The GPU path (issue 14): CUDA-graph replay of projection blocks, and stacks on a GPU.

Runs only where CUDA is present (elsewhere ``run.py`` skips it and keeps the stored figures).

- **Per iteration at 64³**: ``ER**200`` and ``HIO**200`` from one start, the fixed costs of a
  10-iteration run subtracted, replayed from CUDA graphs (the default) and launched op by op
  (``CDINN_CUDA_GRAPHS=0``), against the cuFFT pair (fftn + ifftn, complex64) in the same
  process. Target ≤ 2× the pair with graphs.
- **PR-600**: ``cdinn phase``'s default recipe on one held-out crystal, both ways.
- **Stacks**: ``phase_stack`` (PR-600, one start per pattern) of the 64 patterns below, in
  batches and one at a time; ``invert_stack`` of 64 held-out patterns (network + default refinement; on a
  GPU each network call's patterns are refined as one batch) against PR-600 per pattern:
  patterns per second, and the same stack refined pattern by pattern. Target ≥ 10× PR-600's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import HELD_OUT_SEEDS, held_out_case, log, median, table

from cdinn.models import load_model
from cdinn.pipeline import invert_stack
from cdinn.retrieval import DEFAULT_RECIPE, graphs, phase_retrieval, phase_stack

TITLE = "The GPU path: CUDA graphs and stacks"
ORDER = 15
RESULTS = "gpu"
MODEL = "autophasenn-64"


def available() -> str | None:
    """Why this section cannot run here (``None`` when it can)."""
    return None if torch.cuda.is_available() else "no CUDA device"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device: torch.device, repeats: int = 3) -> float:
    """Median wall seconds of ``fn()`` (synchronised before and after)."""
    out = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return median(out)


def _fft_pair(device: torch.device, pairs: int = 200) -> float:
    x = torch.randn((1, 64, 64, 64), dtype=torch.complex64, device=device)
    dims = (-3, -2, -1)

    def run() -> None:
        for _ in range(pairs):
            torch.fft.ifftn(torch.fft.fftn(x, dim=dims, norm="ortho"), dim=dims, norm="ortho")

    run()
    return _seconds(run, device) / pairs


def _with_graphs(on: bool, fn):
    """``fn()`` with CUDA-graph replay switched on or off."""
    enabled = graphs.enabled
    graphs.enabled = enabled if on else (lambda x: False)
    try:
        return fn()
    finally:
        graphs.enabled = enabled


def _per_iteration(pattern: np.ndarray, alg: str, device: torch.device, on: bool, iters: int = 200) -> float:
    def run(n: int):
        return phase_retrieval(pattern, f"{alg}**{n}", starts=1, seed=0, progress=False, device=device)

    _with_graphs(on, lambda: run(iters))  # warm-up: plans, allocator
    t_short = _with_graphs(on, lambda: _seconds(lambda: run(10), device))
    t_long = _with_graphs(on, lambda: _seconds(lambda: run(iters), device))
    return (t_long - t_short) / (iters - 10)


def measure(device: torch.device, quick: bool) -> str:
    """The section's figures on ``device`` (a CPU run exercises the code, not the GPU)."""
    _, pattern, _ = held_out_case(HELD_OUT_SEEDS[0])
    pair = _fft_pair(device)
    rows, ratios = [], {}
    for alg in ("ER", "HIO"):
        plain = _per_iteration(pattern, alg, device, False, 50 if quick else 200)
        replayed = _per_iteration(pattern, alg, device, True, 50 if quick else 200)
        ratios[alg] = replayed / pair
        rows.append([alg, f"{plain * 1e3:.3f} ms ({plain / pair:.2f}×)", f"{replayed * 1e3:.3f} ms ({replayed / pair:.2f}×)"])
        log(f"gpu {alg}: plain {plain * 1e3:.3f} ms, graphs {replayed * 1e3:.3f} ms, pair {pair * 1e3:.3f} ms")

    def pr600():
        return phase_retrieval(pattern, DEFAULT_RECIPE, starts=1, seed=0, progress=False, device=device)

    _with_graphs(True, pr600)
    t_plain = _with_graphs(False, lambda: _seconds(pr600, device))
    t_graphs = _with_graphs(True, lambda: _seconds(pr600, device))

    n = 8 if quick else 64
    # 64 patterns from the 50 held-out crystals: the first 14 twice
    stack = np.stack([held_out_case(HELD_OUT_SEEDS[i % len(HELD_OUT_SEEDS)])[1] for i in range(n)])
    model = load_model(MODEL, device=device)
    done: list = []

    def inverted(patterns: np.ndarray, batched: bool = True) -> None:
        done[:] = [r for _, r in invert_stack(patterns, None, model, device=device, batch_refine=batched)]

    t_phase_batched = _seconds(lambda: list(phase_stack(stack, DEFAULT_RECIPE, device=device, seed=0)), device, repeats=1)
    t_phase_single = _seconds(lambda: list(phase_stack(stack, DEFAULT_RECIPE, device=device, seed=0, batch=1)), device,
                              repeats=1)
    inverted(stack[:2])  # warm-up: the network's kernels, plans, records
    t_one_by_one = _seconds(lambda: inverted(stack, False), device, repeats=1)
    t_stack = _seconds(lambda: inverted(stack), device, repeats=1)
    errors = [r for r in done if isinstance(r, Exception)]
    rate, pr_rate = n / t_stack, 1.0 / t_graphs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return "\n\n".join([
        f"Device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}. 64³ held-out crystal "
        f"(seed {HELD_OUT_SEEDS[0]}), one start; cuFFT pair (fftn + ifftn, complex64, 64³) {pair * 1e3:.3f} ms.",
        table(["algorithm", "op by op (× cuFFT pair)", "CUDA graphs (× cuFFT pair)"], rows),
        f"Target ≤ 2× the cuFFT pair with graphs: ER {ratios['ER']:.2f}×, HIO {ratios['HIO']:.2f}× "
        f"({'met' if max(ratios.values()) <= 2 else 'missed'}). PR-600 (`{DEFAULT_RECIPE}`): "
        f"{t_plain:.3f} s op by op, {t_graphs:.3f} s with graphs ({t_plain / t_graphs:.1f}× faster).",
        f"`invert_stack` of {n} held-out patterns (`{MODEL}`, default refinement, retries included): {t_stack:.2f} s, "
        f"{rate:.1f} patterns/s against PR-600's {pr_rate:.2f}/s: **{rate / pr_rate:.1f}×** (target ≥ 10×)"
        f"{f'; {len(errors)} failed' if errors else ''}. Refined pattern by pattern instead of in batches: "
        f"{t_one_by_one:.2f} s ({t_one_by_one / t_stack:.1f}× the batched time). `phase_stack` (PR-600, one start "
        f"each) of the same {n}: {t_phase_batched:.2f} s in batches, {t_phase_single:.2f} s one at a time "
        f"({t_phase_single / t_phase_batched:.1f}×).",
    ])


def main(quick: bool = False) -> str:
    return measure(torch.device("cuda"), quick)
