"""Evaluate a training run on held-out data and ship it into the package.

    .venv/bin/python benchmarks/ship_model.py runs/autophasenn_64 autophasenn-64 --config configs/autophasenn_64.toml

Held-out set: the run's own data families (``cdinn.train.data``) with a seed never used in
training. Metrics of the network alone — support Dice (half-maximum supports), amplitude SSIM
and phase error, after removing translation, twin and global phase — printed beside two
baselines that ignore the pattern: the mean training amplitude (per-voxel mean of the
targets, zero phase) and a ball of the mean support volume. Also: the oversampling range of
the training data in :func:`cdinn.physics.support.estimate_oversampling` units (``cdinn
invert`` resamples patterns outside it), best/median/worst figure, inference latency. Writes
``src/cdinn/models/weights/NAME.pt`` (half precision) + ``NAME.json`` (the card) and
``benchmarks/results/models_NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import time

# The CLI's process settings (cdinn/cli/main.py), before numpy loads, so that a card's latency
# is what `cdinn invert` gets: without the fixed allocator thresholds every call page-faults.
from cdinn.runtime import tune_process

tune_process()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import ROOT, table  # noqa: E402

from cdinn.io.atomic import atomic_path  # noqa: E402
from cdinn.models import load_model  # noqa: E402
from cdinn.models.base import inference_dtype  # noqa: E402
from cdinn.models.registry import WEIGHTS_DIR  # noqa: E402
from cdinn.physics import align, phase_error, ssim_amplitude, support_dice  # noqa: E402
from cdinn.physics.fourier import fit_to  # noqa: E402
from cdinn.physics.support import estimate_oversampling  # noqa: E402
from cdinn.report import comparison_figure  # noqa: E402
from cdinn.report.figures import flatten_phase, phase_limit  # noqa: E402
from cdinn.train.data import GeneratedPatterns, generated_patterns  # noqa: E402

HELD_OUT_SEED = 987_654


def _data(card: dict, model, seed: int, n: int) -> GeneratedPatterns:
    return generated_patterns(card["data"], model.input_size, model.output_size, model.ndim, seed, n)


def _ball(shape: tuple[int, ...], volume: float) -> np.ndarray:
    ndim = len(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij"))
    r = (3 * volume / (4 * np.pi)) ** (1 / 3) if ndim == 3 else np.sqrt(volume / np.pi)
    return (np.sqrt((grid**2).sum(0)) <= r).astype(np.complex64)


def _score(obj: np.ndarray, truth: np.ndarray) -> dict:
    a = align(obj, truth)
    return {"dice": support_dice(a.aligned, truth, aligned=True), "ssim": ssim_amplitude(a.aligned, truth),
            "phase_error": phase_error(a.aligned, truth), "twin": a.twin}


def evaluate(model, card: dict, n: int) -> tuple[dict[str, list[dict]], list, np.ndarray]:
    """Rows per method (network, the two baselines, the sharp-support reference), the truths, the predictions."""
    train = _data(card, model, int(card["data"].get("seed", 0)), 64)
    mean_amp = torch.stack([train[i]["amplitude"] for i in range(len(train))]).mean(0).numpy().astype(np.complex64)
    volume = float(np.mean([float(train[i]["support"].sum()) for i in range(len(train))]))
    ball = _ball(mean_amp.shape, volume)
    test = _data(card, model, HELD_OUT_SEED, n)
    items = [test[i] for i in range(n)]
    with torch.no_grad():
        # The card's accuracy is the float32 network's (bf16 inference is checked against it by the tests).
        masks = torch.stack([it["mask"] for it in items]) if "mask" in items[0] else None
        pred = model.predict(torch.stack([it["intensity"] for it in items]), masks, precision="fp32").numpy()
    oracle = "reference: the true support, sharp, true phase (what a perfect support predictor scores)"
    rows: dict[str, list[dict]] = {"network": [], "baseline: mean training amplitude, zero phase": [],
                                   "baseline: ball of the mean volume, zero phase": [], oracle: []}
    truths = []
    for i, it in enumerate(items):
        truth = torch.polar(it["amplitude"], it["phase"]).numpy()
        truths.append(truth)
        rows["network"].append(_score(pred[i], truth))
        rows["baseline: mean training amplitude, zero phase"].append(_score(mean_amp, truth))
        rows["baseline: ball of the mean volume, zero phase"].append(_score(ball, truth))
        # the amplitude SSIM a step-shaped prediction cannot exceed where the truth's edge is smooth
        rows[oracle].append(_score(torch.polar(it["support"].float(), it["phase"]).numpy(), truth))
    return rows, truths, pred


def oversampling_range(model, card: dict, n: int = 64) -> list[float]:
    """5th and 95th percentile of the estimated oversampling of the training data (all axes)."""
    data = _data(card, model, int(card["data"].get("seed", 0)), n)
    values = [v for i in range(n) for v in estimate_oversampling(data[i]["intensity"], mask=data[i].get("mask"))]
    return [round(float(np.percentile(values, 5)), 2), round(float(np.percentile(values, 95)), 2)]


def latency(model) -> dict:
    shape = (model.input_size,) * model.ndim
    out = {}
    for batch in (1, 64):
        x = torch.rand((batch,) + shape)
        model.predict(x)
        times = []
        for _ in range(31 if batch == 1 else 5):  # the median: a shared VM has slow moments
            t = time.perf_counter()
            model.predict(x)
            times.append(time.perf_counter() - t)
        dt = float(np.median(times))
        out[f"batch_{batch}_s"] = dt
        out[f"batch_{batch}_patterns_per_s"] = batch / dt
    out["threads"] = torch.get_num_threads()
    out["precision"] = str(inference_dtype(torch.device("cpu"))).removeprefix("torch.")
    return out


def latency_line(lat: dict) -> str:
    """The results file's latency sentence."""
    return (f"Latency (CPU, {lat['threads']} thread(s), {lat['precision']}): one pattern {lat['batch_1_s'] * 1e3:.1f} ms; "
            f"batch of 64 {lat['batch_64_s'] * 1e3:.0f} ms = {lat['batch_64_patterns_per_s']:.0f} patterns/s.")


def update_latency(name: str) -> None:
    """Re-measure a shipped model's latency; rewrite its card's ``latency_cpu`` and its results line."""
    lat = latency(load_model(name))
    card_path = WEIGHTS_DIR / f"{name}.json"
    card = json.loads(card_path.read_text())
    card["latency_cpu"] = lat
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    out = ROOT / "benchmarks" / "results" / f"models_{name}.md"
    lines = [latency_line(lat) if line.startswith("Latency (CPU") else line for line in out.read_text().splitlines()]
    out.write_text("\n".join(lines) + "\n")
    print(latency_line(lat))


def _summary(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--config", help="the TOML the run was trained from (recorded in the card; required unless --latency-only)")
    ap.add_argument("--latency-only", action="store_true",
                    help="re-measure only the inference latency of the shipped model NAME (after an inference change) "
                         "and rewrite that line of its card and results")
    ap.add_argument("-n", type=int, default=100, help="held-out patterns")
    ap.add_argument("--hardware", default=None, help="override the card's hardware line (e.g. when trained elsewhere)")
    args = ap.parse_args()
    if args.latency_only:
        update_latency(args.name)
        return
    if not args.config:
        ap.error("--config is required")
    model = load_model(args.run)
    card = {k: v for k, v in model.card.items() if k not in ("weights",)}
    rows, truths, pred = evaluate(model, card, args.n)
    test = {}
    for method, recs in rows.items():
        test[method] = {k: _summary([r[k] for r in recs]) for k in ("dice", "ssim", "phase_error")}
    test["n"] = args.n
    test["held_out_seed"] = HELD_OUT_SEED
    test["twin_fraction"] = float(np.mean([r["twin"] for r in rows["network"]]))
    card.update({
        "name": args.name,
        "test": test,
        "oversampling_range": oversampling_range(model, card),
        "latency_cpu": latency(model),
        "command": f"cdinn train {args.config} --run-dir {args.run} --max-minutes M  (repeated until complete)",
    })
    if args.hardware:
        card["hardware"] = args.hardware
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with atomic_path(WEIGHTS_DIR / f"{args.name}.pt") as tmp:
        torch.save(state, tmp)
    with atomic_path(WEIGHTS_DIR / f"{args.name}.json") as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")

    order = np.argsort([r["dice"] for r in rows["network"]])
    panels = []
    # 2D polygons are small and centred in a 64² grid: show its central half, where they are.
    def view(a: np.ndarray) -> np.ndarray:
        return a if model.ndim == 3 else fit_to(torch.from_numpy(np.ascontiguousarray(a)), tuple(n // 2 for n in a.shape)).numpy()

    for tag, i in (("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])):
        panels += [(f"{tag}: truth", view(truths[i])),
                   (f"net, Dice {rows['network'][i]['dice']:.2f}", view(align(pred[i], truths[i]).aligned))]
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    # The rows are different objects: one phase scale wide enough for every truth shown (the
    # default takes it from the first row, which clipped the larger phases of the others).
    shown = [flatten_phase(truths[i]) for i in (order[-1], order[len(order) // 2], order[0])]
    vmax = max(phase_limit(np.angle(t[np.abs(t) >= 0.5 * np.abs(t).max()])) for t in shown)
    comparison_figure(images / f"model_{args.name}.png", panels, phase_range=vmax,
                      title=f"{args.name}: held-out best / median / worst (network alone)")
    lat = card["latency_cpu"]
    body = [[method, *(f"{m[k]['median']:.3f} [{m[k]['p10']:.3f}, {m[k]['p90']:.3f}]" for k in ("dice", "ssim", "phase_error"))]
            for method, m in test.items() if isinstance(m, dict)]
    md = [
        f"### {args.name} ({card['family']}, {card['architecture']['parameters']:,} parameters, input {card['architecture']['input_shape']})",
        f"Trained by `{card['command']}`: {card['training']['epochs']} epochs, {card['training']['wall_time_s']:.0f} s, "
        f"{card['hardware']}"
        + (f", starting from the weights of the `{card['config']['init']}` shipped before (its card: the git history)"
           if card.get("config", {}).get("init") else "")
        + f". Held-out: {args.n} patterns of the training families (seed {HELD_OUT_SEED}); "
        "median [10th, 90th percentile], after removing translation, twin and global phase.",
        table(["method", "support Dice", "amplitude SSIM", "phase error (rad)"], body),
        f"Training-data oversampling (estimator units, 5th–95th percentile): {card['oversampling_range']}; "
        "`cdinn invert` resamples a pattern outside this range to its nearest bound.",
        latency_line(lat),
        f"![{args.name}](../../docs/images/model_{args.name}.png)",
    ]
    out = ROOT / "benchmarks" / "results" / f"models_{args.name}.md"
    out.write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))


if __name__ == "__main__":
    main()
