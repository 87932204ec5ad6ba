"""Export of lab-frame volumes as VTK XML ImageData (``.vti``) for ParaView, via pyevtk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdinn.io.atomic import atomic_path


def write_vti(path: str | Path, fields: dict[str, np.ndarray], voxel_nm: float) -> Path:
    """Write 3D point fields on a cubic grid, atomically.

    Parameters
    ----------
    path : output ``.vti`` file
    fields : name -> array of axes ``(z, y, x)`` (as :func:`cdinn.physics.geometry.to_lab`
        returns); booleans become uint8, NaN becomes 0
    voxel_nm : grid spacing; coordinates are in nm, centred on the array centre
    """
    from pyevtk.hl import imageToVTK

    out = Path(path)
    if out.suffix.lower() != ".vti":
        out = out.with_suffix(".vti")
    shape = next(iter(fields.values())).shape
    # VTK runs x fastest: (z, y, x) C-order arrays are (x, y, z) Fortran-order arrays.
    data = {
        name: np.asfortranarray(np.nan_to_num(a.astype(np.uint8 if a.dtype == bool else np.float32)).transpose(2, 1, 0))
        for name, a in fields.items()
    }
    origin = tuple(-(n // 2) * voxel_nm for n in shape[::-1])
    with atomic_path(out, suffix=".vti") as tmp:
        imageToVTK(str(tmp)[: -len(".vti")], origin=origin, spacing=(voxel_nm,) * 3, pointData=data)
    return out
