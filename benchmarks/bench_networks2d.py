"""Issue 12: the shipped 2D networks alone on a family they never trained on.

They learned polygons (``simulate.polygons``); here, 2D faceted crystals drawn as the faceted
3D held-out cases of ``bench_networks.py`` (oversampling 2.5–3.5, phase up to ±2.4 rad, 1e7
photons, seeds 7000–7049), ``cdinn invert --refine none``, beside a disc of the crystals' mean
area with zero phase. Their held-out polygons are in ``benchmarks/results/models_NAME.md``.
"""

from __future__ import annotations

import numpy as np
from bench_networks import _ball, _stats
from common import HELD_OUT_SEEDS, score, table

from cdinn.models import load_model, shipped_models
from cdinn.pipeline import invert
from cdinn.simulate import faceted_crystal, simulate_pattern

TITLE = "The 2D networks on a family they never trained on (issue 12)"
ORDER = 46
RESULTS = "networks"


def _cases(seeds: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        params = {"oversampling": float(rng.uniform(2.5, 3.5)), "phase_range": float(rng.uniform(1.0, 4.8))}
        truth = faceted_crystal((64, 64), seed=int(rng.integers(2**31)), **params).numpy()
        cases.append((truth, simulate_pattern(truth, photons=1e7, seed=int(rng.integers(2**31))).numpy()))
    return cases


def main(quick: bool) -> str:
    cases = _cases(HELD_OUT_SEEDS[:4] if quick else HELD_OUT_SEEDS)
    area = float(np.mean([np.count_nonzero(np.abs(t) >= 0.5) for t, _ in cases]))
    disc = _ball((64, 64), area)
    beamstop = np.abs(_ball((64, 64), np.pi * 2.0**2)) > 0  # a disc of radius 2 over the centre (13 pixels)
    tables = []
    for mask in (None, beamstop):
        rows = {}
        for card in shipped_models():
            if card["architecture"]["ndim"] == 2:
                model = load_model(card["name"])
                rows[f"`{card['name']}` alone"] = [
                    score(invert(p if mask is None else np.where(mask, 0, p), model, refine="none", mask=mask).object, t)
                    for t, p in cases]
        rows["baseline: disc of the mean area, zero phase"] = [score(disc, t) for t, _ in cases]
        body = [[label, _stats([r["dice"] for r in recs], "{:.3f}"), _stats([r["ssim"] for r in recs], "{:.3f}"),
                 _stats([r["phase_error"] for r in recs], "{:.3f}")] for label, recs in rows.items()]
        tables += ["Complete patterns:" if mask is None else
                   "The same patterns with a beamstop (a disc of radius 2 pixels over the centre, zero there, the mask given):",
                   table(["method", "support Dice", "amp SSIM", "phase err (rad)"], body)]
    return "\n\n".join([
        f"The shipped 2D networks were trained on polygons only (`cdinn2d-masked` with detector masks on half of them). "
        f"Here: {len(cases)} 2D faceted crystals (64², seeds "
        f"{HELD_OUT_SEEDS[0]}–{HELD_OUT_SEEDS[len(cases) - 1]}, drawn as the faceted 3D cases of the section above: "
        "oversampling 2.5–3.5, phase up to ±2.4 rad, 1e7 photons), `cdinn invert --refine none`. Median [10th, 90th "
        "percentile] after removing translation, twin and global phase.", *tables])
