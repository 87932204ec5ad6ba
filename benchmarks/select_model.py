"""Compare candidate 3D models on tuning crystals before shipping one.

    .venv/bin/python benchmarks/select_model.py autophasenn-64 runs/autophasenn_64_acphase_long -n 20

Tuning seeds start at 8000: never the benchmark's held-out 7000-7049 (``common.HELD_OUT_SEEDS``),
so a model chosen here is still judged on crystals it was not chosen on. Both held-out families
(faceted crystals and atomistic gold crystals, ``common``), each complete and with the masks
of the ``masks`` benchmark section: a candidate that gains on complete patterns can lose behind
a beamstop, and a selection without the masked cases missed that once (docs/design.md, "Longer
training of the phase-channel model"). Per model and case: the network alone (support Dice,
phase error) and the default refinement (success, median chi²).

Every model gets an oversampling range, because ``cdinn invert`` clamps the estimate to it: a
run directory's card has none, and the same weights scored atomistic phase 0.483 rad without it
against 0.374 with the shipped card's. A run directory gets the range that
``ship_model.py`` would give it, from 512 training samples.
"""

from __future__ import annotations

import argparse
import sys

from cdinn.runtime import tune_process

tune_process()

import numpy as np  # noqa: E402

from bench_masks import masks  # noqa: E402
from common import held_out_atomistic_case, held_out_case, log, score, table  # noqa: E402
from ship_model import oversampling_range  # noqa: E402

from cdinn.models import load_model  # noqa: E402
from cdinn.pipeline import invert  # noqa: E402

TUNING_FIRST_SEED = 8000


def with_range(name: str):
    """The model, its card given an oversampling range if it has none (a run directory)."""
    model = load_model(name)
    if "oversampling_range" not in model.card:
        model.card["oversampling_range"] = oversampling_range(model, model.card, n=512)
    return model


def rows(model, cases: list, mask: np.ndarray | None) -> list[str]:
    """Median Dice and phase error of the network alone; success and median chi² of the default."""
    alone, refined = [], []
    for truth, pattern, _ in cases:
        p = pattern if mask is None else np.where(mask, 0.0, pattern).astype(np.float32)
        alone.append(score(invert(p, model, refine="none", mask=mask).object, truth))
        r = invert(p, model, mask=mask)
        refined.append((score(r.object, truth), r.chi2))
    return [f"{np.median([s['dice'] for s in alone]):.3f}", f"{np.median([s['phase_error'] for s in alone]):.3f}",
            f"{sum(s['success'] for s, _ in refined)} / {len(refined)}", f"{np.median([c for _, c in refined]):.3g}"]


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="shipped names, .pt files with a card, or run directories")
    ap.add_argument("-n", type=int, default=20, help="crystals per family (seeds 8000 on)")
    args = ap.parse_args(argv)
    seeds = range(TUNING_FIRST_SEED, TUNING_FIRST_SEED + args.n)
    log(f"tuning crystals {seeds[0]}-{seeds[-1]} (atomistic ones are relaxed and cached the first time)")
    families = {"faceted": [held_out_case(s) for s in seeds], "atomistic": [held_out_atomistic_case(s) for s in seeds]}
    models = {name: with_range(name) for name in args.models}
    body = []
    for mask_name, mask in {"complete": None, **masks()}.items():
        for family, cases in families.items():
            for name, model in models.items():
                log(f"{name}: {family}, {mask_name}")
                body.append([f"{family}, {mask_name.split(' (')[0]}", f"`{name}`", *rows(model, cases, mask)])
    ranges = "; ".join(f"`{n}` {m.card['oversampling_range']}" for n, m in models.items())
    return "\n\n".join([f"Tuning crystals {seeds[0]}-{seeds[-1]} per family; oversampling ranges: {ranges}.",
                        table(["cases", "model", "network Dice", "network phase (rad)", "default recovered",
                               "default chi²"], body)])


if __name__ == "__main__":
    print(main(sys.argv[1:]))
