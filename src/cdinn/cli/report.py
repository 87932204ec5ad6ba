"""``cdinn report``: a reconstruction in, a strain figure (and ParaView/CXI exports) out."""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument
from cdinn.errors import InputError
from cdinn.io import (Result, check_output, check_result_path, read_frame, read_pattern, read_result, read_stack,
                      read_stack_table, write_result)
from cdinn.physics.geometry import BraggGeometry
from cdinn.prepare import read_geometry
from cdinn.report import analyse, comparison_figure, stack_figure, strain_figure, write_vti
from cdinn.report.figures import describe


FIGURE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "eps")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    p = sub.add_parser(
        "report",
        help=COMMANDS["report"],
        description="Put a 3D Bragg reconstruction in the orthonormal lab frame using the geometry of its "
        "prepared pattern, compute displacement and strain along G, and draw one figure. "
        "A 2D result, or one without geometry, gets amplitude and phase slices in pixels.",
    )
    add_threads_argument(p)
    p.add_argument("result", help="result of `cdinn phase` (.h5, .cxi, .npz)")
    p.add_argument("-o", "--output", required=True, help="figure (.png, .pdf, .svg)")
    p.add_argument("--frame", type=int, metavar="I",
                   help="of a stack result (--stack): draw reconstruction I alone (default: an overview of the stack)")
    p.add_argument("--geometry", help="prepared CXI holding the geometry (default: the result's input, if it has one)")
    p.add_argument("--vti", help="also write amplitude, phase, displacement, strain and support as VTK ImageData")
    p.add_argument("--cxi", help="also write the lab-frame object, support and strain as a CXI result")
    p.add_argument("--hkl", type=int, nargs=3, default=(1, 1, 1), metavar=("H", "K", "L"), help="reflection (default 1 1 1)")
    p.add_argument("--lattice", type=float, default=0.408, help="cubic lattice constant in nm (default 0.408, gold); 0 uses the measured |q|")
    p.add_argument("--threshold", type=float, default=0.3, help="amplitude fraction of the crystal surface (default 0.3)")
    p.add_argument("--phase-range", type=float, metavar="RAD",
                   help="phase colour scale ±RAD (default: 99th percentile inside the object, at least 0.5 rad)")
    p.add_argument("--strain-range", type=float, metavar="PERCENT",
                   help="strain colour scale ±PERCENT (default: 99th percentile inside the crystal, at least 0.02 %%)")
    p.add_argument("--amplitude-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
                   help="amplitude colour scale as fractions of the maximum (default 0 1)")
    p.set_defaults(run=run)


def _geometry(args: argparse.Namespace, result: Result) -> tuple[BraggGeometry | None, str]:
    """The Bragg geometry and where it came from: ``--geometry``, else the result itself (recorded
    by ``phase``/``invert`` from a prepared input), else the result's input file if it is there."""
    if args.geometry:
        geometry = read_geometry(args.geometry)
        if geometry is None:
            raise InputError(f"{args.geometry}: holds no Bragg geometry (prepare the scan with --spec and --scan)")
        if tuple(result.object.shape) != _prepared_shape(Path(args.geometry)):
            raise InputError(f"{args.result}: object shape {result.object.shape} differs from the prepared pattern in {args.geometry}")
        return geometry, str(args.geometry)
    recorded = result.provenance.get("geometry")
    if isinstance(recorded, dict):
        try:
            return BraggGeometry.from_dict(recorded), "the result"
        except (TypeError, KeyError, ValueError):
            raise InputError(f"{args.result}: its recorded geometry is malformed; pass --geometry PREPARED.cxi") from None
    source = str(result.provenance.get("input", "")).split("::")[0]
    if source and Path(source).suffix.lower() in (".cxi", ".h5", ".hdf5") and Path(source).is_file():
        geometry = read_geometry(source)
        if geometry is not None and tuple(result.object.shape) == _prepared_shape(Path(source)):
            return geometry, source
    return None, source


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn report``."""
    if not 0 < args.threshold < 1:
        raise InputError(f"--threshold {args.threshold}: must be between 0 and 1")
    for name in ("phase_range", "strain_range"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InputError(f"--{name.replace('_', '-')} {value}: must be a positive number")
    lo, hi = args.amplitude_range
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
        raise InputError(f"--amplitude-range {lo} {hi}: need 0 <= LO < HI (fractions of the maximum)")
    if tuple(args.hkl) == (0, 0, 0):
        raise InputError("--hkl 0 0 0 is not a reflection")
    figure = Path(args.output)
    if figure.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise InputError(f"figure {figure}: use one of {', '.join('.' + f for f in FIGURE_FORMATS)}")
    reads = (args.result, args.geometry)
    check_output(figure, reads)
    if args.vti:
        check_output(args.vti, reads)
    if args.cxi:
        check_output(check_result_path(args.cxi), reads)
    if args.frame is not None:
        result = read_frame(args.result, args.frame)
    else:
        chi2, floors, provenance = read_stack_table(args.result)
        if provenance.get("stack"):
            if args.vti or args.cxi:
                raise InputError("--vti and --cxi export one reconstruction: pick one of the stack with --frame I")
            return _stack_report(args, chi2, floors, provenance)
        result = read_result(args.result)
    if result.object.ndim not in (2, 3):
        raise InputError(f"{args.result}: a {result.object.ndim}D object; cdinn report draws 2D and 3D reconstructions")
    geometry, source = _geometry(args, result)
    if result.object.ndim != 3 or geometry is None:
        if args.vti or args.cxi:
            raise InputError("--vti and --cxi need a 3D result with its Bragg geometry (--geometry PREPARED.cxi)")
        pattern = _measured_pattern(result)
        chi2 = result.history.get("chi2")
        # One column per start; the curve of the start that was kept.
        history = [("chi²", chi2[:, int(result.provenance.get("best_start", 0))])] if chi2 is not None and chi2.ndim == 2 else []
        pixel = result.provenance.get("voxel_size_nm") if result.object.ndim == 2 else None
        comparison_figure(args.output, [("reconstruction", result.object)], pattern=pattern, histories=history,
                          title=_name(args.result, result) + ("" if pixel else " (pixels: no geometry recorded)"),
                          subtitle=describe(result.provenance, result.chi2), crop=True, pixel_nm=pixel,
                          phase_range=args.phase_range, amplitude_range=tuple(args.amplitude_range))
        hint = ""
        if result.object.ndim == 3:
            hint = (f" (its input {source} is not there: pass --geometry PREPARED.cxi)" if source and not Path(source).is_file()
                    else " (to get nm and strain, prepare the scan with --spec/--scan, or pass --geometry PREPARED.cxi)")
        if pixel:
            print(f"{args.result}: pixel {' x '.join(f'{v:.3g}' for v in pixel)} nm; amplitude and phase -> {args.output}")
        else:
            print(f"{args.result}: no Bragg geometry{hint}; amplitude and phase in pixels -> {args.output}")
        return 0
    lattice = args.lattice if args.lattice > 0 else None
    crystal = analyse(result, geometry, args.hkl, lattice, args.threshold)
    strain_figure(args.output, crystal, result, title=_name(args.result, result), threshold=args.threshold,
                  phase_range=args.phase_range, strain_range=args.strain_range, amplitude_range=tuple(args.amplitude_range))
    smap = crystal.strain
    if args.vti:
        write_vti(args.vti, {"amplitude": np.abs(crystal.obj), "phase": smap.phase, "displacement_nm": smap.displacement,
                             "strain": smap.strain, "support": smap.support}, crystal.voxel_nm)
    if args.cxi:
        # In the lab frame now: the detector-frame geometry and input no longer apply to this object.
        prov = {**result.provenance, "frame": "lab (z, y, x), z along the beam", "voxel_size_nm": crystal.voxel_nm,
                "g_unit_zyx": crystal.g_grid, "g_norm_per_nm": smap.g_norm, "source_result": str(Path(args.result).resolve()),
                "geometry": None, "input": ""}
        write_result(args.cxi, Result(crystal.obj.astype(np.complex64), smap.support, result.chi2, result.history, prov,
                                      {"strain": np.nan_to_num(smap.strain).astype(np.float32),
                                       "displacement_nm": np.nan_to_num(smap.displacement).astype(np.float32)}))
    p1, _, p99 = crystal.strain_percentiles()
    print(f"{args.result}: voxel {crystal.voxel_nm:.1f} nm, crystal " + " x ".join(f"{s:.0f}" for s in crystal.size_nm)
          + f" nm (z, y, x), strain 1-99% {p1:+.3f}..{p99:+.3f} % -> {args.output}")
    return 0


def _name(path: str, result: Result) -> str:
    """A figure's title: the file's name, and the frame for one reconstruction of a stack."""
    frame = result.provenance.get("stack_frame")
    return Path(path).name + ("" if frame is None else f", frame {frame} of {result.provenance['stack']}")


def _stack_report(args: argparse.Namespace, chi2: np.ndarray, floors: np.ndarray, provenance: dict) -> int:
    """The overview of a stack: chi² per frame and the first, best, median and worst frames."""
    order = np.argsort(chi2, kind="stable")
    picks = list(dict.fromkeys(int(k) for k in (0, order[0], order[len(order) // 2], order[-1])))
    frames = [(k, read_frame(args.result, k).object) for k in picks]
    stack_figure(args.output, chi2, floors, frames, title=Path(args.result).name,
                 subtitle=describe(provenance) + f" · {len(chi2)} frames, chi² median {np.median(chi2):.4g}",
                 phase_range=args.phase_range, amplitude_range=tuple(args.amplitude_range))
    counted = np.isfinite(floors)
    above = f", {int(np.sum(chi2[counted] > floors[counted]))} above their counting-noise floor" if counted.any() else ""
    print(f"{args.result}: {len(chi2)} reconstructions, chi² median {np.median(chi2):.4g} (best frame {int(order[0])}: "
          f"{chi2[order[0]]:.4g}, worst frame {int(order[-1])}: {chi2[order[-1]]:.4g}){above}; frames "
          f"{', '.join(map(str, picks))} drawn (one alone: --frame I) -> {args.output}")
    return 0


def _measured_pattern(result: Result) -> np.ndarray | None:
    """The pattern the result was reconstructed from, when its file is still there (for a
    frame of a stack, that frame of the input stack)."""
    source = result.provenance.get("input")
    if not source or not Path(str(source).split("::")[0]).is_file():
        return None
    try:
        if "stack_frame" in result.provenance:
            stack, _ = read_stack(source)
            pattern = stack[result.provenance["stack_frame"]]
        else:
            pattern, _ = read_pattern(source)
    except (InputError, IndexError):
        return None
    return pattern if pattern.shape == result.object.shape else None


def _prepared_shape(path: Path | None) -> tuple[int, ...] | None:
    if path is None:
        return None
    with h5py.File(path, "r") as f:
        return tuple(f["/entry_1/data_1/data"].shape) if "/entry_1/data_1/data" in f else None
