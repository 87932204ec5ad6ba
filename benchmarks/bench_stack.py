"""Stacks: ``cdinn invert --stack`` throughput of the 2D network through the CLI (issue 14).

A stack of N simulated 64² polygon-like crystal patterns (``faceted``, 2D, oversampling 6, 1e7
photons) in one ``.npy``; ``cdinn invert --stack --model cdinn2d --refine none`` writes the N
reconstructions to one file. Throughput = (4096 − 16) / (t₄₀₉₆ − t₁₆), whole processes, so
that start-up does not count. Target: ≥ 2,000 patterns/s on this CPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import log, table, wall_time

from cdinn.simulate import faceted_crystal, simulate_pattern

TITLE = "Stacks: the 2D network through `cdinn invert --stack`"
ORDER = 55
RESULTS = "networks"


def main(quick: bool) -> str:
    big = 512 if quick else 4096
    base = [simulate_pattern(faceted_crystal((64, 64), oversampling=6.0, phase_range=1.0, seed=s), photons=1e7, seed=s).numpy()
            for s in range(64)]
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for n in (16, big):
            path = Path(tmp) / f"stack{n}.npy"
            np.save(path, np.stack([base[i % len(base)] for i in range(n)]))
            cmd = [sys.executable, "-m", "cdinn.cli.main", "invert", str(path), "--stack", "--model", "cdinn2d",
                   "--refine", "none", "-o", str(Path(tmp) / f"r{n}.h5"), "-q"]
            times[n] = min(wall_time(cmd) for _ in range(2))
            log(f"stack of {n}: {times[n]:.2f} s")
    rate = (big - 16) / (times[big] - times[16])
    import torch

    from cdinn.models import load_model

    model = load_model("cdinn2d")
    batch = torch.from_numpy(np.stack(base[:64] * 4))
    with torch.no_grad():
        model.predict(batch)
        t0 = time.perf_counter()
        model.predict(batch)
        alone = len(batch) / (time.perf_counter() - t0)
    return "\n".join([
        "Whole processes (best of 2); the 16-pattern run measures start-up and model loading.", "",
        table(["patterns", "wall time"], [[16, f"{times[16]:.2f} s"], [big, f"{times[big]:.2f} s"]]), "",
        f"Throughput ({big} − 16) / (t{big} − t16) = **{rate:.0f} patterns/s** (target ≥ 2,000: "
        f"{'met' if rate >= 2000 else 'missed'}). The shipped `cdinn2d` (width 16, BatchNorm, two decoders) alone, "
        f"in process on a batch of 256, predicts {alone:.0f} patterns/s on these cores: even free stack handling "
        "(per-pattern support cleaning, chi², mapping back: the rest of the time) could not reach the target with this "
        "network on this CPU.",
    ])
