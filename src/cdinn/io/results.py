"""The result of a reconstruction and its file format (``.npz``, ``.h5`` or ``.cxi``)."""

from __future__ import annotations

import json
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
    chi2 : float
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
    chi2: float
    history: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def check_result_path(path: str | Path) -> Path:
    """Raise :class:`InputError` unless ``path`` has a result suffix."""
    p = Path(path)
    if p.suffix.lower() not in RESULT_SUFFIXES:
        raise InputError(f"output {p}: unknown result format {p.suffix or '(none)'!r}; use one of {', '.join(RESULT_SUFFIXES)}")
    return p


def write_result(path: str | Path, result: Result) -> Path:
    """Write ``result`` atomically; the format follows the suffix.

    ``.h5``/``.hdf5``/``.cxi`` hold datasets ``object``, ``support``, ``chi2``,
    ``history/<name>``, ``extras/<name>`` and ``provenance`` (a JSON string); ``.cxi`` adds the
    CXI entry ``/entry_1/image_1/data`` (a link to ``object``). ``.npz`` holds the same keys
    flattened (``history_<name>``, ``extras_<name>``).
    """
    p = check_result_path(path)
    prov = json.dumps(result.provenance, default=_json_default)
    with atomic_path(p) as tmp:
        if p.suffix.lower() == ".npz":
            arrays = {
                "object": result.object.astype(np.complex64),
                "support": result.support.astype(bool),
                "chi2": np.float64(result.chi2),
                "provenance": np.array(prov),
            }
            arrays.update({f"history_{k}": v for k, v in result.history.items()})
            arrays.update({f"extras_{k}": v for k, v in result.extras.items()})
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("object", data=result.object.astype(np.complex64), compression="gzip", shuffle=True)
                f.create_dataset("support", data=result.support.astype(bool), compression="gzip")
                f["chi2"] = float(result.chi2)
                f["provenance"] = prov
                for k, v in result.history.items():
                    f.create_dataset(f"history/{k}", data=v)
                for k, v in result.extras.items():
                    f.create_dataset(f"extras/{k}", data=v, compression="gzip" if np.ndim(v) > 0 else None)
                if p.suffix.lower() == ".cxi":
                    f["cxi_version"] = 150
                    f["entry_1/image_1/data"] = h5py.SoftLink("/object")
                    f["entry_1/image_1/support"] = h5py.SoftLink("/support")
                    f["entry_1/image_1/is_fft_shifted"] = 0
    return p


def read_result(path: str | Path) -> Result:
    """Read a result written by :func:`write_result`."""
    p = check_result_path(path)
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                history = {k[len("history_"):]: z[k] for k in z.files if k.startswith("history_")}
                extras = {k[len("extras_"):]: z[k] for k in z.files if k.startswith("extras_")}
                return Result(z["object"], z["support"], float(z["chi2"]), history, json.loads(str(z["provenance"])), extras)
        with h5py.File(p, "r") as f:
            history = {k: f["history"][k][()] for k in f.get("history", {})}
            extras = {k: f["extras"][k][()] for k in f.get("extras", {})}
            prov = f["provenance"][()]
            prov = prov.decode() if isinstance(prov, bytes) else str(prov)
            return Result(f["object"][()], f["support"][()], float(f["chi2"][()]), history, json.loads(prov), extras)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read result {p}: {exc}") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
