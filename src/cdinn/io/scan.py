"""Loading a measured scan: detector frames, dark and flat-field correction, bad-pixel masks,
and the SPEC record of the scan (motor positions, energy) through xrayutilities."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cdinn.errors import InputError
from cdinn.io.readers import read_array, split_key


@dataclass
class SpecScan:
    """One scan of a SPEC file.

    Attributes
    ----------
    number : scan number (``#S``)
    command : the scan command, e.g. ``ascan th -0.28 0.72 200 0.25``
    motors : motor name -> position at the start of the scan (``#P`` lines)
    columns : counter/motor name -> values per point (``#L`` columns)
    """

    number: int
    command: str
    motors: dict[str, float]
    columns: dict[str, np.ndarray]

    @property
    def scanned_motor(self) -> str | None:
        """The motor mnemonic moved by an ``ascan``/``dscan`` (``th`` for ``ascan th ...``)."""
        words = self.command.split()
        return words[1] if len(words) > 1 and words[0] in ("ascan", "dscan", "a2scan", "d2scan") else None

    @property
    def points(self) -> int:
        """Number of recorded points."""
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class Scan:
    """A corrected detector stack with its bad-pixel mask and SPEC record.

    Attributes
    ----------
    data : float32 ``(frames, rows, columns)`` (or ``(rows, columns)``), corrected counts
    mask : bool, same shape, True where a pixel was not measured
    spec : the SPEC scan, when one was given
    source : where the frames came from
    corrections : what was applied (for provenance)
    """

    data: np.ndarray
    mask: np.ndarray
    spec: SpecScan | None = None
    source: str = ""
    corrections: dict[str, object] = field(default_factory=dict)


def read_spec(path: str | Path, number: int) -> SpecScan:
    """Read scan ``number`` of a SPEC file with xrayutilities' parser.

    Raises
    ------
    InputError
        Missing/unparsable file, or no such scan (the message lists the scan range).
    """
    import xrayutilities as xu

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such SPEC file")
    verbosity, xu.config.VERBOSITY = xu.config.VERBOSITY, 0
    try:
        spec = xu.io.SPECFile(str(p))
        found = [s for s in spec.scan_list if s.nr == number]
        if not found:
            numbers = sorted(s.nr for s in spec.scan_list)
            span = f"{numbers[0]}..{numbers[-1]}" if numbers else "none"
            raise InputError(f"{p}: no scan {number} (the file holds {len(numbers)} scans, numbers {span})")
        scan = found[-1]  # a scan number reused after a SPEC restart: the last one is the latest
        scan.ReadData()
        data = scan.data
        columns = {} if data is None else {name: np.asarray(data[name], dtype=np.float64) for name in data.dtype.names}
    except InputError:
        raise
    except Exception as exc:  # the parser raises bare Exceptions and IndexErrors on malformed files
        raise InputError(f"{p}: cannot parse the SPEC file ({type(exc).__name__}: {exc})") from None
    finally:
        xu.config.VERBOSITY = verbosity
    motors = {k.removeprefix("INIT_MOPO_"): float(v) for k, v in scan.init_motor_pos.items()}
    return SpecScan(number, " ".join(scan.command.split()), motors, columns)


def parse_roi(text: str) -> tuple[slice, slice]:
    """``"r0:r1,c0:c1"`` -> (row slice, column slice) of the detector region the frames hold."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m:
        raise InputError(f"--roi {text!r}: expected ROW0:ROW1,COL0:COL1, e.g. 0:256,0:256")
    r0, r1, c0, c1 = (int(g) for g in m.groups())
    if r1 <= r0 or c1 <= c0:
        raise InputError(f"--roi {text!r}: empty region")
    return slice(r0, r1), slice(c0, c1)


def _frame_gaps(path: Path) -> list[int]:
    # Frame files are numbered by their last run of digits; a gap means a lost frame.
    numbers = []
    for f in sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff")):
        m = re.search(r"(\d+)(?=\D*$)", f.stem)
        if m is None:
            return []
        numbers.append(int(m.group(1)))
    if not numbers:
        return []
    return sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))


def read_frames(spec: str | Path) -> np.ndarray:
    """Read a detector stack: a TIFF frame directory, multi-page TIFF, HDF5/NeXus/CXI or npy.

    Raises
    ------
    InputError
        Unreadable input, missing frames in a numbered sequence, or a stack that is not 2D/3D.
    """
    path, _ = split_key(spec)
    if path.is_dir():
        gaps = _frame_gaps(path)
        if gaps:
            shown = ", ".join(str(g) for g in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
            raise InputError(f"{path}: {len(gaps)} frame(s) missing from the numbered sequence (number {shown})")
    data, _ = read_array(spec)
    if data.ndim not in (2, 3) or data.dtype.kind not in "biuf":
        raise InputError(f"{spec}: expected a numeric 2D frame or 3D stack of frames, got {data.dtype} {data.shape}")
    return data


def _detector_frame(spec: str | Path, name: str, shape: tuple[int, int], roi: tuple[slice, slice] | None) -> np.ndarray:
    frame, _ = read_array(spec)
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim == 3 and frame.shape[0] == 1:
        frame = frame[0]
    if frame.ndim != 2:
        raise InputError(f"{spec}: the {name} must be one 2D frame, got shape {frame.shape}")
    if roi is not None:
        if roi[0].stop > frame.shape[0] or roi[1].stop > frame.shape[1]:
            raise InputError(f"{spec}: ROI rows {roi[0].start}:{roi[0].stop}, columns {roi[1].start}:{roi[1].stop} exceeds the {name} shape {frame.shape}")
        frame = frame[roi]
    if frame.shape != shape:
        hint = "" if roi is not None else "; give the detector region of the frames with --roi ROW0:ROW1,COL0:COL1"
        raise InputError(f"{spec}: {name} shape {frame.shape} does not match the frame shape {shape}{hint}")
    return frame


def load_scan(
    data: str | Path,
    dark: str | Path | None = None,
    flat: str | Path | None = None,
    roi: tuple[slice, slice] | None = None,
    mask: str | Path | None = None,
    spec_file: str | Path | None = None,
    scan: int | None = None,
    dark_threshold: float = 1.0,
    flat_sigma: float = 3.0,
    zeros_unmeasured: bool = False,
) -> Scan:
    """Read frames and apply the detector corrections.

    Parameters
    ----------
    data : frame directory, multi-page TIFF, HDF5/CXI (``FILE::KEY``) or npy stack
    dark : dark frame, subtracted first (negative results clip to 0); pixels above
        ``dark_threshold`` counts in it are hot and masked
    flat : flat-field (white-field) frame; the frames are then divided by it normalised to its
        mean, and pixels more than ``flat_sigma`` standard deviations below the mean are dead and masked
    roi : detector region of the frames, to crop ``dark``/``flat`` (and ``mask``) taken on the full chip
    mask : bad-pixel mask (non-zero = bad), one frame or the whole stack
    spec_file, scan : SPEC file and scan number for motor positions and energy
    dark_threshold, flat_sigma : thresholds of the hot/dead-pixel detection
    zeros_unmeasured : mask the pixels that read exactly 0 in the raw frames: for files where
        the acquisition or a previous treatment wrote unmeasured pixels (beamstop, module gaps)
        as 0. Not for raw photon-counting frames, whose zeros are measurements.

    Returns
    -------
    Scan

    Raises
    ------
    InputError
        Missing frames, shape mismatches, wrong scan number, frame count differing from the
        SPEC scan's number of points.
    """
    if (spec_file is None) != (scan is None):
        raise InputError("give both the SPEC file and the scan number, or neither")
    raw = read_frames(data)
    spec_scan = read_spec(spec_file, scan) if spec_file is not None else None
    if spec_scan is not None and raw.ndim == 3 and spec_scan.points and spec_scan.points != raw.shape[0]:
        raise InputError(f"{data}: {raw.shape[0]} frames but SPEC scan {scan} recorded {spec_scan.points} points")
    frame_shape = raw.shape[-2:]
    bad = np.zeros(frame_shape, dtype=bool)
    out = raw.astype(np.float32)
    corrections: dict[str, object] = {}
    if dark is not None:
        dk = _detector_frame(dark, "dark frame", frame_shape, roi)
        hot = dk > dark_threshold
        out -= dk.astype(np.float32)
        np.clip(out, 0, None, out=out)
        bad |= hot
        corrections["dark_hot_pixels"] = int(hot.sum())
    if flat is not None:
        wf = _detector_frame(flat, "flat field", frame_shape, roi)
        dead = wf < wf.mean() - flat_sigma * wf.std()
        dead |= wf <= 0
        norm = wf[~dead].mean()
        gain = np.where(dead, 1.0, wf / norm).astype(np.float32)
        out /= gain
        bad |= dead
        corrections["flat_dead_pixels"] = int(dead.sum())
    full_mask = np.broadcast_to(bad, out.shape).copy()
    if zeros_unmeasured:
        zeros = raw == 0
        full_mask |= zeros
        corrections["zero_pixels_masked"] = int(zeros.sum())
    if mask is not None:
        m, _ = read_array(mask)
        m = np.asarray(m) != 0
        if roi is not None and m.shape[-2:] != frame_shape:
            m = m[(...,) + roi]
        if m.shape not in (frame_shape, out.shape):
            raise InputError(f"{mask}: mask shape {m.shape} matches neither the frame {frame_shape} nor the stack {out.shape}")
        full_mask |= m
        corrections["user_masked_pixels"] = int(m.sum())
    # NaN/inf in raw frames are pixels the detector did not measure: masked, counted, reported.
    broken = ~np.isfinite(out)
    if broken.any():
        full_mask |= broken
        corrections["non_finite_pixels_masked"] = int(broken.sum())
    if (out[~full_mask] < 0).any():
        raise InputError(f"{data}: {int((out[~full_mask] < 0).sum())} negative counts in the frames; "
                         "subtract the background with --dark (clipped at 0), or mask those pixels")
    if full_mask.all():
        raise InputError(f"{data}: every pixel is masked; nothing was measured")
    out[full_mask] = 0
    if not (out > 0).any():
        raise InputError(f"{data}: no counts left after the detector corrections")
    return Scan(out, full_mask, spec_scan, str(data), corrections)
