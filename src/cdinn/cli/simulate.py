"""``cdinn simulate``: write a sharded HDF5 training set of simulated patterns."""

from __future__ import annotations

import argparse
import time

import numpy as np

from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument
from cdinn.errors import InputError
from cdinn.io.atomic import check_output
from cdinn.io.readers import check_fits
from cdinn.simulate.generators import KINDS, SimulationConfig

EPILOG = """kinds:
  polygons         2D convex polygons with sine-grating/Gaussian phase (CDI NN)
  superellipsoids  3D rotated superellipsoids, Gaussian-correlated phase in [0, 1] (3D CNN)
  atomistic        3D FCC gold crystals relaxed with EMT (ase + asap3), strained up to 1 %;
                   each crystal gives two rows: strained, then its zero-phase control
  faceted          2D or 3D faceted continuum crystals with a smooth strain phase (fast)

The directory gets manifest.json and shard-NNNNN.h5 files of --shard-size samples.
Rerunning the same command resumes an interrupted run; --shard I/N writes only the shards
j with j % N == I, so N jobs of an array (I = 0..N-1) make the same dataset together.
"""


def _range(text: str) -> tuple[float, float]:
    """``LO:HI`` or a single value."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI or a number, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LO:HI, got {text!r}")
    return parts[0], parts[1]


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, got {text!r}") from None
    return i, n


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` sub-command."""
    p = sub.add_parser(
        "simulate",
        help=COMMANDS["simulate"],
        description="Simulate objects and their diffraction patterns into a sharded HDF5 dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_threads_argument(p)
    p.add_argument("kind", choices=KINDS, help="object family")
    p.add_argument("-n", "--samples", type=int, required=True, help="number of samples (crystals for atomistic)")
    p.add_argument("-o", "--output", required=True, help="dataset directory")
    p.add_argument("--object-size", type=int, default=32, help="object grid side in pixels (default 32)")
    p.add_argument("--oversampling", type=float, default=2.0, help="zero-padding factor of the pattern (default 2)")
    p.add_argument("--photons", type=_range, default=None, metavar="LO:HI", help="Poisson noise, total counts drawn log-uniformly")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2; 0 = in this process)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="write only shards j with j %% N == I")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard file (default 1000)")
    p.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="dimensions of the faceted kind (default 3)")
    p.add_argument("--augment", action="store_true", help="random right-angle rotations and flips")
    p.add_argument(
        "--resample", type=_range, default=None, metavar="LO:HI", help="Fourier-resampling factors <= 1 (oversampling variants)"
    )
    p.add_argument("--wrap-phase", action="store_true", help="store phases wrapped into (-pi, pi]")
    p.add_argument("--cells", type=int, default=None, help="atomistic: FCC cube edge in unit cells (default object-size*2-15)")
    p.add_argument("--no-control", action="store_true", help="atomistic: omit the unstrained control rows")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn simulate``."""
    from cdinn.simulate.dataset import write_dataset

    options: dict = {}
    if args.kind == "atomistic":
        try:
            import asap3  # noqa: F401
        except ImportError:
            raise InputError("the atomistic kind needs ase and asap3: pip install ase asap3") from None
        if args.cells is not None:
            options["cells"] = args.cells
        if args.no_control:
            options["control"] = False
    try:
        config = SimulationConfig(
            args.kind,
            object_size=args.object_size,
            oversampling=args.oversampling,
            photons=args.photons,
            seed=args.seed,
            ndim=args.ndim,
            augment=args.augment,
            resample=args.resample,
            wrap_phase=args.wrap_phase,
            options=options,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    check_output(args.output, folder=True)
    # A sample's working set: the padded complex object, its transform and the pattern (~ a dozen
    # float32 copies of the pattern grid), in each worker process.
    pixels = float(np.prod(config.pattern_shape))
    check_fits(pixels * 4 * 12 * max(1, args.workers), f"a {' x '.join(map(str, config.pattern_shape))} pattern per sample")
    t0 = time.perf_counter()
    made = write_dataset(
        args.output, config, args.samples, args.shard_size, args.shard, args.workers, progress=not args.quiet
    )
    dt = time.perf_counter() - t0
    rate = f", {made / dt:.1f} samples/s" if made else ""
    print(f"{args.output}: {made} new sample(s) in {dt:.1f} s{rate}")
    return 0
