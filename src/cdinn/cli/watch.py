"""``cdinn watch``: invert every scan as it lands in a folder; optionally a live page."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument
from cdinn.errors import InputError

EPILOG = """Every new file in IN_DIR that `cdinn invert` reads (.npy, .npz, .h5/.cxi, .tif, .edf) is
taken once complete: its size and time unchanged for --settle seconds. Dot-files and *.part /
*.tmp are never taken: write under such a name and rename when done. Results go to OUT_DIR
named after their input, as `cdinn invert` writes them; OUT_DIR/.cdinn-watch.json records every
file's state, so a restart processes only what is new. Ctrl-C (or SIGTERM) finishes the file in
progress, writes the ledger and exits 0. --serve PORT shows the scans live on
http://127.0.0.1:PORT (read-only; Plotly served locally, no internet needed).
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``watch`` sub-command."""
    from cdinn.io import RESULT_SUFFIXES
    from cdinn.pipeline.inversion import DEFAULT_REFINE
    from cdinn.retrieval.recipe import DEFAULT_RECIPE

    p = sub.add_parser("watch", help=COMMANDS["watch"], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Invert every pattern that lands in IN_DIR with a warm network (or phase retrieval).")
    add_threads_argument(p)
    p.add_argument("in_dir", help="folder the patterns land in")
    p.add_argument("-o", "--output", required=True, help="folder of the results (and the ledger); not IN_DIR")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--model", help="network: shipped model name, .pt file or run directory")
    how.add_argument("--phase", action="store_true", help="classical phase retrieval instead of a network")
    p.add_argument("--refine", default=DEFAULT_REFINE, help=f"refinement after the network (default {DEFAULT_REFINE!r})")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="phase-retrieval recipe with --phase (default: cdinn phase's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts (--phase) or DIP (default 0)")
    p.add_argument("--format", default=".h5", choices=RESULT_SUFFIXES, help="result format (default .h5)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--settle", type=float, default=0.3, help="seconds a file must stay unchanged before it is taken (default 0.3)")
    p.add_argument("--max-batch", type=int, default=16, help="most files taken at once; one network batch per shape (default 16)")
    p.add_argument("--serve", type=int, metavar="PORT", help="serve the live page on this port")
    p.add_argument("--host", default="127.0.0.1", help="address of the page (default 127.0.0.1: this machine only)")
    p.add_argument("--retry-later", action=argparse.BooleanOptionalAction, default=True,
                   help="with the default refinement: write each scan's result at once and run the retries of a "
                        "stagnated one (chi² above the counting-noise floor) while no scan waits, replacing the result "
                        "when they improve it (default); --no-retry-later retries before writing, as cdinn invert does")
    p.add_argument("--once", action="store_true", help="process the files already there, then exit (improvements included)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per result")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn watch``."""
    from cdinn.retrieval import parse_recipe, resolve_device
    from cdinn.watch import Watcher, later_processor, network_processor, phase_processor

    in_dir, out_dir = Path(args.in_dir), Path(args.output)
    if not in_dir.is_dir():
        raise InputError(f"{in_dir}: not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir}: exists and is not a folder")
    if out_dir.resolve() == in_dir.resolve():
        raise InputError("the output folder must not be the watched folder (results would be taken as patterns)")
    if not args.settle >= 0 or args.max_batch < 1:
        raise InputError("--settle must be >= 0 and --max-batch >= 1")
    if args.serve is not None and not 0 < args.serve < 65536:
        raise InputError(f"--serve {args.serve}: not a port number")
    device = resolve_device(args.device)
    later = None
    if args.phase:
        parse_recipe(args.recipe)
        process, method, label = phase_processor(args.recipe, device, seed=args.seed), args.recipe, "phase retrieval"
    else:
        from cdinn.models import load_model
        from cdinn.pipeline import DEFAULT_REFINE, refinement_recipe

        refinement_recipe(args.refine)
        model = load_model(args.model, device)
        deferred = args.retry_later and refinement_recipe(args.refine) == refinement_recipe(DEFAULT_REFINE)
        process = network_processor(model, args.refine, device, seed=args.seed, **({"retry": False} if deferred else {}))
        later = later_processor(model, device, seed=args.seed) if deferred else None
        label = str(model.card.get("name", args.model))
        method = f"{label} + {args.refine}"
    watcher = Watcher(in_dir, out_dir, process, method, label, fmt=args.format, settle=args.settle, max_batch=args.max_batch,
                      log=None if args.quiet else print, later=later)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = None
    if args.serve is not None:
        from cdinn.watch.server import serve

        server = serve(watcher, args.host, args.serve)
        print(f"cdinn watch: live page on http://{args.host}:{args.serve}", file=sys.stderr, flush=True)
    print(f"cdinn watch: {in_dir} -> {out_dir} ({method}); Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        watcher.run(stop, once=args.once)
    finally:
        if server is not None:
            server.should_exit = True
    done = sum(e.state == "done" for e in watcher.ledger.entries.values())
    errors = sum(e.state == "error" for e in watcher.ledger.entries.values())
    print(f"cdinn watch: stopped; {done} done, {errors} error(s) in the ledger {watcher.ledger.path}", file=sys.stderr)
    return 0
