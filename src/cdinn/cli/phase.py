"""``cdinn phase``: classical phase retrieval of one or many patterns."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument
from cdinn.errors import InputError
from cdinn.io import (RESULT_SUFFIXES, Result, check_output, check_result_path, read_array, read_pattern, read_stack,
                      StackWriter, write_result)
from cdinn.io.readers import split_key
from cdinn.prepare.cxi import input_record
from cdinn.retrieval import DEFAULT_RECIPE, parse_recipe, phase_retrieval, phase_stack, resolve_device
from cdinn.retrieval.engine import draw_seed, phase_batch, stack_batch
from cdinn.retrieval.state import Measurement
from cdinn.retrieval import recipe as recipe_module

EPILOG = f"""recipe language:
{recipe_module.__doc__.split("Grammar", 1)[1]}
default recipe: {DEFAULT_RECIPE}

inputs: .npy, .npz (key 'data' or the single array), .h5/.hdf5/.cxi/.nxs (CXI
/entry_1/data_1/data with its mask, or FILE::KEY), .tif/.tiff (multi-page = 3D),
a directory of TIFF frames (one per rocking step), .edf.
masks: non-zero marks a pixel that was not measured (CXI convention).
With several inputs, OUT is a directory holding one result per input named after it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``phase`` sub-command."""
    p = sub.add_parser(
        "phase",
        help=COMMANDS["phase"],
        description="Reconstruct complex objects from diffraction patterns by iterative phase retrieval.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pattern_arguments(p, seed_help="seed of the random starts")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="schedule in the recipe language (see below)")
    p.add_argument("--starts", type=int, default=1, help="random starts, the best kept by chi² (default 1; one batch on a GPU and for small patterns on a CPU, else one after another)")
    p.add_argument("--average", type=int, default=1, metavar="K", help="average the K best starts after aligning them: those within 10 %% of the best chi² that "
                   "found the same solution (correlation >= 0.98); otherwise the best start is kept and the reason printed")
    p.add_argument("--until-converged", action="store_true",
                   help="with --starts N: start no more once one reaches the counting-noise floor (fits as well as the "
                        "true object would; photon-count data only), so N is the most that run")
    p.add_argument("--support", help="initial support file (non-zero inside; default: from the autocorrelation)")
    p.set_defaults(run=run)


def add_pattern_arguments(p: argparse.ArgumentParser, seed_help: str) -> None:
    """The options every command that reads patterns and writes results shares."""
    p.add_argument("data", nargs="+", help="pattern file(s) or TIFF frame directories")
    p.add_argument("-o", "--output", required=True, help=f"result file ({', '.join(RESULT_SUFFIXES)}) or directory")
    p.add_argument("--mask", help="bad-pixel mask file (same shape as the patterns)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto: a CUDA GPU when present)")
    p.add_argument("--seed", type=int, default=None, help=seed_help)
    p.add_argument("--format", default=".h5", choices=RESULT_SUFFIXES, help="result format in directory mode")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stack", action="store_true",
                   help="the input holds N patterns along its first axis; one result file holds the N reconstructions "
                        "(object and support (N, ...), chi2 (N,))")
    add_threads_argument(p)


def output_paths(inputs: list[str], output: str, suffix: str, also_read: tuple[str | None, ...] = ()) -> list[Path]:
    """Where each input's result goes, checked before any work: writable, and none of the
    files the command reads (the inputs and ``also_read``: mask, support)."""
    out = Path(output)
    if len(inputs) == 1 and out.suffix:
        paths = [check_output(check_result_path(out), [*inputs, *also_read])]
    else:
        check_output(out, folder=True)
        if out.exists() and not out.is_dir():
            raise InputError(f"output {out}: several inputs need OUT to be a directory")
        stems = [split_key(i)[0].stem or split_key(i)[0].name for i in inputs]
        if len(set(stems)) != len(stems):
            raise InputError("several inputs share a file name; their results would overwrite each other")
        paths = [check_output(out / f"{stem}{suffix}", [*inputs, *also_read]) for stem in stems]
    return paths


def stack_input(args: argparse.Namespace, paths: list[Path]):
    """The one stacked input of ``--stack`` (its patterns and mask)."""
    if len(args.data) != 1 or not paths[0].suffix:
        raise InputError("--stack takes one input file (N patterns along its first axis) and one result file (-o NAME.h5)")
    return read_stack(args.data[0], args.mask)


def _phase_stack(args: argparse.Namespace, steps, device, support, paths: list[Path]) -> int:
    """``cdinn phase --stack``: the patterns one after another (CPU; as batches on a GPU when
    each has one start) into one result file."""
    stack, mask = stack_input(args, paths)
    t0 = time.perf_counter()
    bar = tqdm(total=len(stack), desc="patterns", disable=args.quiet, leave=False)
    if args.starts == 1 and args.average == 1 and not args.until_converged:
        found = phase_stack(stack, args.recipe, mask, support, device, args.seed)
    else:
        found = (phase_retrieval(pattern, steps, starts=args.starts, support=support, average_best=args.average,
                                 mask=mask[i] if mask is not None and mask.shape == stack.shape else mask, device=device,
                                 seed=None if args.seed is None else args.seed + i, progress=False,
                                 until_converged=args.until_converged) for i, pattern in enumerate(stack))
    with StackWriter(paths[0], len(stack)) as writer:
        for result in found:
            writer.add(result)
            bar.update()
        bar.close()
        provenance = writer.close(time.perf_counter() - t0, {**input_record(args.data[0], stack.shape), "recipe": args.recipe})
    print(f"{args.data[0]}: {len(stack)} patterns, chi2 median {provenance['chi2_median']:.4g}"
          f"{stack_floor_text(provenance)} ({provenance['timings']['total_s']:.2f} s) -> {paths[0]}")
    return 0


def _phase_together(args: argparse.Namespace, steps, device, support, loaded: dict) -> dict[str, Result]:
    """Several inputs of one shape, one start each, iterated as one batch where that pays
    (:func:`cdinn.retrieval.engine.stack_batch`: small patterns on a CPU, any on a GPU): each
    result is the one ``phase_retrieval`` gives that input alone with the same seed. A batch
    that fails (a support of another shape, an empty one) is left to the inputs one by one,
    which report their own errors."""
    if len(loaded) < 2 or args.starts != 1 or args.average != 1 or args.until_converged:
        return {}
    groups: dict[tuple[int, ...], list[str]] = {}
    for source, (intensity, _) in loaded.items():
        groups.setdefault(intensity.shape, []).append(source)
    done: dict[str, Result] = {}
    for shape, sources in groups.items():
        size = stack_batch(int(np.prod(shape)), device)
        if len(sources) < 2 or size < 2:
            continue
        for lo in range(0, len(sources), size):
            part = sources[lo:lo + size]
            # a drawn seed per input, as phase_retrieval draws one per call
            seeds = [draw_seed() if args.seed is None else args.seed for _ in part]
            try:
                results = phase_batch([Measurement(*loaded[s], device) for s in part], steps, seeds, support)
            except InputError:
                continue
            done.update(zip(part, results))
    return done


def _starts_text(result: Result, starts: int) -> str:
    """``4 start(s)``, or ``1 of 4 starts (converged)`` when ``--until-converged`` stopped early."""
    ran = result.provenance.get("starts_run", starts)
    return f"{starts} start(s)" if ran == starts else f"{ran} of {starts} starts (converged)"


def stack_floor_text(provenance: dict) -> str:
    """``, 3 above their counting-noise floor`` for a stack of photon counts (its
    :meth:`~cdinn.io.StackWriter.close` provenance), else nothing."""
    above = provenance.get("above_noise_floor")
    return "" if above is None else f", {above} above their counting-noise floor"


def noise_floor_text(result: Result) -> str:
    """`` (1.02x the noise floor)`` for a result of photon counts, else nothing."""
    ratio = result.provenance.get("chi2_over_noise_floor")
    return "" if ratio is None else f" ({ratio:.2f}x the counting-noise floor)"


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn phase``."""
    steps = parse_recipe(args.recipe)  # fail on a bad recipe before reading any data
    device = resolve_device(args.device)
    if args.starts < 1:
        raise InputError("--starts must be at least 1")
    paths = output_paths(args.data, args.output, args.format, (args.mask, args.support))
    support = None if args.support is None else read_array(args.support)[0] != 0
    if args.stack:
        return _phase_stack(args, steps, device, support, paths)
    failures = 0
    loaded = {}
    if len(args.data) > 1:
        for source in args.data:  # every input checked before the first result is written
            loaded[source] = read_pattern(source, args.mask)
    batched = _phase_together(args, steps, device, support, loaded)
    for source, dest in zip(args.data, paths):
        try:
            intensity, mask = loaded[source] if source in loaded else read_pattern(source, args.mask)
            result = batched.get(source) or phase_retrieval(
                intensity,
                steps,
                starts=args.starts,
                mask=mask,
                support=support,
                average_best=args.average,
                device=device,
                seed=args.seed,
                progress=not args.quiet,
                until_converged=args.until_converged,
            )
            result.provenance.update({**input_record(source, intensity.shape), "recipe": args.recipe})
            if mask is not None:
                result.extras["mask"] = mask
            write_result(dest, result)
        except InputError as exc:
            if len(args.data) == 1:
                raise
            failures += 1
            print(f"cdinn phase: error: {exc}", file=sys.stderr)
            continue
        t = result.provenance["timings"]["total_s"]
        averaging = result.provenance.get("averaging") or {}
        averaged = f", {averaging['used']} averaged" if averaging.get("used", 1) > 1 else ""
        print(f"{source}: chi2 {result.chi2:.4g}{noise_floor_text(result)}  ({result.provenance['iterations']} it, {_starts_text(result, args.starts)}{averaged}, "
              f"{t:.2f} s) -> {dest}")
        if averaging.get("note"):
            print(f"  --average: {averaging['note']}")
    return 2 if failures else 0
