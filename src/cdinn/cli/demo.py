"""``cdinn demo``: simulate a strained crystal, invert it with the shipped 3D network, refine,
compare with classical phase retrieval, and draw one page."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument
from cdinn.errors import InputError
from cdinn.io import check_output, write_result
from cdinn.models import load_model
from cdinn.physics import align, phase_error, ssim_amplitude
from cdinn.pipeline import DEFAULT_REFINE, invert
from cdinn.report import comparison_figure
from cdinn.retrieval import DEFAULT_RECIPE, phase_retrieval, resolve_device
from cdinn.simulate import faceted_crystal, simulate_pattern

DEFAULT_MODEL = "autophasenn-64"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser(
        "demo",
        help=COMMANDS["demo"],
        description="Simulate a faceted, strained crystal's Bragg CDI pattern with Poisson noise, invert it with "
        "the shipped 3D network, refine the prediction, run the default phase retrieval for comparison, and "
        "write a one-page figure and a summary table.",
    )
    add_threads_argument(p)
    p.add_argument("-o", "--output", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"network (default {DEFAULT_MODEL}); 'none' skips it")
    p.add_argument("--refine", default=DEFAULT_REFINE, help=f"refinement recipe after the network (default {DEFAULT_REFINE!r})")
    p.add_argument("--size", type=int, default=64, help="pattern size per axis (default 64)")
    p.add_argument("--photons", type=float, default=1e7, help="total photons in the pattern (default 1e7)")
    p.add_argument("--oversampling", type=float, default=3.0, help="linear oversampling of the pattern (default 3, as at a Bragg CDI beamline)")
    p.add_argument("--starts", type=int, default=4, help="random starts of phase retrieval (default 4)")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulated crystal and the starts")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto: a CUDA GPU when present)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn demo``."""
    out = Path(args.output)
    device = resolve_device(args.device)
    shape = (args.size,) * 3
    if args.size < 16 or args.size > 256 or not 1.5 <= args.oversampling <= 8 or not args.photons > 0 or args.starts < 1:
        raise InputError("demo: --size must be 16-256, --oversampling 1.5-8, --photons positive, --starts at least 1")
    check_output(out, folder=True)
    out.mkdir(parents=True, exist_ok=True)
    truth = faceted_crystal(shape, oversampling=args.oversampling, phase_range=3.0, seed=args.seed).numpy()
    pattern = simulate_pattern(truth, photons=args.photons, seed=args.seed).numpy()
    np.save(out / "demo_pattern.npy", pattern)
    print(f"simulated a faceted strained crystal: pattern {shape}, {pattern.sum():.3g} photons, max {pattern.max():.3g} counts")

    rows, panels, curves = [], [("truth", truth)], []

    def score(label: str, obj: np.ndarray, seconds: float, chi2: float) -> None:
        aligned = align(obj, truth).aligned
        rows.append((label, f"{seconds:.3f}", f"{chi2:.3e}", f"{ssim_amplitude(aligned, truth):.3f}", f"{phase_error(obj, truth):.3f}"))
        panels.append((label, aligned))

    if args.model.lower() != "none":
        model = load_model(args.model, device)
        nn_only = invert(pattern, model, refine="none", device=device)
        score(f"network ({args.model})", nn_only.object, nn_only.provenance["timings"]["total_s"], nn_only.chi2)
        refined = invert(pattern, model, refine=args.refine, device=device, progress=not args.quiet)
        iterations = len(refined.history["chi2"])
        score(f"network + {iterations} it.", refined.object, refined.provenance["timings"]["total_s"], refined.chi2)
        write_result(out / "demo_network.h5", refined)
        curves.append((f"network + {refined.provenance['refine']}", refined.history["chi2"]))

    t0 = time.perf_counter()
    pr = phase_retrieval(pattern, DEFAULT_RECIPE, starts=args.starts, device=device, seed=args.seed, progress=not args.quiet)
    score(f"PR-{pr.provenance['iterations']} x{args.starts}", pr.object, time.perf_counter() - t0, pr.chi2)
    write_result(out / "demo_phase_retrieval.h5", pr)
    curves.append(("phase retrieval (best start)", pr.history["chi2"][:, int(pr.provenance["best_start"])]))

    header = ("method", "time (s)", "chi2", "amp SSIM", "phase err (rad)")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    fig = comparison_figure(
        out / "demo.png", panels, pattern=pattern, histories=curves,
        title=f"cdinn demo: 3D faceted strained crystal, {args.photons:.0e} photons (phase in rad, twin/shift removed)",
    )
    print(f"wrote {fig} and the results in {out}/")
    return 0
