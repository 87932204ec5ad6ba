"""Stacks: ``cdinn invert --stack`` throughput of the 2D networks through the CLI (issue 14).

A stack of N simulated 64² polygon-like crystal patterns (``faceted``, 2D, oversampling 6, 1e7
photons) in one ``.npy``; ``cdinn invert --stack --model M --refine none`` writes the N
reconstructions to one file. Throughput = (4096 − 16) / (t₄₀₉₆ − t₁₆), whole processes, so
that start-up does not count; for each shipped 2D model, runs interleaved. Target: ≥ 2,000
patterns/s on this CPU. Also: each process's peak memory, the same stack as a compressed
uint32 HDF5 dataset (read a batch at a time), and 128 frames with the default refinement
(network, batched refinement and retries).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from common import log, table, wall_time_and_peak

from cdinn.io import read_result
from cdinn.simulate import faceted_crystal, simulate_pattern

TITLE = "Stacks: the 2D networks through `cdinn invert --stack`"
ORDER = 55
RESULTS = "networks"


def _alone(name: str, base: list[np.ndarray]) -> float:
    """Patterns/s of the model's own prediction, in process, on a batch of 256 (best of 3)."""
    import torch

    from cdinn.models import load_model

    model = load_model(name)
    batch = torch.from_numpy(np.stack(base[:64] * 4))
    with torch.no_grad():
        model.predict(batch)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            model.predict(batch)
            best = min(best, time.perf_counter() - t0)
    return len(batch) / best


def main(quick: bool) -> str:
    from cdinn.models import shipped_models

    names = [c["name"] for c in shipped_models() if c["architecture"]["ndim"] == 2]
    big = 512 if quick else 4096
    base = [simulate_pattern(faceted_crystal((64, 64), oversampling=6.0, phase_range=1.0, seed=s), photons=1e7, seed=s).numpy()
            for s in range(64)]
    times: dict[tuple[str, int], float] = {}
    peaks: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (16, big):
            frames = np.stack([base[i % len(base)] for i in range(n)])
            np.save(Path(tmp) / f"stack{n}.npy", frames)
            with h5py.File(Path(tmp) / f"stack{n}.h5", "w") as f:  # as a detector writes it: counts, compressed
                f.create_dataset("data", data=frames.astype(np.uint32), chunks=(1,) + frames.shape[1:], compression="gzip")
        variants = [(name, ".npy") for name in names] + [(names[0], ".h5")]
        for _ in range(4):  # rounds: each model and size once per round, the best of the rounds kept
            for name, suffix in variants:
                for n in (16, big):
                    cmd = [sys.executable, "-m", "cdinn.cli.main", "invert", str(Path(tmp) / f"stack{n}{suffix}"), "--stack",
                           "--model", name, "--refine", "none", "-o", str(Path(tmp) / f"r{n}.h5"), "-q"]
                    t, peak = wall_time_and_peak(cmd)
                    key = (name, suffix, n)
                    times[key] = min(times.get(key, t), t)
                    peaks[key] = max(peaks.get(key, peak), peak)
                    log(f"{name}, stack of {n} ({suffix}): {t:.2f} s, peak RSS {peak:.0f} MiB")
        refined = []
        small = 32 if quick else 128
        for name in names:  # network + the default refinement (and its retries), batched on a CPU at 64²
            cmd = [sys.executable, "-m", "cdinn.cli.main", "invert", str(Path(tmp) / f"stack{small}.npy"), "--stack",
                   "--model", name, "-o", str(Path(tmp) / "refined.h5"), "-q"]
            np.save(Path(tmp) / f"stack{small}.npy", np.stack([base[i % len(base)] for i in range(small)]))
            t, _ = wall_time_and_peak(cmd)
            prov = read_result(Path(tmp) / "refined.h5").provenance
            refined.append([f"`{name}`", f"{t:.1f} s", f"{small / t:.1f}", f"{prov['chi2_median']:.3g}",
                            f"{prov['above_noise_floor']} of {small}"])
            log(f"{name}, {small} patterns with the default refinement: {t:.1f} s")
    rows, notes = [], []
    for name, suffix in variants:
        rate = (big - 16) / (times[name, suffix, big] - times[name, suffix, 16])
        alone = _alone(name, base)
        label = f"`{name}`" + (", HDF5 input (uint32, gzip)" if suffix == ".h5" else "")
        rows.append([label, f"{times[name, suffix, 16]:.2f} s", f"{times[name, suffix, big]:.2f} s", f"**{rate:.0f}**",
                     "met" if rate >= 2000 else "missed", f"{alone:.0f}",
                     f"{peaks[name, suffix, 16]:.0f} / {peaks[name, suffix, big]:.0f}"])
    notes.append("Whole processes, best of 4 interleaved rounds; the 16-pattern run measures start-up and model loading. "
                 f"Throughput = ({big} − 16) / (t{big} − t16) in patterns/s (target ≥ 2,000). Network alone: the "
                 "model's own prediction in process on a batch of 256 (best of 3); the rest of a stack's time is "
                 "reading, the oversampling estimate, support cleaning, chi², the counting-noise floor and writing "
                 f"(streamed: each frame compressed on a background thread). Peak resident memory of the 16- and "
                 f"{big}-pattern processes (the input stack alone is {big * 64 * 64 * 4 / 2**20:.0f} MiB). Input a "
                 "float32 `.npy` (mapped from its file) or, last row, the same counts as uint32 in a gzip-compressed "
                 "HDF5 dataset, one chunk per frame (`io.readers.HDF5Stack`: checked and read a batch of frames at a "
                 "time, never whole).")
    notes.append(f"With the default refinement (`cdinn invert --stack` without `--refine`), {small} of the same "
                 "frames, one whole process each (start-up included): the patterns of a network call are refined as "
                 "one batch on a CPU at this size, their retries too (attempt by attempt, those still above their "
                 "counting-noise floor).")
    return "\n\n".join([notes[0], table(["model", "t16", f"t{big}", "patterns/s", "target", "network alone, patterns/s",
                                        f"peak RSS t16 / t{big}, MiB"], rows),
                        notes[1], table(["model", "time", "patterns/s", "chi² median", "above their floor"], refined)])
