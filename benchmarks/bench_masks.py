"""Issue 12: the shipped 3D network on patterns with unmeasured pixels.

Real patterns are never complete: a beamstop, or a saturated Bragg peak masked out, hides the
centre; module gaps cut planes; dead pixels leave lines along the rocking axis. The held-out
crystals of the networks section (50 atomistic gold crystals, a family the network never
trained on, and 50 faceted crystals from unseen seeds; 1e7 photons) with two fixed masks:

- **beamstop**: a ball of radius 2 pixels over the centre (33 pixels, the brightest);
- **gaps**: two module gaps 2 pixels wide across the detector plane, 3 and 9 pixels off the
  centre, and three dead lines along the rocking axis.

The pattern is zero on the mask and the mask is given to every method. Per mask: the network
alone (support Dice, phase error) beside the input-ignoring baseline, the network + the
default refinement, and `cdinn phase`'s default (PR-600, one start), in process.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from bench_networks import MODEL, _atomistic_cases, _ball
from common import HELD_OUT_SEEDS, held_out_case, log, median, score, table, timed

from cdinn.models import load_model
from cdinn.pipeline import invert
from cdinn.retrieval import DEFAULT_RECIPE, phase_retrieval

TITLE = "Patterns with unmeasured pixels (issue 12)"
ORDER = 46
RESULTS = "networks"


def masks(shape: tuple[int, ...] = (64, 64, 64)) -> dict[str, np.ndarray]:
    """The benchmark's two detector masks (True = not measured) on a centred 3D grid."""
    z, y, x = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    gaps = (np.abs(x - 3.5) <= 1) | (np.abs(y + 9.5) <= 1)
    for i, j in ((5, 40), (50, 12), (33, 20)):
        gaps[:, i, j] = True
    return {"beamstop (radius 2 over the centre)": x**2 + y**2 + z**2 <= 4,
            "gaps (two 2-pixel module gaps, three dead lines)": gaps}


def _one(model, cases: list, mask: np.ndarray) -> str:
    mean_volume = float(np.mean([np.count_nonzero(np.abs(t) >= 0.5 * np.abs(t).max()) for t, _, _ in cases]))
    ball = _ball(cases[0][0].shape, mean_volume)
    methods = {
        "network alone": lambda p: invert(p, model, refine="none", mask=mask),
        "network + default": lambda p: invert(p, model, mask=mask),
        "cdinn phase default (PR-600, 1 start)": lambda p: phase_retrieval(p, DEFAULT_RECIPE, mask=mask, seed=0, progress=False),
    }
    base = "baseline: ball of the mean volume, zero phase"
    rows: dict[str, list[dict]] = {base: [], **{k: [] for k in methods}}
    for truth, pattern, _ in cases:
        holed = np.where(mask, 0.0, pattern).astype(np.float32)
        rows[base].append({"time": 0.0, "retries": 0, **score(ball, truth)})
        for label, fn in methods.items():
            seconds, res = timed(lambda: fn(holed))
            rows[label].append({"time": seconds, "retries": len(res.provenance.get("retries", [])), **score(res.object, truth)})
    body = [[label, f"{median([r['dice'] for r in recs]):.3f}", f"{median([r['phase_error'] for r in recs]):.3f}",
             f"{100 * np.mean([r['success'] for r in recs]):.0f}%", f"{median([r['time'] for r in recs]):.3f}",
             f"{np.mean([r['time'] for r in recs]):.3f}", str(sum(r["retries"] > 0 for r in recs))]
            for label, recs in rows.items()]
    return table(["method", "support Dice", "phase err (rad)", "success", "median time (s)", "mean time (s)", "retried"], body)


def main(quick: bool, model_name: str = MODEL) -> str:
    seeds = HELD_OUT_SEEDS[:4] if quick else HELD_OUT_SEEDS
    model = load_model(model_name)
    families = {"atomistic gold crystals (never trained on)": _atomistic_cases(seeds),
                "faceted crystals (unseen seeds)": [held_out_case(s) for s in seeds]}
    out = [f"Model `{model_name}`, {len(seeds)} held-out crystals per family (seeds {seeds[0]}–{seeds[-1]}), "
           f"{torch.get_num_threads()} threads. Median over the crystals; success = amplitude SSIM ≥ 0.95 and phase error "
           "≤ 0.15 rad; retried = refined results above the counting-noise floor that the default refinement retried "
           "(`cdinn.pipeline.inversion.RETRIES`). The same crystals without a mask: the section above."]
    for mask_name, mask in masks().items():
        for family, cases in families.items():
            log(f"masks: {mask_name}, {family}")
            out += [f"### {mask_name}: {family}", _one(model, cases, mask)]
    return "\n\n".join(out)


if __name__ == "__main__":
    # Development use: python benchmarks/bench_masks.py MODEL_OR_RUN_DIR [--quick]
    print(main(quick="--quick" in sys.argv, model_name=next((a for a in sys.argv[1:] if not a.startswith("-")), MODEL)))
