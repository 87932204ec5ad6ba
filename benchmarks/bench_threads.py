"""Threads on a shared machine: default ``cdinn phase`` on scan 54 idle and beside a busy job (issue 17).

Whole processes (``cdinn phase scan54.cxi --seed 0``), wall time, interleaved repeats:
``--threads <all cores>`` (what torch takes by default, the behaviour before the option) against
the default (cores this process may use minus the processes running now), on an idle machine
and beside one competing CPU-bound process (a Python busy loop, as another user's job).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_experimental import _prepare
from common import log, median, table

TITLE = "Threads: default phase on scan 54, idle and beside a busy job"
ORDER = 46
RESULTS = "retrieval"
CDINN = [sys.executable, "-m", "cdinn.cli.main"]
BUSY = [sys.executable, "-c", "while True: pass"]


def _run(cxi: Path, out: Path, threads: int | None) -> float:
    extra = [] if threads is None else ["--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(CDINN + ["phase", str(cxi), "-o", str(out), "--seed", "0", "-q", *extra], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(quick: bool) -> str:
    cores = len(os.sched_getaffinity(0))
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cxi = Path(tmp) / "scan54.cxi"
        _prepare(64, cxi)
        out = Path(tmp) / "r.h5"
        _run(cxi, out, None)  # warm the file cache
        for condition in ("idle", "one busy process"):
            busy = subprocess.Popen(BUSY) if condition != "idle" else None
            try:
                times: dict[str, list[float]] = {"all": [], "default": []}
                for _ in range(repeats):
                    times["all"].append(_run(cxi, out, cores))
                    times["default"].append(_run(cxi, out, None))
                log(f"{condition}: --threads {cores} {times['all']}, default {times['default']}")
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            rows.append([condition, f"{median(times['all']):.2f} s", f"{median(times['default']):.2f} s",
                         f"{median(times['all']) / median(times['default']):.2f}×"])
    return "\n".join([
        f"Whole processes, median of {repeats} interleaved runs; {cores} cores.",
        "",
        table(["machine", f"--threads {cores} (before)", "default (after)", "before / after"], rows),
    ])
