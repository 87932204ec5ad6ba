"""Issue 6: the experimental path on the APS 34-ID-C Au(111) scan 54.

Preparation time of the raw scan (target ≤ 10 s), then on the prepared 64³ and 128³ CXI:
cdinn's default phase retrieval against cohere-core 4.5.4 (same pattern, same autocorrelation
support, same ER/HIO + shrink-wrap schedule; chi² of both by ``cdinn.physics.chi2`` with the
mask), and the crystal size and strain range in the lab frame.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_cohere import run_cohere
from common import ROOT, log, table

from cdinn.cli.main import main as cdinn_main
from cdinn.io import read_pattern
from cdinn.physics import autocorrelation_support, chi2, intensity
from cdinn.prepare import read_geometry
from cdinn.report import analyse
from cdinn.retrieval import DEFAULT_RECIPE, phase_retrieval

TITLE = "Experimental path: APS 34-ID-C Au(111) scan 54"
ORDER = 60
RESULTS = "experimental"
SCAN = ROOT.parent / "shared" / "data" / "aps-34idc-au111-scan54"


def _prepare(size: int, out: Path) -> float:
    args = [
        "prepare", str(SCAN / "AD34idcTIM2_example" / "Staff20-1a_S0054"), "--spec", str(SCAN / "example.spec"),
        "--scan", "54", "--dark", str(SCAN / "dark.tif"), "--flat", str(SCAN / "whitefield.tif"),
        "--roi", "0:256,0:256", "--size", str(size), "--oversampling", "3" if size == 64 else "2", "-o", str(out),
    ]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if cdinn_main(args) != 0:
            raise RuntimeError("cdinn prepare failed")
    return time.perf_counter() - t0


def main(quick: bool) -> str:
    if not SCAN.is_dir():
        return f"{SCAN} is not present (skipped)."
    try:
        import cohere_core  # noqa: F401
        have_cohere = True
    except ImportError:
        have_cohere = False
    rows = []
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (64,) if quick else (64, 128):
            cxi = Path(tmp) / f"scan54_{size}.cxi"
            t_prep = _prepare(size, cxi)
            pattern, mask = read_pattern(cxi)
            support = autocorrelation_support(pattern, mask=mask).numpy()
            t0 = time.perf_counter()
            res = phase_retrieval(pattern, DEFAULT_RECIPE, mask=mask, support=support, seed=0, progress=False)
            t_cdinn = time.perf_counter() - t0
            chi_cdinn = float(chi2(intensity(res.object), pattern, mask))
            crystal = analyse(res, read_geometry(cxi))
            p1, p50, p99 = crystal.strain_percentiles()
            size_nm = " × ".join(f"{s:.0f}" for s in crystal.size_nm)
            cohere_cells = ["—", "—", "—"]
            if have_cohere:
                work = Path(tmp) / f"cohere_{size}"
                work.mkdir()
                t_coh, image, _ = run_cohere(np.where(mask, 0.0, pattern), support, work)
                chi_coh = float(chi2(intensity(np.conj(image).astype(np.complex64)), pattern, mask))
                cohere_cells = [f"{t_coh:.1f} s", f"{chi_coh:.3e}", f"{t_coh / t_cdinn:.1f}x"]
            log(f"scan54 {size}: prepare {t_prep:.1f} s, cdinn {t_cdinn:.1f} s chi2 {chi_cdinn:.3e}, cohere {cohere_cells}")
            rows.append([f"{size}³", f"{t_prep:.1f} s", f"{t_cdinn:.1f} s", f"{chi_cdinn:.3e}", *cohere_cells,
                         f"{size_nm} nm ({crystal.voxel_nm:.1f} nm voxels)", f"{p1:+.3f} … {p99:+.3f} %"])
    notes.append(
        "Scan 54 prepared with `cdinn prepare` (dark/flat, SPEC, ROI 0:256,0:256; oversampling 3 at 64³, 2 at 128³), "
        f"then `phase_retrieval` with the default recipe `{DEFAULT_RECIPE}`, one start, seed 0, the mask left free; "
        "cohere-core 4.5.4 (numpy) runs the same schedule from the same autocorrelation support on the pattern with masked "
        "pixels set to 0 (cohere has no free-pixel mask). chi² of both objects by `cdinn.physics.chi2` over the measured pixels. "
        "Size: extent of the 30 % amplitude isosurface in the lab frame; strain along G(111), 1st … 99th percentile."
    )
    header = ["size", "prepare", "cdinn PR-600", "cdinn chi²", "cohere PR-600", "cohere chi²", "cohere / cdinn time", "crystal (z × y × x)", "strain"]
    return "\n\n".join(notes + [table(header, rows)])
