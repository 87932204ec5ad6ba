"""``cdinn invert``: network inversion of one or many patterns, with refinement."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from cdinn.cli import COMMANDS
from cdinn.cli.phase import add_pattern_arguments, noise_floor_text, output_paths, stack_floor_text, stack_input
from cdinn.errors import InputError
from cdinn.io import StackWriter, read_pattern, write_result
from cdinn.models import load_model, shipped_models
from cdinn.models.base import PRECISIONS
from cdinn.pipeline import DEFAULT_REFINE, invert_many, invert_stack, refinement_recipe
from cdinn.pipeline.inversion import DEFAULT_DILATION
from cdinn.prepare.cxi import input_record
from cdinn.retrieval import resolve_device

EPILOG = """refinement: a recipe in the language of cdinn phase (the rightmost factor runs first),
starting from the prediction and its support; OP**N is N steps of OP:
  ER, HIO, RAAR, DM, AVG   projection algorithms        SUP   shrink-wrap support update
  AD(lr=0.02)              automatic-differentiation steps on the object (3D-CDI-NN)
  TL(lr=0.006)             per-pattern unsupervised fine-tuning of the network (transfer learning)
  DIP(lr=0.006)            fitting a randomly initialised copy of the network (untrained network)
  BREAK(below=1.0)         leave the enclosing (...)**N once every chi² is within below x the
                           counting-noise floor (photon counts only)
examples: "ER**50" (the AutoPhaseNN paper's protocol), "ER**20 * AD**10", "ER**10 * TL**3",
"(SUP * ER**10 * HIO**40)**3", "ER**20 * SUP * (ER**10 * HIO**20 * SUP * BREAK)**4";
none = the network alone. The earlier forms er:N, pr:N, ad:N,
tl:N, dip:N chained with '+' still work and are recorded as the recipe they mean.

models: a shipped model name (cdinn models lists them), a .pt file with its .json card, or a
training run directory. Patterns of the same shape go through the network together, in batches sized to the device.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``invert`` sub-command."""
    p = sub.add_parser(
        "invert",
        help=COMMANDS["invert"],
        description="Invert diffraction patterns with a physics-aware network and refine the prediction.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pattern_arguments(p, seed_help="seed of the dip refinement's random network (default 0)")
    p.add_argument("--model", required=True, help="shipped model name, .pt file or run directory")
    p.add_argument("--refine", default=DEFAULT_REFINE, help=f"refinement recipe (default {DEFAULT_REFINE!r}; see below)")
    p.add_argument("--bin", type=int, default=1, help="integer binning of the pattern before the network")
    p.add_argument("--threshold", type=float, default=0.1, help="support threshold of the prediction (default 0.1)")
    p.add_argument("--dilation", type=int, default=DEFAULT_DILATION,
                   help=f"voxels by which the prediction's support grows before refinement (default {DEFAULT_DILATION})")
    p.add_argument("--retry", action=argparse.BooleanOptionalAction, default=None,
                   help="when the refined chi² stays above the counting-noise floor, retry (a wider support and a "
                        "longer schedule, then up to 3 starts of cdinn phase) and keep the lowest chi²; default: with the default "
                        "refinement only")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the network's arithmetic: auto (bf16 where the CPU or GPU computes it natively), fp32 or bf16")
    p.set_defaults(run=run)


def _mask_note(model, masks) -> None:
    """A line on stderr when patterns with unmeasured pixels meet a model that never saw any:
    a hole over the bright centre is what such a model handles worst (docs/design.md)."""
    if model.card.get("data", {}).get("masks") or not any(m is not None and bool(np.any(m)) for m in masks):
        return
    trained = [c["name"] for c in shipped_models() if c.get("data", {}).get("masks") and c["architecture"]["ndim"] == model.ndim]
    hint = f"; trained with masks: {', '.join(trained)}" if trained else ""
    print(f"cdinn invert: note: {model.card.get('name', model.family)} was trained on complete patterns only, "
          f"and these have unmeasured pixels{hint}", file=sys.stderr)


def _invert_stack(args: argparse.Namespace, model, device, paths) -> int:
    """``cdinn invert --stack``: the network in batches, each pattern refined, one result file."""
    stack, mask = stack_input(args, paths)
    _mask_note(model, [mask])
    t0 = time.perf_counter()
    with StackWriter(paths[0], len(stack)) as writer:
        for name, result in invert_stack(stack, mask, model, args.refine, binning=args.bin, threshold=args.threshold,
                                         dilation=args.dilation, device=device, seed=0 if args.seed is None else args.seed,
                                         precision=args.precision, retry=args.retry):
            if isinstance(result, InputError):
                raise InputError(f"pattern {name} of the stack: {result}")
            writer.add(result)
        provenance = writer.close(time.perf_counter() - t0, input_record(args.data[0], stack.shape))
    print(f"{args.data[0]}: {len(stack)} patterns, chi2 median {provenance['chi2_median']:.4g}"
          f"{stack_floor_text(provenance)} ({provenance['timings']['total_s']:.2f} s) -> {paths[0]}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn invert``."""
    refinement_recipe(args.refine)
    device = resolve_device(args.device)
    if args.bin < 1:
        raise InputError("--bin must be at least 1")
    if args.dilation < 0:
        raise InputError("--dilation must not be negative")
    if not 0 < args.threshold < 1:
        raise InputError("--threshold must be between 0 and 1")
    paths = output_paths(args.data, args.output, args.format, (args.mask,))
    model = load_model(args.model, device)
    if args.stack:
        return _invert_stack(args, model, device, paths)
    # Every input is read and checked before the first result is written.
    loaded, failures = {source: read_pattern(source, args.mask) for source in args.data}, 0
    dest_of = dict(zip(args.data, paths))
    _mask_note(model, [m for _, m in loaded.values()])
    for source, result in invert_many(loaded, model, args.refine, binning=args.bin, threshold=args.threshold,
                                      dilation=args.dilation, device=device, seed=0 if args.seed is None else args.seed,
                                      progress=not args.quiet, precision=args.precision,
                                      retry=args.retry):
        if isinstance(result, InputError):
            if len(args.data) == 1:
                raise result
            failures += 1
            print(f"cdinn invert: error: {source}: {result}", file=sys.stderr)
            continue
        result.provenance.update(input_record(source, loaded[source][0].shape))
        write_result(dest_of[source], result)
        stages = " -> ".join(f"{s['stage']} {s['chi2']:.3g}" for s in result.provenance["stages"])
        print(f"{source}: chi2 {stages}{noise_floor_text(result)}  ({result.provenance['timings']['total_s']:.2f} s) -> {dest_of[source]}")
    return 2 if failures else 0
