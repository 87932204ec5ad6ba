"""The phase-retrieval engine: runs a recipe on a batch of random starts at once."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

import cdinn
from cdinn.errors import InputError
from cdinn.io.readers import available_memory, check_fits
from cdinn.io.results import Result
from cdinn.physics.alignment import align
from cdinn.physics.fourier import as_tensor
from cdinn.physics.support import autocorrelation_support, centre_on_support
from cdinn.retrieval.recipe import DEFAULT_RECIPE, ITERATING, Step, parse_recipe
from cdinn.retrieval.state import Measurement, State, run


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks CUDA when present; an unavailable device is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available")
    return dev


AVERAGE_TOLERANCE = 0.10
"""Starts whose chi² is within this fraction of the best start's are candidates for the average."""
AVERAGE_MIN_CORRELATION = 0.98
"""... and only those that, once aligned, correlate this well with the best (the same solution)."""
AVERAGE_MARGIN = 0.50
"""The average replaces the best start only when its chi² is within this fraction above the best's."""


def average_starts(measurement: Measurement, objects: Sequence[torch.Tensor], chi2: Sequence[float]) -> dict:
    """Align and average the starts that found the same solution; otherwise keep the best alone.

    Each start is aligned on the best one (integer and sub-pixel translation, twin, global
    phase: :func:`cdinn.physics.align`). A linear phase ramp is not removed: the measured
    pattern fixes it (a ramp is a shift of the pattern, so removing one would raise chi²).
    Averaged are the starts with chi² at most ``(1 + AVERAGE_TOLERANCE)`` times the best whose
    aligned correlation with the best is at least :data:`AVERAGE_MIN_CORRELATION`: starts that
    converged to different solutions average to a blurred object that no longer fits.

    The average of agreeing starts has a somewhat higher chi² than the best start, and is
    nevertheless closer to the truth: each start also fits part of the noise (on simulated
    crystals at 1e7 photons the best start's chi² is 15 % below the true object's) and the
    average removes that part (``benchmarks/results/retrieval.md``, section ``average``).
    The average is kept when its chi² is at most ``(1 + AVERAGE_MARGIN)`` times the best's;
    else the best start is kept and the reason recorded.

    Parameters
    ----------
    measurement : the pattern the starts were fitted to
    objects : complex objects ``(*spatial)``, best (lowest chi²) first
    chi2 : their chi², same order

    Returns
    -------
    dict
        ``object`` (numpy, the average or the best start), ``used`` (starts averaged; 1 when
        the best was kept), ``chi2`` (of the returned object), ``chi2_average`` (of the
        average, also when rejected; None when nothing could be averaged), ``correlation``
        (each candidate's correlation with the best after alignment), ``note`` (why the best
        was kept, or empty).
    """
    best = objects[0].cpu().numpy().astype(np.complex128)
    close = [i for i, c in enumerate(chi2) if c <= (1 + AVERAGE_TOLERANCE) * chi2[0]]
    aligned = [align(objects[i].cpu().numpy(), best) for i in close[1:]]
    agreeing = [a for a in aligned if a.correlation >= AVERAGE_MIN_CORRELATION]
    report = {"candidates": len(objects), "tolerance": AVERAGE_TOLERANCE, "min_correlation": AVERAGE_MIN_CORRELATION,
              "margin": AVERAGE_MARGIN, "correlation": [round(a.correlation, 4) for a in aligned], "chi2_best": float(chi2[0])}
    kept = dict(report, object=best, used=1, chi2=float(chi2[0]), chi2_average=None)
    if not aligned:
        return dict(kept, note=f"no other start within {AVERAGE_TOLERANCE:.0%} of the best chi² {chi2[0]:.4g}; kept the best start")
    if not agreeing:
        return dict(kept, note=(f"the starts converged to different solutions (correlation with the best after alignment "
                                f"{min(a.correlation for a in aligned):.3f}-{max(a.correlation for a in aligned):.3f}, "
                                f"below {AVERAGE_MIN_CORRELATION}); kept the best start"))
    average = np.mean([best] + [a.aligned for a in agreeing], axis=0)
    chi2_avg = float(measurement.chi2(torch.from_numpy(average.astype(np.complex64)).to(measurement.device).unsqueeze(0))[0])
    if chi2_avg > (1 + AVERAGE_MARGIN) * chi2[0]:
        return dict(kept, chi2_average=chi2_avg, note=(f"the average of {len(agreeing) + 1} starts has chi² {chi2_avg:.4g}, "
                                                       f"more than {AVERAGE_MARGIN:.0%} above the best start's {chi2[0]:.4g}; "
                                                       "kept the best start"))
    return dict(report, object=average, used=len(agreeing) + 1, chi2=chi2_avg, chi2_average=chi2_avg, note="")


BYTES_PER_VOXEL = {"measurement": 12, "per_batched_start": 64, "per_start": 24}
"""Working set of phase retrieval per voxel: the measurement (intensity, amplitude, mask), each
start iterated at once (object, projector buffers, support, average, temporaries: complex64),
and each start kept until the best is chosen (its initial values and final object)."""


def check_memory(voxels: int, batch: int, starts: int, device: torch.device) -> None:
    """Refuse, before allocating, a reconstruction whose working set exceeds the memory
    available now (host memory on a CPU, free device memory on a GPU)."""
    need = voxels * (BYTES_PER_VOXEL["measurement"] + batch * BYTES_PER_VOXEL["per_batched_start"]
                     + starts * BYTES_PER_VOXEL["per_start"])
    have = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    check_fits(need, f"a {voxels:,}-voxel pattern with {starts} start(s) ({batch} at once)", available=have,
               hint=" (fewer starts, or another --device)")


CPU_BATCH_VOXELS = 2**17
"""Patterns of at most this many voxels iterate as one batch on a CPU too (random starts, the
patterns of a stack, a network call's refinements): a small pattern's iteration is mostly
per-call overhead, which the batch shares, while the fused loops compute each item as they
would alone (the same results). Measured on 2 cores, default recipe, batch of N against one at
a time: 8 × 64² 4.6-4.8×, 8 × 128² 2.0-2.7×, 4 × 256² 1.4-1.6×, 4 × 64³ 0.96-1.14×."""


CPU_BATCH_PATTERNS = 64
"""Most patterns of a stack iterated together on a CPU: the overhead is shared by then (256
64² patterns of the stack benchmark: 60 patterns/s in batches of 64 or 256, 56 in batches of
16, 38 in batches of 8), and results reach the file and the progress bar batch by batch."""


def batch_pays(voxels: int, device: torch.device | str) -> bool:
    """Whether patterns (or starts) of ``voxels`` voxels iterate as one batch by default: on a
    GPU, where a batch costs little more than one; on a CPU up to :data:`CPU_BATCH_VOXELS`."""
    return torch.device(device).type == "cuda" or voxels <= CPU_BATCH_VOXELS


def stack_batch(voxels: int, device: torch.device | str) -> int:
    """Patterns of ``voxels`` voxels iterated as one state by default when several are given
    (a stack, several inputs): where a batch pays, what half the memory holds
    (:func:`patterns_per_batch`; at most :data:`CPU_BATCH_PATTERNS` on a CPU), else 1."""
    if not batch_pays(voxels, device):
        return 1
    fits = patterns_per_batch(voxels, device)
    return fits if torch.device(device).type == "cuda" else min(fits, CPU_BATCH_PATTERNS)


def draw_seed() -> int:
    """A random start's seed when none is given (drawn here so that it can be recorded and the
    run repeated)."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def patterns_per_batch(voxels: int, device: torch.device | str) -> int:
    """How many patterns of ``voxels`` each one state may iterate together: what half the
    memory available now (free GPU memory, or host memory) holds at the working set of a
    batched pattern (:data:`BYTES_PER_VOXEL`), at least one."""
    dev = torch.device(device)
    have = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else available_memory()
    return max(1, int(have // 2 // (voxels * (BYTES_PER_VOXEL["measurement"] + BYTES_PER_VOXEL["per_batched_start"]))))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phase_retrieval(
    intensity: np.ndarray | torch.Tensor | Measurement,
    recipe: str | Sequence[Step] = DEFAULT_RECIPE,
    starts: int = 1,
    mask: np.ndarray | torch.Tensor | None = None,
    support: np.ndarray | torch.Tensor | None = None,
    initial: np.ndarray | torch.Tensor | None = None,
    average_best: int = 1,
    device: str | torch.device | None = "cpu",
    seed: int | None = None,
    progress: bool = True,
    batch: int | None = None,
    until_converged: bool = False,
) -> Result:
    """Reconstruct a complex object from one diffraction pattern.

    Parameters
    ----------
    intensity : array ``(*spatial)``, 2D or 3D, or a :class:`~cdinn.retrieval.state.Measurement`
        Measured intensity, zero frequency at the array centre (with a Measurement, ``mask``
        is the Measurement's).
    recipe : str or list of Step
        Schedule in the recipe language (:mod:`cdinn.retrieval.recipe`).
    starts : int
        Number of random starts.
    mask : array, optional
        Non-zero where a pixel was not measured; those pixels are left free.
    support : bool array, optional
        Initial support; default: from the autocorrelation of the pattern.
    initial : complex array, optional
        Initial object (e.g. a network prediction), centred. Excludes ``starts > 1``.
    average_best : int
        Consider the ``average_best`` starts of lowest chi² for averaging (:func:`average_starts`:
        aligned; those within a chi² tolerance of the best that found the same solution);
        1 keeps the best start alone. ``provenance['averaging']`` records what was done.
    device : str or torch.device
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a Measurement's own device wins (its arrays
        are there already).
    seed : int, optional
        Seed of the random starts; drawn (and recorded) when not given.
    progress : bool
        Show a progress bar.
    batch : int, optional
        Starts iterated together as one batch. Default: all of them where a batch pays
        (:func:`batch_pays`: a GPU, or a CPU for small patterns; with ``until_converged`` on a
        CPU one at a time, so that it can stop early), else one at a time (a large pattern's
        working set leaves the cache: 4 starts of 128³ as one batch took 1.45× the time of
        running them one after another). The result does not depend on it (unless
        ``until_converged``).
    until_converged : bool
        Start no further batch of starts once one start's chi² is at or below the
        counting-noise floor (:func:`cdinn.physics.noise.noise_floor_chi2`: it fits as well
        as the true object would). ``starts`` is then the most that run; the provenance
        records ``starts_run``. Patterns that are not photon counts have no floor: all starts run.

    Returns
    -------
    Result
        The best (or averaged) object, centred; its support; its chi²; the chi² history of
        every start (``history['chi2']`` has shape ``(iterations, starts)``); provenance.
    """
    t0 = time.perf_counter()
    dev = intensity.device if isinstance(intensity, Measurement) else resolve_device(device)
    steps = parse_recipe(recipe) if isinstance(recipe, str) else list(recipe)
    if starts < 1:
        raise InputError(f"starts must be >= 1, got {starts}")
    if initial is not None and starts > 1:
        raise InputError("an initial object fixes the start: use starts=1")
    if not 1 <= average_best <= starts:
        raise InputError(f"average_best must be between 1 and starts={starts}, got {average_best}")

    voxels = int(np.prod(np.shape(intensity.intensity if isinstance(intensity, Measurement) else intensity)))
    if batch is None:  # a CPU runs starts one at a time under until_converged, so that it can stop early
        batch = starts if batch_pays(voxels, dev) and not (until_converged and dev.type == "cpu") else 1
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    check_memory(voxels, min(batch, starts), starts, dev)
    measurement = intensity if isinstance(intensity, Measurement) else Measurement(intensity, mask, dev)
    if seed is None:
        seed = draw_seed()
    x, sup = _starts(measurement, starts, seed, support, initial)
    floor = measurement.noise_floor
    states, chi2s = [], []
    for i in range(0, starts, batch):
        states.append(run(State.from_object(measurement, x[i:i + batch], sup[i:i + batch]), steps, progress=progress,
                          label="phase retrieval"))
        chi2s.append(states[-1].chi2())
        if until_converged and floor is not None and float(chi2s[-1].min()) <= floor:
            break
    final_chi2 = torch.cat(chi2s)
    history = np.concatenate([s.chi2_history() for s in states], axis=1)
    _sync(dev)
    t_loop = time.perf_counter() - t0
    return _result(measurement, recipe, steps, torch.cat([s.objects() for s in states]),
                   torch.cat([s.supports() for s in states]), final_chi2, history, starts=starts,
                   until_converged=until_converged, average_best=average_best, seed=seed,
                   initial=initial is not None, seconds=(time.perf_counter() - t0, t_loop))


def phase_stack(
    stack: np.ndarray | torch.Tensor,
    recipe: str | Sequence[Step] = DEFAULT_RECIPE,
    mask: np.ndarray | torch.Tensor | None = None,
    support: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device | None = "cpu",
    seed: int | None = None,
    batch: int | None = None,
) -> Iterator[Result]:
    """Phase retrieval of N patterns ``(N, *spatial)``, one random start each; the results in
    order, each as soon as its batch is done.

    Pattern ``i`` starts from ``seed + i``, as ``phase_retrieval(stack[i], seed=seed + i)``
    would, and gets the same :class:`Result` (the same numbers where the batch's arithmetic
    is the single pattern's: measured bit for bit up to 128² on a CPU; larger FFTs may round
    differently in a batch); the patterns of a batch iterate as one state
    (:meth:`Measurement.stacked`: every operator runs once on the batch). ``batch``: patterns
    per state, default :func:`stack_batch`. ``mask``: shared ``(*spatial)`` or per pattern.
    """
    dev = resolve_device(device)
    steps = parse_recipe(recipe) if isinstance(recipe, str) else list(recipe)
    if seed is None:
        seed = draw_seed()
    voxels = int(np.prod(np.shape(stack)[1:]))
    if batch is None:
        batch = stack_batch(voxels, dev)
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    per_pattern = mask is not None and np.shape(mask) == np.shape(stack)
    if batch == 1:  # one pattern at a time: phase_retrieval itself
        for i in range(len(stack)):
            yield phase_retrieval(stack[i], recipe, mask=mask[i] if per_pattern else mask, support=support, device=dev,
                                  seed=seed + i, progress=False)
        return
    for lo in range(0, len(stack), batch):
        check_memory(voxels, min(batch, len(stack) - lo), 1, dev)
        block = stack[lo:lo + batch]  # one read per batch: a mapped or HDF5 stack reads these frames only
        measurements = [Measurement(block[k], mask[lo + k] if per_pattern else mask, dev) for k in range(len(block))]
        yield from phase_batch(measurements, recipe, [seed + lo + k for k in range(len(measurements))], support)


def phase_batch(measurements: Sequence[Measurement], recipe: str | Sequence[Step], seeds: Sequence[int],
                support: np.ndarray | torch.Tensor | None = None) -> list[Result]:
    """Phase retrieval of patterns of one shape, one random start each (pattern ``k`` from
    ``seeds[k]``), iterating as one state (:meth:`Measurement.stacked`: every operator runs
    once on the batch); the :class:`Result` of each, as ``phase_retrieval(seed=seeds[k])``
    gives it (on a CPU the fused loops compute each item as they would alone)."""
    steps = parse_recipe(recipe) if isinstance(recipe, str) else list(recipe)
    t = time.perf_counter()
    starts = [_starts(m, 1, s, support) for m, s in zip(measurements, seeds)]
    state = State.from_object(Measurement.stacked(measurements), torch.cat([x for x, _ in starts]),
                              torch.cat([sup for _, sup in starts]))
    run(state, steps)
    objects, supports, chi2, history = state.objects(), state.supports(), state.chi2(), state.chi2_history()
    _sync(state.measurement.device)
    share = (time.perf_counter() - t) / len(measurements)
    return [_result(m, recipe, steps, objects[k:k + 1], supports[k:k + 1], chi2[k:k + 1], history[:, k:k + 1],
                    starts=1, until_converged=False, average_best=1, seed=seeds[k], initial=False, seconds=(share, share))
            for k, m in enumerate(measurements)]


def _starts(measurement: Measurement, starts: int, seed: int, support: np.ndarray | torch.Tensor | None = None,
            initial: np.ndarray | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting objects ``(starts, *spatial)`` and their supports of one pattern: ``initial``,
    or random amplitudes and phases drawn from ``seed`` inside ``support`` (default: the
    autocorrelation's)."""
    dev, shape = measurement.device, measurement.shape
    if support is None:
        sup = autocorrelation_support(measurement.intensity, mask=measurement.mask)
    else:
        sup = as_tensor(support, dev).to(torch.bool)
        if tuple(sup.shape) != shape:
            raise InputError(f"support shape {tuple(sup.shape)} does not match the pattern shape {shape}")
    if not bool(sup.any()):
        raise InputError("the support is empty: nothing could be reconstructed (give a support with some pixels set)")
    if initial is not None:
        x = as_tensor(initial, dev).to(torch.complex64)
        if tuple(x.shape) != shape:
            raise InputError(f"initial object shape {tuple(x.shape)} does not match the pattern shape {shape}")
        x = x.unsqueeze(0)
    else:
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seed))
        amp = torch.rand((starts,) + shape, generator=gen, device=dev)
        phase = torch.rand((starts,) + shape, generator=gen, device=dev) * (2 * np.pi)
        x = torch.polar(amp, phase) * sup
    return x, sup.unsqueeze(0).expand((starts,) + shape)


def _result(measurement: Measurement, recipe: str | Sequence[Step], steps: Sequence[Step], objects: torch.Tensor,
            supports: torch.Tensor, final_chi2: torch.Tensor, history: np.ndarray, *, starts: int,
            until_converged: bool, average_best: int, seed: int, initial: bool,
            seconds: tuple[float, float]) -> Result:
    """The :class:`Result` of one pattern's starts: the best (or averaged) object, centred on its
    support; ``seconds`` = (total, iterations)."""
    t0 = time.perf_counter()
    objs, sups = centre_on_support(objects, supports)
    order = torch.argsort(final_chi2).tolist()
    best = order[0]
    obj = objs[best].cpu().numpy()
    support_out = sups[best].cpu().numpy()
    chi2_out = float(final_chi2[best])
    if not np.any(obj):
        raise InputError(f"the reconstruction is empty (all zero, chi² {chi2_out:.3g}): the schedule's support update "
                         "removed the whole object; use a lower SUP threshold or a larger support")
    averaging = None
    if average_best > 1:
        candidates = [objs[i] for i in order[:average_best]]
        averaging = average_starts(measurement, candidates, final_chi2[order[:average_best]].tolist())
        if averaging["used"] > 1:
            obj = averaging.pop("object")
            support_out = (np.abs(obj) > 0) & support_out
            chi2_out = averaging["chi2"]
        else:
            averaging.pop("object")

    floor = measurement.noise_floor
    n_iter = sum(s.name in ITERATING for s in steps)
    total = seconds[0] + time.perf_counter() - t0
    provenance = {
        "method": "phase_retrieval",
        "recipe": recipe if isinstance(recipe, str) else " * ".join(str(s) for s in reversed(steps)),
        "iterations": n_iter,
        "starts": starts,
        "starts_run": len(final_chi2),
        "until_converged": until_converged,
        "average_best": average_best,
        "averaging": averaging,
        "best_start": best,
        "chi2_noise_floor": floor,
        "chi2_over_noise_floor": None if floor is None else chi2_out / floor,
        "seed": seed,
        "device": str(measurement.device),
        "threads": torch.get_num_threads(),
        "masked_pixels": 0 if measurement.mask is None else int(measurement.mask.sum()),
        "initial": "given" if initial else "random",
        "timings": {"total_s": total, "iterations_s": seconds[1],
                    "per_iteration_s": seconds[1] / max(n_iter, 1)},
        "version": cdinn.__version__,
    }
    return Result(
        object=obj.astype(np.complex64),
        support=support_out.astype(bool),
        chi2=chi2_out,
        history={"chi2": history},
        provenance=provenance,
        extras={"chi2_starts": final_chi2.cpu().numpy()},
    )
