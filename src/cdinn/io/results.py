"""The result of a reconstruction and its file format (``.npz``, ``.h5`` or ``.cxi``)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cdinn.errors import InputError
from cdinn.io.atomic import atomic_path

RESULT_SUFFIXES = (".npz", ".h5", ".hdf5", ".cxi")


@dataclass
class Result:
    """A reconstructed complex image with its quality and provenance.

    Attributes
    ----------
    object : complex64 array, same shape as the input pattern, centred
    support : bool array, same shape
    chi2 : float, or an array ``(N,)`` for a stack of N reconstructions
        Reciprocal-space chi² of ``object`` against the pattern.
    history : dict of arrays
        Per-iteration traces, e.g. ``chi2`` of the kept solution.
    provenance : dict
        Method, parameters, timings (seconds), package version; JSON-serialisable.
    extras : dict of arrays
        Anything else worth keeping (all starts' chi², the mask used, ...).
    """

    object: np.ndarray
    support: np.ndarray
    chi2: float | np.ndarray
    history: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


PER_PATTERN = ("stages", "timings", "averaging", "best_start", "chi2_noise_floor", "chi2_over_noise_floor")
"""Provenance entries that describe one pattern, left out of a stack's provenance."""


class StackWriter:
    """A stack's N results written to one file as they come, in order: ``object`` and
    ``support`` ``(N, *spatial)``, ``chi2`` ``(N,)``, ``extras/chi2_noise_floor`` ``(N,)`` (each
    pattern's counting-noise floor, NaN where a pattern is not photon counts), and the
    provenance of the first result (method, parameters) without its per-pattern entries.

    An ``.h5``/``.hdf5`` file is streamed: each reconstruction is compressed as
    :func:`write_result` compresses it (gzip, one chunk per frame) on a background thread
    while the next ones are computed, and written as its chunk, so a stack of any length needs
    memory for a few frames only. Other formats gather the arrays and write them once. The
    file appears, atomically, only when :meth:`close` succeeds; leaving the ``with`` block by
    an exception writes nothing.

    Parameters
    ----------
    path : result file
    count : N, the number of results :meth:`add` will receive
    """

    _QUEUE = 256
    """Frames handed to the background thread at once (and at most twice that waiting)."""

    def __init__(self, path: str | Path, count: int):
        self.path, self.count, self.added = check_result_path(path), count, 0
        self.streamed = self.path.suffix.lower() in (".h5", ".hdf5")
        self.chi2, self.floors = np.zeros(count), np.full(count, np.nan)
        self.seeds: list[Any] = []
        self.provenance: dict[str, Any] = {}
        self._atomic = atomic_path(self.path) if self.streamed else None
        self._tmp = self._atomic.__enter__() if self._atomic is not None else None
        self._file: h5py.File | None = None
        self._datasets: tuple[h5py.Dataset, h5py.Dataset] | None = None
        self._arrays: tuple[Any, Any] | None = None
        self._shape: tuple[int, ...] | None = None
        self._pending: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._jobs: list[Future] = []
        self._pool = ThreadPoolExecutor(1) if self.streamed else None

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.discard()  # after close() there is nothing left to discard

    def add(self, result: Result) -> None:
        """Append the next reconstruction (the ``i``-th call gives frame ``i``)."""
        i = self.added
        if i >= self.count:
            raise ValueError(f"the stack holds {self.count} results")
        if i == 0:
            self.provenance = {k: v for k, v in result.provenance.items() if k not in PER_PATTERN}
            self._open(result.object.shape)
        if result.object.shape != self._shape or result.support.shape != self._shape:
            raise ValueError(f"frame {i} has shape {result.object.shape}; the stack's frames are {self._shape}")
        floor = result.provenance.get("chi2_noise_floor")
        self.chi2[i], self.floors[i] = result.chi2, np.nan if floor is None else floor
        self.seeds.append(result.provenance.get("seed"))
        obj, support = result.object.astype(np.complex64, copy=False), result.support.astype(bool, copy=False)
        if self._pool is None:
            self._arrays[0][i], self._arrays[1][i] = obj, support
        else:
            self._pending.append((i, obj, support))
            if len(self._pending) >= self._QUEUE:
                self._flush()
        self.added += 1

    def close(self, seconds: float, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish the file (``provenance`` added to the stack's) and move it into place;
        returns the stack's provenance: ``stack`` = N, the chi² median, how many results fit
        worse than their floor (None where no pattern is photon counts), the seeds and the
        whole stack's time."""
        if self.added != self.count:
            raise ValueError(f"the stack got {self.added} of its {self.count} results")
        counted = ~np.isnan(self.floors)
        self.provenance.update({"stack": self.count, "chi2_median": float(np.median(self.chi2)),
                                "above_noise_floor": int(np.sum(self.chi2[counted] > self.floors[counted]))
                                if counted.any() else None,
                                "seeds": self.seeds, "timings": {"total_s": seconds, "per_pattern_s": seconds / self.count},
                                **(provenance or {})})
        extras = {"chi2_noise_floor": self.floors}
        if self._pool is None:
            write_result(self.path, Result(*self._arrays, self.chi2, {}, self.provenance, extras))
            return self.provenance
        self._flush()
        for job in self._jobs:
            job.result()
        f = self._file
        f["chi2"] = self.chi2
        f["provenance"] = json.dumps(self.provenance, default=_json_default)
        _write_extras(f.create_group("extras"), extras)
        f.close()
        self._pool.shutdown()
        atomic, self._atomic = self._atomic, None
        atomic.__exit__(None, None, None)
        return self.provenance

    def discard(self) -> None:
        """Stop and remove the unfinished file."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._file is not None and self._file.id.valid:
            self._file.close()
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            with contextlib.suppress(_Discarded):
                atomic.__exit__(_Discarded, _Discarded(), None)

    def _open(self, shape: tuple[int, ...]) -> None:
        self._shape, full = shape, (self.count, *shape)
        if self._pool is None:
            self._arrays = (np.empty(full, np.complex64), np.empty(full, bool))
            return
        self._file = h5py.File(self._tmp, "w")
        chunks = (1, *shape)
        self._datasets = (self._file.create_dataset("object", full, np.complex64, chunks=chunks, **GZIP),
                          self._file.create_dataset("support", full, bool, chunks=chunks, **GZIP))

    def _flush(self) -> None:
        """Hand the pending frames to the background thread; wait for the batch before the last."""
        if self._pending:
            self._jobs.append(self._pool.submit(self._write, self._pending))
            self._pending = []
        while len(self._jobs) > 1:
            self._jobs.pop(0).result()

    def _write(self, frames: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        # zlib's stream is what HDF5's deflate filter stores, and zlib releases the GIL while it compresses
        level = GZIP["compression_opts"]
        for i, obj, support in frames:
            for dataset, array in zip(self._datasets, (obj, support)):
                dataset.id.write_direct_chunk((i,) + (0,) * array.ndim, zlib.compress(np.ascontiguousarray(array), level))


class _Discarded(Exception):
    """Raised into :func:`atomic_path` to make it remove an unfinished stack file."""


def check_result_path(path: str | Path) -> Path:
    """Raise :class:`InputError` unless ``path`` has a result suffix."""
    p = Path(path)
    if p.suffix.lower() not in RESULT_SUFFIXES:
        raise InputError(f"output {p}: unknown result format {p.suffix or '(none)'!r}; use one of {', '.join(RESULT_SUFFIXES)}")
    return p


GZIP = {"compression": "gzip", "compression_opts": 1}
"""How result arrays are compressed: a 64³ object and prediction (mostly zeros outside the
support) wrote in 20 ms at level 1 against 37 ms at the default level 4, 12 % larger; byte
shuffling made complex objects larger and slower (47 ms). Every HDF5 reader has gzip."""


def write_result(path: str | Path, result: Result) -> Path:
    """Write ``result`` atomically; the format follows the suffix.

    ``.h5``/``.hdf5`` hold datasets ``object``, ``support``, ``chi2``, ``history/<name>``,
    ``extras/<name>`` and ``provenance`` (a JSON string); ``.npz`` the same keys flattened
    (``history_<name>``, ``extras_<name>``). ``.cxi`` is a CXI image (:func:`_write_cxi`), the
    layout PyNX, silx and bcdi read. Known quantities carry a ``units`` attribute.
    """
    p = check_result_path(path)
    prov = json.dumps(result.provenance, default=_json_default)
    with atomic_path(p) as tmp:
        if p.suffix.lower() == ".npz":
            arrays = {
                "object": result.object.astype(np.complex64),
                "support": result.support.astype(bool),
                "chi2": np.asarray(result.chi2, dtype=np.float64),
                "provenance": np.array(prov),
            }
            arrays.update({f"history_{k}": v for k, v in result.history.items()})
            arrays.update({f"extras_{k}": v for k, v in result.extras.items()})
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        elif p.suffix.lower() == ".cxi":
            with h5py.File(tmp, "w") as f:
                _write_cxi(f, result, prov)
        else:
            # a stack is chunked frame by frame: reading one reconstruction back reads one chunk
            chunks = {"chunks": (1, *result.object.shape[1:])} if np.ndim(result.chi2) else {}
            with h5py.File(tmp, "w") as f:
                f.create_dataset("object", data=result.object.astype(np.complex64), **GZIP, **chunks)
                f.create_dataset("support", data=result.support.astype(bool), **GZIP, **chunks)
                f["chi2"] = np.asarray(result.chi2, dtype=np.float64)
                f["provenance"] = prov
                for k, v in result.history.items():
                    f.create_dataset(f"history/{k}", data=v)
                _write_extras(f.create_group("extras"), result.extras)
    return p


UNITS = {"strain": ("1", "strain along G as a fraction (x100 for %)"), "displacement_nm": ("nm", "displacement along G"),
         "mask": ("1", "non-zero where a detector pixel was not measured"), "prediction": ("1", "network prediction, complex"),
         "chi2_noise_floor": ("1", "chi2 that counting noise alone gives the true object, per pattern (NaN: not counts)")}
"""Units (and a description) of the extras cdinn writes, stored as attributes."""

CXI_IMAGE = "/entry_1/image_1"


def _write_extras(group: h5py.Group, extras: dict[str, np.ndarray]) -> None:
    for k, v in extras.items():
        group.create_dataset(k, data=v, **(GZIP if np.ndim(v) > 0 else {}))
        if k in UNITS:
            group[k].attrs["units"], group[k].attrs["long_name"] = UNITS[k]


def _write_cxi(f: h5py.File, result: Result, prov: str) -> None:
    """A CXI 1.5 image: ``/entry_1/image_1/data`` (complex object), ``mask`` (the support),
    ``process_1`` (program, version, command, configuration, results), voxel size in metres
    when the geometry is known, extras under ``image_1/extras``; ``/entry_1/data_1`` links the data."""
    f["cxi_version"] = 150
    f.attrs["creator"] = "cdinn"
    f.attrs["default"] = "entry_1"
    entry = f.create_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "data_1"
    entry["program_name"] = f"cdinn {result.provenance.get('version', '')}".strip()
    entry["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f["entry_last"] = h5py.SoftLink("/entry_1")
    image = entry.create_group("image_1")
    image.attrs.update({"NX_class": "NXdata", "signal": "data", "interpretation": "scaler" if result.object.ndim == 3 else "image"})
    image.create_dataset("data", data=result.object.astype(np.complex64), **GZIP)
    image.create_dataset("mask", data=result.support.astype(bool), **GZIP)
    image["mask"].attrs["long_name"] = "support: True inside the object"
    image["support"] = h5py.SoftLink(f"{CXI_IMAGE}/mask")
    image["data_type"] = "electron density"
    image["data_space"] = "real"
    image["is_fft_shifted"] = 0
    voxel = result.provenance.get("voxel_size_nm")
    if voxel is not None:
        metres = np.broadcast_to(np.asarray(voxel, dtype=np.float64) * 1e-9, (result.object.ndim,))
        image["voxel_size"] = metres
        image["image_size"] = metres * np.asarray(result.object.shape)
        for name in ("voxel_size", "image_size"):
            image[name].attrs["units"] = "m"
        image["frame"] = str(result.provenance.get("frame", ""))
    process = image.create_group("process_1")
    process.attrs["NX_class"] = "NXprocess"
    process["program"] = "cdinn"
    process["version"] = str(result.provenance.get("version", ""))
    process["command"] = " ".join(sys.argv)
    config = process.create_group("configuration")
    config.attrs["NX_class"] = "NXcollection"
    for k, v in result.provenance.items():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            config[k] = v
    config["provenance"] = prov  # everything, as JSON: what cdinn reads back
    results = process.create_group("results")
    results.attrs["NX_class"] = "NXcollection"
    results["chi2"] = np.asarray(result.chi2, dtype=np.float64)
    results["chi2"].attrs["long_name"] = "sum (|F(object)| - sqrt(I))^2 / sum I over measured pixels"
    for k, v in result.history.items():
        results.create_dataset(f"history_{k}", data=v)
    _write_extras(image.create_group("extras"), result.extras)
    data = entry.create_group("data_1")
    data.attrs.update({"NX_class": "NXdata", "signal": "data"})
    data["data"] = h5py.SoftLink(f"{CXI_IMAGE}/data")


def read_result(path: str | Path) -> Result:
    """Read a result written by :func:`write_result` (a ``.cxi`` also in the layout of earlier versions)."""
    p = check_result_path(path)
    try:
        with _open_result(p) as (arrays, provenance, history, extras):
            return Result(np.asarray(arrays["object"][()]), np.asarray(arrays["support"][()]).astype(bool, copy=False),
                          _chi2(arrays["chi2"][()]), {k: np.asarray(history[k][()]) for k in history}, provenance,
                          {k: np.asarray(extras[k][()]) for k in extras})
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read result {p}: {exc}") from None


def read_frame(path: str | Path, index: int) -> Result:
    """Reconstruction ``index`` of a stack result (:class:`StackWriter`) as a result of its own:
    object, support, chi², the stack's provenance with ``stack_frame`` = ``index`` and the
    frame's counting-noise floor. From an ``.h5`` stack this reads one chunk per array."""
    p = check_result_path(path)
    try:
        with _open_result(p) as (arrays, provenance, _, extras):
            count = provenance.get("stack")
            if not count:
                raise InputError(f"{p} holds one reconstruction, not a stack: --frame applies to stacks")
            if not -count <= index < count:
                raise InputError(f"{p}: frame {index} is outside the stack of {count} (0..{count - 1})")
            index %= count
            floor = float(extras["chi2_noise_floor"][index]) if "chi2_noise_floor" in extras else float("nan")
            provenance.update(stack_frame=index, chi2_noise_floor=None if np.isnan(floor) else floor)
            chi2 = float(arrays["chi2"][index])
            if provenance["chi2_noise_floor"] is not None:
                provenance["chi2_over_noise_floor"] = chi2 / floor
            return Result(np.asarray(arrays["object"][index]), np.asarray(arrays["support"][index]).astype(bool), chi2,
                          {}, provenance, {})
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read result {p}: {exc}") from None


def read_stack_table(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A stack result's chi² ``(N,)``, counting-noise floors ``(N,)`` (NaN: not photon counts)
    and provenance, without reading its reconstructions."""
    p = check_result_path(path)
    try:
        with _open_result(p) as (arrays, provenance, _, extras):
            chi2 = np.atleast_1d(np.asarray(arrays["chi2"][()], dtype=np.float64))
            floors = np.asarray(extras["chi2_noise_floor"][()], dtype=np.float64) if "chi2_noise_floor" in extras \
                else np.full(chi2.shape, np.nan)
            return chi2, floors, provenance
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read result {p}: {exc}") from None


@contextlib.contextmanager
def _open_result(p: Path) -> Iterator[tuple[Any, dict[str, Any], Any, Any]]:
    """``(arrays, provenance, history, extras)`` of a result file in any of its layouts; an
    array (``object``, ``support``, ``chi2``, a history or an extra, by name) is read when
    indexed, so one frame of an ``.h5`` stack reads one chunk."""
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as z:
            yield (z, json.loads(str(z["provenance"])),
                   {k[len("history_"):]: z[k] for k in z.files if k.startswith("history_")},
                   {k[len("extras_"):]: z[k] for k in z.files if k.startswith("extras_")})
        return
    with h5py.File(p, "r") as f:
        if p.suffix.lower() == ".cxi" and f"{CXI_IMAGE}/process_1/configuration/provenance" in f:
            image = f[CXI_IMAGE]
            results = image["process_1/results"]
            arrays = {"object": image["data"], "support": image["mask"], "chi2": results["chi2"]}
            history = {k[len("history_"):]: results[k] for k in results if k.startswith("history_")}
            prov, extras = image["process_1/configuration/provenance"][()], image.get("extras", {})
        else:
            if "object" not in f:
                if "entry_1/data_1/data" in f:
                    raise InputError(f"{p} is a diffraction pattern (CXI data), not a reconstruction: "
                                     "run `cdinn phase` or `cdinn invert` on it first")
                raise InputError(f"{p} holds no cdinn result (no reconstructed object)")
            arrays, history, extras, prov = f, f.get("history", {}), f.get("extras", {}), f["provenance"][()]
        yield arrays, json.loads(prov.decode() if isinstance(prov, bytes) else str(prov)), history, extras


def _chi2(value: Any) -> float | np.ndarray:
    """A stored chi²: a float for one reconstruction, an array for a stack."""
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
