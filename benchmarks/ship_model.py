"""Evaluate a training run on held-out data and ship it into the package.

    .venv/bin/python benchmarks/ship_model.py runs/cdinn2d cdinn2d --config configs/cdinn2d.toml

Held-out set: the run's own data family with a seed never used in training; metrics of the
network alone (amplitude SSIM and phase error after removing translation, twin and global
phase; chi² of the prediction against the noisy pattern on the model's grid); best and worst
cases as a figure; inference latency for one pattern and a batch of 64. Writes
``src/cdinn/models/weights/NAME.pt`` + ``NAME.json`` (the card) and
``benchmarks/results/models_NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np
import torch

from common import ROOT, table

from cdinn.models import load_model
from cdinn.models.registry import WEIGHTS_DIR
from cdinn.physics import align, chi2, intensity, pad_to, phase_error, ssim_amplitude
from cdinn.report import comparison_figure
from cdinn.train.data import SimulatedPatterns

HELD_OUT_SEED = 987_654


def evaluate(model, card: dict, n: int) -> tuple[list[dict], SimulatedPatterns, torch.Tensor]:
    data = {k: v for k, v in card["data"].items() if k not in ("kind", "n_train", "n_val", "seed")}
    test = SimulatedPatterns(n, size=model.input_size, ndim=model.ndim, output_size=model.output_size, seed=HELD_OUT_SEED, **data)
    with torch.no_grad():
        out = model(test.inputs)
    pred = torch.polar(out["amplitude"], out["phase"])
    rows = []
    for i in range(n):
        truth = torch.polar(test.amplitude[i], test.phase[i])
        a = align(pred[i], truth)
        pattern = test.inputs[i, 0].square()
        rows.append({
            "ssim": ssim_amplitude(a.aligned, truth),
            "phase_error": phase_error(a.aligned, truth),
            "chi2": float(chi2(intensity(pad_to(pred[i], pattern.shape)), pattern)),
            "twin": a.twin,
        })
    return rows, test, pred


def latency(model) -> dict:
    shape = (model.input_size,) * model.ndim
    out = {}
    for batch in (1, 64):
        x = torch.rand((batch,) + shape)
        model.predict(x)
        reps = 20 if batch == 1 else 3
        t = time.perf_counter()
        for _ in range(reps):
            model.predict(x)
        dt = (time.perf_counter() - t) / reps
        out[f"batch_{batch}_s"] = dt
        out[f"batch_{batch}_patterns_per_s"] = batch / dt
    out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--config", required=True, help="the TOML the run was trained from (recorded in the card)")
    ap.add_argument("-n", type=int, default=200, help="held-out patterns")
    args = ap.parse_args()
    model = load_model(args.run)
    card = dict(model.card)
    rows, test, pred = evaluate(model, card, args.n)
    metrics = {}
    for key in ("ssim", "phase_error", "chi2"):
        v = np.array([r[key] for r in rows])
        metrics[key] = {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}
    metrics["n"] = args.n
    metrics["twin_fraction"] = float(np.mean([r["twin"] for r in rows]))
    card.update({
        "name": args.name,
        "test": {"held_out_seed": HELD_OUT_SEED, **metrics},
        "latency_cpu": latency(model),
        "command": f"cdinn train {args.config} --run-dir {args.run}  (OMP_NUM_THREADS=1)",
    })
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f"{args.run}/best.pt", WEIGHTS_DIR / f"{args.name}.pt")
    (WEIGHTS_DIR / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")

    order = np.argsort([r["ssim"] for r in rows])
    panels = []
    for tag, i in (("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])):
        truth = torch.polar(test.amplitude[i], test.phase[i])
        panels += [(f"{tag} truth", truth.numpy()), (f"{tag} network (SSIM {rows[i]['ssim']:.2f})", align(pred[i], truth).aligned)]
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    comparison_figure(images / f"model_{args.name}.png", panels, title=f"{args.name}: held-out best / median / worst (network alone)")
    lat = card["latency_cpu"]
    md = [
        f"### {args.name} ({card['family']}, {card['architecture']['parameters']:,} parameters)",
        f"Trained by `{card['command']}`: {card['training']['epochs']} epochs, {card['training']['wall_time_s']:.0f} s, "
        f"{card['hardware']}. Held-out: {args.n} patterns of the training family (seed {HELD_OUT_SEED}).",
        table(["metric", "median", "10th pct", "90th pct"], [[k, f"{m['median']:.3g}", f"{m['p10']:.3g}", f"{m['p90']:.3g}"] for k, m in metrics.items() if isinstance(m, dict)]),
        f"Latency (CPU, {lat['threads']} thread(s)): one pattern {lat['batch_1_s'] * 1e3:.1f} ms; batch of 64 "
        f"{lat['batch_64_s'] * 1e3:.0f} ms = {lat['batch_64_patterns_per_s']:.0f} patterns/s.",
        f"![{args.name}](../../docs/images/model_{args.name}.png)",
    ]
    out = ROOT / "benchmarks" / "results" / f"models_{args.name}.md"
    out.write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))


if __name__ == "__main__":
    main()
