"""The prepared-pattern file: a CXI file that ``cdinn phase`` reads, with the geometry that
``cdinn report`` needs to put the reconstruction in the lab frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cdinn.errors import InputError
from cdinn.io.atomic import atomic_path
from cdinn.io.readers import split_key
from cdinn.physics.geometry import HC_KEV_NM, BraggGeometry, voxel_sizes
from cdinn.prepare.bragg import Prepared

GEOMETRY_KEY = "/entry_1/cdinn/geometry"
PREPARATION_KEY = "/entry_1/cdinn/preparation"
KEV_TO_J = 1.602176634e-16


def write_prepared(path: str | Path, prepared: Prepared, geometry: BraggGeometry | None, provenance: dict[str, Any]) -> Path:
    """Write the prepared intensity, its mask and geometry as CXI, atomically.

    ``/entry_1/data_1/data`` (float32 counts) and ``/entry_1/data_1/mask`` (non-zero = not
    measured) are what the readers of :mod:`cdinn.io` use; the CXI instrument fields hold
    energy (J), distance and pixel sizes (m) of the prepared sampling; the complete geometry
    and the preparation record are JSON strings under ``/entry_1/cdinn``.
    """
    p = Path(path)
    if p.suffix.lower() not in (".cxi", ".h5", ".hdf5"):
        raise InputError(f"output {p}: the prepared pattern is written as CXI; use a .cxi (or .h5) name")
    record = {
        **provenance,
        "peak": prepared.peak,
        "factors": prepared.factors,
        "binning": prepared.binning,
        "oversampling_input": prepared.oversampling_input,
        "oversampling": prepared.oversampling,
        "notes": prepared.notes,
        "masked_pixels": int(prepared.mask.sum()),
    }
    with atomic_path(p) as tmp:
        with h5py.File(tmp, "w") as f:
            f["cxi_version"] = 150
            data = f.create_dataset("entry_1/data_1/data", data=prepared.intensity.astype(np.float32), compression="gzip", shuffle=True)
            data.attrs["axes"] = "rocking:row:column" if prepared.intensity.ndim == 3 else "row:column"
            f.create_dataset("entry_1/data_1/mask", data=prepared.mask.astype(np.uint8), compression="gzip")
            f["entry_1/instrument_1/detector_1/mask"] = h5py.SoftLink("/entry_1/data_1/mask")
            f["entry_1/instrument_1/detector_1/data"] = h5py.SoftLink("/entry_1/data_1/data")
            if geometry is not None:
                f["entry_1/instrument_1/source_1/energy"] = geometry.energy_kev * KEV_TO_J
                f["entry_1/instrument_1/detector_1/distance"] = geometry.distance_m
                f["entry_1/instrument_1/detector_1/y_pixel_size"] = geometry.pixel_size_m[0]
                f["entry_1/instrument_1/detector_1/x_pixel_size"] = geometry.pixel_size_m[1]
                f[GEOMETRY_KEY] = json.dumps(geometry.to_dict())
            forward = provenance.get("forward_geometry")
            if geometry is None and forward:
                f["entry_1/instrument_1/source_1/energy"] = forward["energy_kev"] * KEV_TO_J
                f["entry_1/instrument_1/detector_1/distance"] = forward["distance_m"]
                f["entry_1/instrument_1/detector_1/y_pixel_size"] = forward["pixel_size_m"][0]
                f["entry_1/instrument_1/detector_1/x_pixel_size"] = forward["pixel_size_m"][1]
            f[PREPARATION_KEY] = json.dumps(record, default=_json)
    return p


def read_geometry(path: str | Path) -> BraggGeometry | None:
    """The Bragg geometry stored by :func:`write_prepared`, or None if the file has none."""
    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            if GEOMETRY_KEY not in f:
                return None
            raw = f[GEOMETRY_KEY][()]
    except OSError as exc:
        raise InputError(f"{p}: cannot read the geometry ({exc})") from None
    return BraggGeometry.from_dict(json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)))


def read_preparation(path: str | Path) -> dict[str, Any]:
    """The preparation record :func:`write_prepared` stored (input, scan, corrections, ...), or {}."""
    try:
        with h5py.File(path, "r") as f:
            raw = f[PREPARATION_KEY][()] if PREPARATION_KEY in f else None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the preparation record ({exc})") from None
    if raw is None:
        return {}
    try:
        record = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: its preparation record is not valid JSON") from None
    return record if isinstance(record, dict) else {}


def read_sampling(path: str | Path, shape: tuple[int, ...]) -> tuple[list[float], str] | None:
    """Real-space voxel size (nm per array axis) of a reconstruction of the prepared pattern in
    ``path``, with the frame it refers to; None when the preparation recorded no geometry.

    Bragg (3D, from the scan record): the detector-frame voxel steps of the geometry. Forward
    CDI (2D, ``prepare --energy --distance``): the object-plane pixel ``λ z / (N p)`` per axis.
    """
    geometry = read_geometry(path)
    if geometry is not None:
        steps = voxel_sizes(geometry.real_space_basis(shape))
        return [round(float(v), 4) for v in steps], "detector (rocking, row, column): axes not orthogonal; cdinn report maps to the lab frame"
    forward = read_preparation(path).get("forward_geometry")
    if not forward or len(shape) != 2:
        return None
    wavelength_nm = HC_KEV_NM / float(forward["energy_kev"])
    pixel = [wavelength_nm * float(forward["distance_m"]) / (n * float(p)) for n, p in zip(shape, forward["pixel_size_m"])]
    return [round(v, 4) for v in pixel], "object plane (row, column), forward CDI: λ z / (N p)"


def input_record(source: str | Path, shape: tuple[int, ...]) -> dict[str, Any]:
    """What a result records about its input: the absolute path (and the path as given), and,
    for a pattern prepared with its geometry (Bragg, or 2D forward CDI with energy and distance),
    that geometry and the voxel size per array axis, so that ``cdinn report`` needs neither the
    input file nor the folder it was run from."""
    path, key = split_key(source)
    record: dict[str, Any] = {"input": str(path.resolve()) + (f"::{key}" if key else ""), "input_as_given": str(source)}
    if key is None and path.suffix.lower() in (".cxi", ".h5", ".hdf5", ".nxs") and path.is_file():
        geometry = read_geometry(path)
        if geometry is not None:
            record["geometry"] = geometry.to_dict()
        sampling = read_sampling(path, shape)
        if sampling is not None:
            record["voxel_size_nm"], record["frame"] = sampling
        preparation = read_preparation(path)
        spec, forward = preparation.get("spec") or {}, preparation.get("forward_geometry") or {}
        if spec.get("scan") is not None:
            record["scan"] = f"{Path(str(spec.get('file', ''))).name} #{spec['scan']}"
        energy = geometry.energy_kev if geometry is not None else forward.get("energy_kev")
        if energy is not None:
            record["energy_kev"] = float(energy)
    return record


def _json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj)
    return str(obj)
