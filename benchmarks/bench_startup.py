"""Start-up: what a beamline script that calls the CLI once per scan pays before any work (issue 14).

Whole processes, interleaved, median of repeats: ``python -c "import torch"`` (the floor: every
command needs torch), ``cdinn --help``, and ``cdinn phase`` with a one-iteration recipe on one
64³ pattern (``.npy``).
Target: the one-iteration ``phase`` ≤ 1.6× the torch import.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import crystal_and_pattern, log, median, table, wall_time

TITLE = "Start-up: one-iteration `cdinn phase` against `import torch`"
ORDER = 5
RESULTS = "retrieval"


def main(quick: bool) -> str:
    repeats = 2 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "p.npy"
        np.save(npy, crystal_and_pattern(1000)[1])
        cdinn = [sys.executable, "-m", "cdinn.cli.main"]
        variants = {
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "cdinn --help": cdinn + ["--help"],
            "cdinn phase p.npy --recipe ER": cdinn + ["phase", str(npy), "-o", str(Path(tmp) / "r.h5"), "--recipe", "ER", "-q"],
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for name, cmd in variants.items():
            wall_time(cmd)  # file cache
        for _ in range(repeats):
            for name, cmd in variants.items():
                times[name].append(wall_time(cmd))
        log(" ".join(f"{k}: {median(v):.2f} s" for k, v in times.items()))
    floor = median(times['python -c "import torch"'])
    rows = [[f"`{k}`", f"{median(v):.2f} s", f"{median(v) / floor:.2f}×"] for k, v in times.items()]
    return "\n".join([f"Whole processes, median of {repeats} interleaved runs.", "",
                      table(["command", "wall time", "/ import torch"], rows), "",
                      "Target: one-iteration `phase` ≤ 1.6× `import torch` "
                      f"({'met' if median(times['cdinn phase p.npy --recipe ER']) <= 1.6 * floor else 'missed'})."])
