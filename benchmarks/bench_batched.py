"""Throughput of 8 starts in one batch vs 8 sequential single-start runs (issue 2).

Same pattern, same recipe, same process; the two variants alternate and the measurement is
repeated. Throughput ratio = (time of 8 sequential runs) / (time of one 8-start batch); > 1
means batching pays.
"""

from __future__ import annotations

from common import PATTERN_SEED, crystal_and_pattern, log, median, spread, table, timed

from cdinn.retrieval import DEFAULT_RECIPE, phase_retrieval

TITLE = "Batched starts: 8 starts in one batch vs 8 sequential runs (64³, CPU)"
ORDER = 40
STARTS = 8


def main(quick: bool = False) -> str:
    _, pattern = crystal_and_pattern(PATTERN_SEED)
    recipe = "AVG**5 * ER**20 * (SUP * ER**5 * HIO**20)**2" if quick else DEFAULT_RECIPE
    reps = 1 if quick else 2
    phase_retrieval(pattern, "ER**5", starts=STARTS, progress=False)  # warm-up
    seq, bat, ratio = [], [], []
    for rep in range(reps):
        # alternate which variant goes first
        order = ("batch", "sequential") if rep % 2 else ("sequential", "batch")
        t = {}
        for variant in order:
            if variant == "batch":
                t[variant], _ = timed(lambda: phase_retrieval(pattern, recipe, starts=STARTS, batch=STARTS, seed=rep, progress=False))
            else:
                t[variant], _ = timed(lambda: [phase_retrieval(pattern, recipe, starts=1, seed=100 * rep + k, progress=False)
                                               for k in range(STARTS)])
        seq.append(t["sequential"])
        bat.append(t["batch"])
        ratio.append(t["sequential"] / t["batch"])
        log(f"rep {rep}: 8 sequential {t['sequential']:.1f} s, one batch of 8 {t['batch']:.1f} s, ratio {ratio[-1]:.2f}")
    return "\n".join([
        f"Pattern: faceted crystal seed {PATTERN_SEED}, 64³; recipe `{recipe}`; {reps} repeat(s), variants "
        "alternating; median (min–max).",
        "",
        table(["variant", "wall time", "per start and iteration"], [
            [f"{STARTS} sequential runs, `starts=1`", spread(seq, "{:.1f}") + " s", f"{median(seq) / STARTS / 600 * 1e3:.2f} ms" if not quick else "—"],
            [f"one run, `starts={STARTS}` (one batch)", spread(bat, "{:.1f}") + " s", f"{median(bat) / STARTS / 600 * 1e3:.2f} ms" if not quick else "—"],
        ]),
        "",
        f"**Throughput of the batch / sequential: {spread(ratio, '{:.2f}')}×.**",
    ])


if __name__ == "__main__":
    print(main(quick=True))
