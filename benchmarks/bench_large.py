"""Large arrays: ``cdinn phase`` of a 256³ pattern — peak memory and time per iteration (issue 14).

A 256³ faceted crystal pattern (oversampling 3, 1e9 photons) in one ``.npy``; ``cdinn phase``
with ``ER**20`` (memory does not grow with iterations) as a whole process; its peak resident
memory (``ru_maxrss`` of the child) and wall time. cohere-core (numpy, complex128, one thread)
runs 20 ER iterations on the same pattern for the per-iteration time. Target: peak ≤ 8 GiB.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import log, table

from cdinn.physics import autocorrelation_support
from cdinn.simulate import faceted_crystal, simulate_pattern

TITLE = "Large arrays: a 256³ pattern"
ORDER = 25
RESULTS = "retrieval"
ITERATIONS = 20


def main(quick: bool) -> str:
    n = 128 if quick else 256
    pattern = simulate_pattern(faceted_crystal((n,) * 3, oversampling=3.0, phase_range=2.0, seed=5), photons=1e9, seed=5).numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npy"
        np.save(path, pattern)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cdinn.cli.main", "phase", str(path), "--recipe", f"ER**{ITERATIONS}",
                        "-o", str(Path(tmp) / "r.h5"), "-q"], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
        log(f"{n}³: {wall:.1f} s, peak RSS {peak / 2**20:.2f} GiB (before {before / 2**20:.2f})")
        rows.append([f"cdinn phase, `ER**{ITERATIONS}` (whole process, incl. reading and writing)", f"{wall:.1f} s",
                     f"{peak / 2**20:.2f} GiB"])
        try:
            import cohere_core  # noqa: F401
            from bench_cohere import run_cohere

            support = autocorrelation_support(pattern).numpy()
            (Path(tmp) / "cohere").mkdir()
            t_cohere, _, _ = run_cohere(pattern, support, Path(tmp) / "cohere", {"algorithm_sequence": f"{ITERATIONS}*ER"})
            rows.append([f"cohere-core 4.5.4, {ITERATIONS} ER (in process, after loading)", f"{t_cohere:.1f} s", "–"])
        except ImportError:
            rows.append(["cohere-core", "not installed (`pip install -e '.[bench]'`)", "–"])
    ok = peak / 2**20 <= 8
    return "\n".join([
        f"A {n}³ pattern ({pattern.nbytes / 2**20:.0f} MiB as float32).", "",
        table(["run", "time", "peak resident memory"], rows), "",
        f"Target: peak ≤ 8 GiB ({'met' if ok else 'missed'}). A pattern whose working set exceeds the memory "
        "available is refused before any allocation (`retrieval.engine.check_memory`).",
    ])
