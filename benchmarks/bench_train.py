"""Issue 12: is the data pipeline the bottleneck of training? Training samples/s with samples
simulated on the fly in DataLoader workers, against the raw model's forward + backward +
optimizer samples/s on the same batches held in memory. Target: ≥ 80 %.

The model and data are the shipped 3D models' (AutoPhaseNN, 64³ -> 32³, faceted crystals and
superellipsoids); on a GPU the same run uses it when present. The network runs in the trainer's
arithmetic (``precision = "auto"``: bfloat16 autocast where the device has it natively), and
once in float32 beside it, to show what that choice is worth.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from common import log, table

from cdinn.models import build
from cdinn.models.base import inference_dtype
from cdinn.train.data import GeneratedPatterns, simulation_configs
from cdinn.train.losses import build_loss

TITLE = "Training throughput: data pipeline vs model (issue 12)"
ORDER = 46
RESULTS = "networks"
LOSS = [{"name": "supervised", "phase_weight": 1.0, "shape_weight": 1.0}, {"name": "fourier", "threshold": 0.1}]


def _step(model, opt, loss_fn, batch, dev, precision: str) -> None:
    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
    # the trainer's rule (cdinn.train.trainer.train): bf16 autocast of the network only
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=inference_dtype(dev, precision) == torch.bfloat16):
        out = model(model.prepare(batch["intensity"]))
    loss, _ = loss_fn(out, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(workers: int, threads: int, steps: int, batch_size: int, dev: torch.device, precision: str = "auto",
            width: int = 12) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build("autophasenn", width=width, size=64, input_scale="log").to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss(LOSS)
    configs = simulation_configs(["faceted", "superellipsoids"], 64, 3, oversampling=(2.2, 4.0), photons=(1e4, 1e9), seed=5,
                                 options={"faceted": {"max_phase_range": 5.0}})
    data = GeneratedPatterns(configs, steps * batch_size, 64, 32)
    cached = [next(iter(DataLoader(data, batch_size=batch_size)))]
    _step(model, opt, loss_fn, cached[0], dev, precision)
    _sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        _step(model, opt, loss_fn, cached[0], dev, precision)
    _sync(dev)
    raw = steps * batch_size / (time.perf_counter() - t)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    t = time.perf_counter()
    for batch in loader:
        _step(model, opt, loss_fn, batch, dev, precision)
    _sync(dev)
    piped = steps * batch_size / (time.perf_counter() - t)
    return {"raw": raw, "pipeline": piped}


def main(quick: bool) -> str:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = 3 if quick else 12
    cpus = torch.get_num_threads()
    auto = str(inference_dtype(dev)).removeprefix("torch.")
    variants = [(1, 1, "auto"), (0, cpus, "auto"), (1, cpus, "auto"), (1, cpus, "fp32")] if dev.type == "cpu" \
        else [(8, cpus, "auto"), (8, cpus, "fp32")]
    rows = []
    for width in (8, 12):
        for workers, threads, precision in variants:
            r = measure(workers, threads, steps, 8, dev, precision, width)
            log(f"train throughput width={width} workers={workers} threads={threads} {precision}: {r}")
            rows.append([width, workers, threads, auto if precision == "auto" else "float32", f"{r['raw']:.2f}",
                         f"{r['pipeline']:.2f}", f"{100 * r['pipeline'] / r['raw']:.0f}%"])
    return "\n\n".join([
        f"AutoPhaseNN 64³ -> 32³ at widths 8 and 12, batch 8, {steps} steps per variant, on {dev.type}; data simulated "
        "on the fly (faceted crystals and superellipsoids, Fourier-resampled to oversampling 2.2-4, Poisson noise). "
        f"The network in the trainer's arithmetic (`precision = \"auto\"`: {auto} here) and in float32.",
        table(["width", "DataLoader workers", "torch threads", "network arithmetic", "model samples/s (batches in memory)",
               "training samples/s (on-the-fly data)", "ratio (target ≥ 80 %)"], rows),
        "On two CPU cores a worker that simulates takes a core from the model: the ratio says how much of the "
        "model's speed the whole pipeline keeps. On a GPU machine the workers run on its many cores beside the GPU.",
    ])
