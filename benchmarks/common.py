"""Helpers shared by the benchmark sections (not a section itself: no ``bench_`` prefix).

Timing rules of the suite: the machine is small and shared, so absolute times are noisy.
Every claim is a *ratio* of variants measured in the same process, interleaved (A, B, A, B,
...), repeated, and summarised by the median.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cdinn.physics import align, phase_error, ssim_amplitude, support_dice  # noqa: E402
from cdinn.simulate import faceted_crystal, simulate_pattern  # noqa: E402

# Seeds of the simulated crystals used by the benchmarks: far from the tests' (0-11) and the
# demo's (7), so that nothing was tuned on them.
PATTERN_SEED = 1000
SUCCESS_SEEDS = tuple(range(2001, 2041))

SHAPE_3D = (64, 64, 64)
PHOTONS = 1e9
SSIM_MIN = 0.95
PHASE_MAX = 0.15


def log(msg: str) -> None:
    """Progress line on stderr (the markdown goes to the results file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def crystal_and_pattern(seed: int, shape: Sequence[int] = SHAPE_3D, photons: float = PHOTONS):
    """The benchmark's simulated strained crystal (truth, complex64 numpy) and its noisy pattern."""
    truth = faceted_crystal(shape, oversampling=2.0, phase_range=2.0, seed=seed)
    pattern = simulate_pattern(truth, photons=photons, seed=seed)
    return truth.numpy(), pattern.numpy()


HELD_OUT_SEEDS = tuple(range(7000, 7050))
"""Held-out crystals of the networks benchmark: never used in training (those draw from
``default_rng([seed, i])`` streams) nor in tests."""
ATOMISTIC_CACHE = ROOT / "benchmarks" / "out" / "atomistic"


def held_out_case(seed: int, photons: float = 1e7) -> tuple[np.ndarray, np.ndarray, dict]:
    """A held-out 64³ strained crystal as a Bragg scan sees it: linear oversampling 2.5-3.5,
    peak-to-peak phase 1-4.8 rad (up to ±2.4), Poisson noise at ``photons`` counts.

    Returns truth (complex64), pattern (float32) and the drawn parameters.
    """
    rng = np.random.default_rng(seed)
    params = {"oversampling": float(rng.uniform(2.5, 3.5)), "phase_range": float(rng.uniform(1.0, 4.8))}
    truth = faceted_crystal(SHAPE_3D, seed=int(rng.integers(2**31)), **params)
    pattern = simulate_pattern(truth, photons=photons, seed=int(rng.integers(2**31)))
    return truth.numpy(), pattern.numpy(), params


def atomistic_cache_path(seed: int, photons: float = 1e7) -> Path:
    """Where :func:`held_out_atomistic_case` keeps a case: seed, photons and a digest of the
    atomistic generator's source, so that a changed generator makes new cases."""
    import hashlib

    from cdinn.simulate import atomistic

    digest = hashlib.sha1(Path(atomistic.__file__).read_bytes()).hexdigest()[:10]
    return ATOMISTIC_CACHE / f"{seed}-{digest}-{photons:.0e}.npz"


def held_out_atomistic_case(seed: int, photons: float = 1e7) -> tuple[np.ndarray, np.ndarray, dict]:
    """A held-out 64³ crystal from the atomistic family, which no shipped 3D model trained on:
    an FCC gold crystal of 19-26 unit cells clipped by random facets, relaxed with EMT,
    strained up to 1 % and relaxed again (:func:`cdinn.simulate.atomistic.atomistic_object`,
    one voxel per unit cell), so that it spans 17-27 voxels (linear oversampling ~2.4-3.8);
    Poisson noise at ``photons`` counts.

    The relaxations take 5-25 s per crystal, so cases are kept in ``benchmarks/out/atomistic``
    under the seed and a digest of the generator's source: a changed generator makes new ones.
    Returns truth (complex64), pattern (float32) and parameters (oversampling = 64 / the
    largest extent of the half-maximum support, phase_range = peak-to-peak phase inside it).
    """
    from cdinn.physics.fourier import pad_to
    from cdinn.physics.support import bounding_box
    from cdinn.simulate import atomistic

    path = atomistic_cache_path(seed, photons)
    if path.exists():
        with np.load(path) as f:  # our own cache: plain arrays, no pickle
            return f["truth"], f["pattern"], {"oversampling": float(f["oversampling"]), "phase_range": float(f["phase_range"])}
    rng = np.random.default_rng(seed)
    sample, _ = atomistic.atomistic_object(40, cells=int(rng.integers(19, 27)), voxel=1.0, seed=rng)
    truth = pad_to(torch.from_numpy(sample.object), SHAPE_3D)
    # One thread: the FFT's rounding depends on the thread count, and a count that lands the
    # other side of a Poisson draw changes a pixel; the cases must not depend on who made them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pattern = simulate_pattern(truth, photons=photons, seed=int(rng.integers(2**31)))
    finally:
        torch.set_num_threads(threads)
    inside = sample.amplitude >= 0.5
    extent = max(b.stop - b.start for b in bounding_box(torch.from_numpy(inside)))
    params = {"oversampling": SHAPE_3D[0] / extent, "phase_range": float(np.ptp(sample.phase[inside]))}
    truth, pattern = truth.numpy().astype(np.complex64), pattern.numpy()
    ATOMISTIC_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, truth=truth, pattern=pattern, **params)
    tmp.replace(path)
    return truth, pattern, params


def score(obj: np.ndarray, truth: np.ndarray) -> dict:
    """Amplitude SSIM and phase error (rad) of a reconstruction against the truth.

    Translation, twin image and global phase are removed first (one alignment for both).
    """
    alignment = align(obj, truth)
    ssim = ssim_amplitude(alignment.aligned, truth)
    perr = phase_error(alignment.aligned, truth)
    return {
        "ssim": ssim,
        "phase_error": perr,
        "dice": support_dice(alignment.aligned, truth, aligned=True),
        "twin": alignment.twin,
        "success": bool(ssim >= SSIM_MIN and perr <= PHASE_MAX),
    }


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fft_pair_time(shape: Sequence[int] = (1,) + SHAPE_3D, pairs: int = 50, use_out: bool = True) -> float:
    """Seconds per forward + inverse complex64 FFT pair over the trailing 3 axes (norm='ortho').

    With ``use_out`` the results go to preallocated buffers; without, each call allocates.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(shape), dtype=torch.complex64, generator=gen)
    dims = (-3, -2, -1) if len(shape) >= 3 else (-2, -1)
    if use_out:
        f = torch.empty_like(x)
        g = torch.empty_like(x)
        torch.fft.ifftn(torch.fft.fftn(x, dim=dims, norm="ortho", out=f), dim=dims, norm="ortho", out=g)
        t0 = time.perf_counter()
        for _ in range(pairs):
            torch.fft.fftn(x, dim=dims, norm="ortho", out=f)
            torch.fft.ifftn(f, dim=dims, norm="ortho", out=g)
        return (time.perf_counter() - t0) / pairs
    torch.fft.ifftn(torch.fft.fftn(x, dim=dims, norm="ortho"), dim=dims, norm="ortho")
    t0 = time.perf_counter()
    for _ in range(pairs):
        f = torch.fft.fftn(x, dim=dims, norm="ortho")
        g = torch.fft.ifftn(f, dim=dims, norm="ortho")
    del g
    return (time.perf_counter() - t0) / pairs


def wall_time(cmd: Sequence[str]) -> float:
    """Seconds a whole process takes (its output discarded; a failure raises)."""
    import subprocess

    t0 = time.perf_counter()
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def wall_time_and_peak(cmd: Sequence[str]) -> tuple[float, float]:
    """Seconds a whole process takes and its peak resident memory in MiB (output discarded; a
    failure raises).

    The peak is measured by GNU time where it exists: a child forked from this (large) process
    starts with this process's resident pages, and Linux keeps that in the child's
    ``ru_maxrss`` across ``exec``, so ``wait4`` would report at least this process's size (the
    16-frame stack runs read 378-471 MiB that way). ``/usr/bin/time`` is small, and the child
    it forks is measured alone. Without it, ``ru_maxrss`` of the direct child (an upper bound).
    """
    import os
    import shutil
    import subprocess
    import tempfile

    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.NamedTemporaryFile("r") as report:
        full = [gnu_time, "-f", "%M", "-o", report.name, *cmd] if gnu_time else list(cmd)
        t0 = time.perf_counter()
        child = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, list(cmd))
        kib = int(report.read().split()[-1]) if gnu_time else usage.ru_maxrss
    return seconds, kib / 1024


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """'median (min–max, n=N)' for a list of repeats."""
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))}, n={len(values)})"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def machine() -> str:
    return f"nproc {os.cpu_count()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
