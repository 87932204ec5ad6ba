"""Per-iteration cost of the phase-retrieval engine against the FFT floor (issues 2 and 14).

64³ simulated strained crystal with Poisson noise (1e9 photons), default recipe (600
iterations), one start, CPU. The floor is one forward + one inverse 64³ complex64 FFT
(torch.fft, norm='ortho'), timed with preallocated ``out=`` buffers and without, in the same
process, interleaved with the reconstructions. Then ER and HIO at 128³ against the fastest
128³ pair, and each algorithm through the fused CPU loops and through the torch operations
that CUDA runs (:mod:`cdinn.retrieval.kernels`).
"""

from __future__ import annotations

from common import (
    PATTERN_SEED,
    crystal_and_pattern,
    fft_pair_time,
    log,
    median,
    ms,
    score,
    spread,
    table,
    timed,
)

import torch

from cdinn.retrieval import DEFAULT_RECIPE, kernels, phase_retrieval

TITLE = "Per-iteration cost vs the FFT floor (64³ and 128³, one start, CPU)"
ORDER = 10
TARGET = 1.3  # issue 14: per iteration, against the fastest FFT pair on the same threads
ALGORITHMS = ("ER", "HIO", "RAAR", "DM")


def _run(pattern, recipe, seed):
    return timed(lambda: phase_retrieval(pattern, recipe, starts=1, seed=seed, progress=False))


def _per_iteration(pattern, alg: str, iters: int, seed: int, fused: bool = True) -> float:
    """Seconds per iteration of ``ALG**iters``, the fixed costs of a 1-iteration run subtracted."""
    applies = kernels.applies
    if not fused:
        kernels.applies = lambda *tensors: False
    try:
        t_one, _ = _run(pattern, alg, seed)
        t, _ = _run(pattern, f"{alg}**{iters}", seed)
    finally:
        kernels.applies = applies
    return (t - t_one) / (iters - 1)


def _fastest_pair(shape) -> float:
    return min(fft_pair_time(shape, pairs=10 if shape[-1] > 64 else 50, use_out=u) for u in (True, False))


def main(quick: bool = False) -> str:
    truth, pattern = crystal_and_pattern(PATTERN_SEED)
    reps = 2 if quick else 7
    alg_iters = 50 if quick else 200
    _run(pattern, "ER**5", 0)  # warm-up: FFT plans, allocator

    # --- whole default recipe -------------------------------------------------------------
    rows = {k: [] for k in ("out", "alloc", "per_it", "loop_it", "ratio_out", "ratio_alloc", "ratio_loop", "ratio_fastest")}
    chi2s, scores = [], []
    n_iter = 600
    for rep in range(reps):
        f_out = [fft_pair_time(use_out=True)]
        f_alloc = [fft_pair_time(use_out=False)]
        t_full, res = _run(pattern, DEFAULT_RECIPE, seed=rep)
        t_one, _ = _run(pattern, "ER", seed=rep)  # everything outside the loop (setup, centring, chi²)
        f_alloc.append(fft_pair_time(use_out=False))
        f_out.append(fft_pair_time(use_out=True))
        n_iter = res.provenance["iterations"]
        per_it = t_full / n_iter
        loop_it = (t_full - t_one) / (n_iter - 1)
        out, alloc = median(f_out), median(f_alloc)
        for key, val in (("out", out), ("alloc", alloc), ("per_it", per_it), ("loop_it", loop_it),
                         ("ratio_out", per_it / out), ("ratio_alloc", per_it / alloc), ("ratio_loop", loop_it / out),
                         ("ratio_fastest", per_it / min(out, alloc))):
            rows[key].append(val)
        chi2s.append(res.chi2)
        scores.append(score(res.object, truth))
        log(f"rep {rep}: {ms(per_it)}/it, FFT pair {ms(out)} (out=) {ms(alloc)} (alloc): ratio {per_it / out:.2f}")

    # The honest floor is the fastest FFT pair torch offers on these threads (issue 14).
    ratio = median(rows["ratio_fastest"])
    verdict = "meets" if ratio <= TARGET else "misses"
    md = [
        f"Pattern: faceted crystal seed {PATTERN_SEED}, 64³, Poisson noise 1e9 photons; recipe "
        f"`{DEFAULT_RECIPE}` ({n_iter} iterations), 1 start, `phase_retrieval(..., device='cpu')`. "
        f"{reps} repeats; each repeat times FFT pairs, the reconstruction, a 1-iteration run (fixed "
        "costs), FFT pairs again. Median (min–max) over repeats; ratios are taken within each repeat.",
        "",
        table(
            ["quantity", "value"],
            [
                ["FFT floor: fftn + ifftn 64³ c64, `out=` buffers", spread([x * 1e3 for x in rows["out"]], "{:.2f}") + " ms"],
                ["FFT floor: fftn + ifftn 64³ c64, allocating", spread([x * 1e3 for x in rows["alloc"]], "{:.2f}") + " ms"],
                ["default recipe, whole call / iterations", spread([x * 1e3 for x in rows["per_it"]], "{:.2f}") + " ms"],
                ["default recipe, loop only ((t₆₀₀ − t₁)/599)", spread([x * 1e3 for x in rows["loop_it"]], "{:.2f}") + " ms"],
                ["**ratio whole call / fastest FFT pair (either variant)**", f"**{spread(rows['ratio_fastest'], '{:.2f}')}**"],
                ["ratio whole call / FFT floor (`out=`)", spread(rows["ratio_out"], "{:.2f}")],
                ["ratio whole call / FFT floor (allocating)", spread(rows["ratio_alloc"], "{:.2f}")],
                ["ratio loop only / FFT floor (`out=`)", spread(rows["ratio_loop"], "{:.2f}")],
                ["final chi² of the runs", spread(chi2s, "{:.2e}")],
                ["amplitude SSIM / phase error (rad) vs truth",
                 f"{median([s['ssim'] for s in scores]):.3f} / {median([s['phase_error'] for s in scores]):.3f} (medians)"],
            ],
        ),
        "",
        f"Target ≤ {TARGET}× the fastest FFT pair (issue 14; issue 2 asked ≤ 1.5× the `out=` pair): **{verdict}** "
        f"({ratio:.2f}×, median; {torch.get_num_threads()} threads).",
    ]

    # --- per algorithm: fused loops vs the torch operations -----------------------------------
    per = {(a, f): [] for a in ALGORITHMS for f in (True, False)}
    per_ratio = {k: [] for k in per}
    for rep in range(max(2, reps // 2)):
        floor = [_fastest_pair((1,) + tuple(pattern.shape))]
        times = {(a, f): _per_iteration(pattern, a, alg_iters, rep, f) for a in ALGORITHMS for f in (True, False)}
        floor.append(_fastest_pair((1,) + tuple(pattern.shape)))
        for k, t in times.items():
            per[k].append(t)
            per_ratio[k].append(t / median(floor))
        log(f"per-algorithm rep {rep}: " + ", ".join(f"{a} {ms(times[a, True])} (torch ops {ms(times[a, False])})" for a in ALGORITHMS))
    md += [
        "",
        f"Per algorithm at 64³ (`phase_retrieval(pattern, 'ALG**{alg_iters}')`, default β, fixed costs of a "
        "1-iteration run subtracted; same process, interleaved with the fastest FFT pair), through the fused CPU "
        "loops (the default on a CPU) and through the torch operations (what CUDA runs; forced here):",
        "",
        table(
            ["algorithm", "fused: ms / iteration", "fused: × fastest FFT pair", "torch ops: ms / iteration", "torch ops: × fastest FFT pair"],
            [[a, spread([x * 1e3 for x in per[a, True]], "{:.2f}"), spread(per_ratio[a, True], "{:.2f}"),
              spread([x * 1e3 for x in per[a, False]], "{:.2f}"), spread(per_ratio[a, False], "{:.2f}")] for a in ALGORITHMS],
        ),
    ]

    # --- 128³ ---------------------------------------------------------------------------------
    _, big = crystal_and_pattern(PATTERN_SEED, shape=(128, 128, 128))
    big_iters = 10 if quick else 40
    big_rows = {a: [] for a in ("ER", "HIO")}
    big_floor = []
    for rep in range(2 if quick else 3):
        floor = [_fastest_pair((1, 128, 128, 128))]
        times = {a: _per_iteration(big, a, big_iters, rep) for a in big_rows}
        floor.append(_fastest_pair((1, 128, 128, 128)))
        big_floor.append(median(floor))
        for a, t in times.items():
            big_rows[a].append(t / median(floor))
        log(f"128³ rep {rep}: " + ", ".join(f"{a} {ms(t)}" for a, t in times.items()) + f", FFT pair {ms(median(floor))}")
    big_ratio = max(median(v) for v in big_rows.values())
    md += [
        "",
        f"At 128³ (faceted crystal seed {PATTERN_SEED}, `ALG**{big_iters}` minus a 1-iteration run, "
        f"{len(big_floor)} repeats): fastest FFT pair {spread([x * 1e3 for x in big_floor], '{:.1f}')} ms; "
        + "; ".join(f"{a} {spread(v, '{:.2f}')}× that pair" for a, v in big_rows.items())
        + f" (target ≤ {TARGET}×: **{'meets' if big_ratio <= TARGET else 'misses'}**, {big_ratio:.2f}× the slower of the two).",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    print(main(quick=True))
