"""``cdinn prepare``: a measured scan in, a centred, resampled CXI pattern with its geometry out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import cdinn
from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument
from cdinn.errors import InputError
from cdinn.io.atomic import check_output
from cdinn.io.scan import load_scan, parse_roi
from cdinn.physics.geometry import DIFFRACTOMETERS, voxel_sizes
from cdinn.prepare import CENTRES, METHODS, geometry_from_spec, prepare_pattern, write_prepared

EPILOG = """examples:
  # Bragg CDI, APS 34-ID-C, Au 111, scan 54
  cdinn prepare AD34idcTIM2_example/Staff20-1a_S0054 --spec example.spec --scan 54 \\
      --dark dark.tif --flat whitefield.tif --roi 0:256,0:256 --size 64 -o scan54.cxi
  # forward CDI, ESRF ID10 logo: zeros are the beamstop and gaps; centred by symmetry
  cdinn prepare logo5mu_20sec.edf --mask-zeros -o logo.cxi

The output holds /entry_1/data_1/data (the prepared intensity, peak at the array centre),
/entry_1/data_1/mask (non-zero = not measured) and, with a SPEC scan, the diffractometer
geometry of the prepared sampling (read by `cdinn report`).
"""


def _ints(text: str) -> tuple[int, ...] | int:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or comma-separated integers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` sub-command."""
    p = sub.add_parser(
        "prepare",
        help=COMMANDS["prepare"],
        description="Load detector frames (TIFF directory, multi-page TIFF, HDF5/CXI, EDF, npy), correct them "
        "(dark, flat field, bad pixels), centre the Bragg peak, resample to a target oversampling and size, "
        "and write a CXI file for `cdinn phase`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_threads_argument(p)
    p.add_argument("data", help="frames: TIFF directory, multi-page TIFF, .h5/.cxi/.nxs (FILE::KEY), .edf, .npy")
    p.add_argument("-o", "--output", required=True, help="prepared pattern (.cxi)")
    p.add_argument("--spec", help="SPEC file of the scan (motor positions, energy, distance)")
    p.add_argument("--scan", type=int, help="scan number in the SPEC file")
    p.add_argument("--dark", help="dark frame (subtracted; its hot pixels are masked)")
    p.add_argument("--flat", help="flat-field frame (divided out; its dead pixels are masked)")
    p.add_argument("--roi", help="detector region of the frames ROW0:ROW1,COL0:COL1, to crop full-chip dark/flat/mask")
    p.add_argument("--mask", help="bad-pixel mask (non-zero = bad), one frame or the stack")
    p.add_argument("--mask-zeros", action="store_true",
                   help="pixels reading exactly 0 are unmeasured (beamstop, gaps written as 0, as in ESRF EDF patterns); "
                   "not for raw photon-counting frames")
    p.add_argument("--centre", default="auto", choices=CENTRES,
                   help="how to find the pattern centre: max (Bragg peak), com (centre of mass), friedel (centre of "
                   "symmetry, forward CDI behind a beamstop); auto = friedel in 2D, max in 3D (default)")
    p.add_argument("--size", type=_ints, help="output size per axis, e.g. 64 or 64,128,128 (default: largest FFT-friendly box)")
    p.add_argument("--oversampling", type=float, help="target linear oversampling per axis, >= 2 (default: keep the measured sampling)")
    p.add_argument("--resample", default="fourier", choices=METHODS,
                   help="resampling to the target oversampling: fourier (crop/pad the autocorrelation, exact for >= 2) "
                   "or dct (block-wise DCT scaling, as 3D-CDI-NN); default fourier")
    p.add_argument("--bin", type=_ints, default=1, help="integer binning applied first, e.g. 2 or 1,2,2 (default 1)")
    p.add_argument("--pixel-size", type=float, default=55.0, help="detector pixel size in µm (default 55, Timepix)")
    p.add_argument("--diffractometer", default="34idc", choices=sorted(DIFFRACTOMETERS), help="circle conventions (default 34idc)")
    p.add_argument("--energy", type=float, help="X-ray energy in keV (overrides the SPEC file; with --distance, gives 2D "
                   "forward-CDI results a pixel size in nm)")
    p.add_argument("--distance", type=float, help="sample-detector distance in mm (overrides the SPEC file)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn prepare``."""
    t0 = time.perf_counter()
    out = Path(args.output)
    if out.suffix.lower() not in (".cxi", ".h5", ".hdf5"):
        raise InputError(f"output {out}: use a .cxi name")
    check_output(out, (args.data, args.spec, args.dark, args.flat, args.mask))
    for name in ("energy", "distance", "pixel_size"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InputError(f"--{name.replace('_', '-')} {value}: must be a positive number")
    if args.oversampling is not None and not (np.isfinite(args.oversampling) and 1 < args.oversampling <= 64):
        raise InputError(f"--oversampling {args.oversampling}: must be above 1 (2 or more for a unique solution) and at most 64")
    roi = parse_roi(args.roi) if args.roi else None
    scan = load_scan(args.data, args.dark, args.flat, roi, args.mask, args.spec, args.scan, zeros_unmeasured=args.mask_zeros)
    t_load = time.perf_counter() - t0
    geometry = None
    if scan.spec is not None and scan.data.ndim == 3:
        overrides = {k: v for k, v in (("energy_kev", args.energy), ("distance_mm", args.distance)) if v is not None}
        geometry = geometry_from_spec(scan.spec, args.pixel_size * 1e-6, args.diffractometer, overrides)
    prepared = prepare_pattern(scan.data, scan.mask, args.size, args.oversampling, args.bin, centre=args.centre, method=args.resample)
    if geometry is not None:
        geometry = geometry.scaled([b * f for b, f in zip(prepared.binning, prepared.factors)])
    forward = None
    if scan.data.ndim == 2 and args.energy is not None and args.distance is not None:
        # Forward CDI: the object-plane pixel follows from energy, distance and the prepared pixel.
        forward = {"energy_kev": args.energy, "distance_m": args.distance * 1e-3,
                   "pixel_size_m": [args.pixel_size * 1e-6 * b * f for b, f in zip(prepared.binning, prepared.factors)]}
    provenance = {
        "input": str(Path(args.data).resolve()),
        "forward_geometry": forward,
        "spec": None if args.spec is None else {"file": str(args.spec), "scan": args.scan, "command": scan.spec.command},
        "corrections": scan.corrections,
        "version": cdinn.__version__,
        "timings": {"load_s": t_load, "total_s": time.perf_counter() - t0},
    }
    write_prepared(out, prepared, geometry, provenance)
    over = " x ".join(f"{o:.2f}" for o in prepared.oversampling)
    print(f"{args.data}: centre at {prepared.peak}, {prepared.intensity.shape} pixels, oversampling {over}, "
          f"{int(prepared.mask.sum())} masked, {time.perf_counter() - t0:.2f} s -> {out}")
    if geometry is not None:
        vox = " x ".join(f"{v:.1f}" for v in voxel_sizes(geometry.real_space_basis(prepared.intensity.shape)))
        print(f"  Bragg |q| {np.linalg.norm(geometry.q_bragg()):.3f} nm^-1, voxel (rocking, row, column) {vox} nm")
    for note in prepared.notes:
        print(f"  note: {note}")
    return 0
