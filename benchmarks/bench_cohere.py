"""cdinn vs cohere-core 4.5.4 (numpy backend, CPU) on the same pattern and recipe (issue 2).

cohere-core is a benchmark-only dependency (the ``bench`` extra); the package never imports it.

How cohere is driven: ``cohere_core.controller.phasing.create_rec(params, data.npy, 'np', -1)``
then ``Rec.iterate()`` and ``Rec.get_image()`` — the same calls cohere's own reconstruction
scripts make. Its configuration mirrors cdinn's default recipe
``AVG**20 * ER**60 * (SUP * ER**10 * HIO**20)**4 * (SUP * ER**20 * HIO**80)**4``:

- ``algorithm_sequence = "80*HIO+20*ER+3*(80*HIO.SW0+20*ER)+4*(20*HIO.SW0+10*ER)+80*ER.SW0"``,
  ``hio_beta = 0.9`` (cdinn's default β);
- a shrink-wrap before iterations 100, 200, 300, 400, 430, 460, 490 and 520, i.e. after each HIO/ER
  block, as cdinn's ``SUP``: the blocks have two lengths, so one periodic trigger cannot say it;
  cohere's sub-trigger ``.SW0`` fires ``shrink_wrap_trigger[0] = [0]`` at the first iteration of
  the block it tags. Gaussian σ = 2 px, threshold 0.1 (cdinn's ``SUP`` defaults), given as
  one-element lists, as sub-triggers require;
- ``average_trigger = [-20, 1]``: the last 20 iterations averaged (cohere averages the
  amplitudes and keeps the last phase; cdinn averages phase-aligned complex iterates);
- the initial support is cdinn's autocorrelation support, handed to cohere as
  ``continue_dir/support.npy`` (cohere's own default is a box of half the array).

Differences that cannot be matched: cohere draws its random start with a time-based seed and
phases in [0, π/2) (cdinn: uniform phase, seeded); cohere computes in complex128 (its data
type choice) with scipy.fft, single-threaded; its shrink-wrap blurs with
``scipy.ndimage.gaussian_filter`` (reflecting edges; cdinn's blur is periodic).

Both results are judged by the same metric: ``cdinn.physics.chi2`` of the model intensity of
each final object against the measured pattern. cohere goes to reciprocal space with an
*inverse* FFT of the object (``to_reciprocal_space = ifftn``), so its object is the complex
conjugate of an object in cdinn's convention (``|ifft(x)| = |fft(conj x)|``): the model
intensity is ``cdinn.physics.intensity(conj(cohere_image))`` (positions do not matter: a
translation only changes the phase of the far field). The chi² of the un-conjugated object is
also shown, as a check of that reading.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from common import PATTERN_SEED, crystal_and_pattern, log, median, score, spread, table

import torch

from cdinn.physics import autocorrelation_support, chi2, intensity
from cdinn.retrieval import DEFAULT_RECIPE, parse_recipe, phase_retrieval

TITLE = "cdinn vs cohere-core 4.5.4 (numpy backend, CPU), 64³, same recipe"
ORDER = 20
TARGET = 5.0

COHERE_PARAMS = {
    "algorithm_sequence": "80*HIO+20*ER+3*(80*HIO.SW0+20*ER)+4*(20*HIO.SW0+10*ER)+80*ER.SW0",
    "hio_beta": 0.9,
    "shrink_wrap_trigger": [[0]],
    "shrink_wrap_type": "GAUSS",
    "shrink_wrap_gauss_sigma": [2.0],
    "shrink_wrap_threshold": [0.1],
    "average_trigger": [-20, 1],
}


def check_mirror(recipe: str = DEFAULT_RECIPE, params: dict = COHERE_PARAMS) -> None:
    """Raise unless cohere's flow runs ``recipe``'s iterations (HIO or ER at each one) and
    shrink-wraps before the same iterations: the comparison is only fair while it does."""
    from cohere_core.controller import op_flow

    ours, sup_before = [], []
    for step in parse_recipe(recipe):
        if step.name == "SUP":
            sup_before.append(len(ours))
        else:
            ours.append("HIO" if step.name == "HIO" else "ER")  # AVG is an ER iteration
    items = ["hio", "er", "shrink_wrap_operation"]
    _, flow, _ = op_flow.get_flow_arr(dict(params), items)
    theirs = ["HIO" if h else "ER" for h in flow[0]]
    if theirs != ours or np.flatnonzero(flow[2]).tolist() != sup_before:
        raise RuntimeError(f"COHERE_PARAMS no longer mirror the recipe {recipe!r}")


def run_cohere(pattern: np.ndarray, support: np.ndarray, workdir: Path, config: dict | None = None) -> tuple[float, np.ndarray, list]:
    """One cohere reconstruction (``config``: its parameters, default :data:`COHERE_PARAMS`);
    returns (seconds, final image, cohere's own error history)."""
    from cohere_core.controller import phasing

    data_file = workdir / "data.npy"
    if not data_file.exists():
        # cohere phases measured *amplitudes*, zero frequency at the centre (it fftshifts on load).
        np.save(data_file, np.sqrt(np.clip(pattern, 0, None)).astype(np.float32))
        cont = workdir / "continue"
        cont.mkdir()
        np.save(cont / "support.npy", support.astype(np.float32))
    params = dict(COHERE_PARAMS if config is None else config, continue_dir=str(workdir / "continue"))
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        worker = phasing.create_rec(params, str(data_file), "np", -1, debug=True)
        if worker is None:
            raise RuntimeError("cohere create_rec failed:\n" + sink.getvalue())
        if worker.iterate() != 0:
            raise RuntimeError("cohere iterate failed:\n" + sink.getvalue())
        image = np.asarray(worker.get_image())
    return time.perf_counter() - t0, image, list(worker.errs)


def main(quick: bool = False) -> str:
    try:
        import cohere_core  # noqa: F401
    except ImportError:
        return "cohere-core is not installed: `.venv/bin/pip install -e '.[bench]'` (skipped)."
    check_mirror()
    truth, pattern = crystal_and_pattern(PATTERN_SEED)
    support = autocorrelation_support(pattern).numpy()
    # Both start at random (cohere from the clock, cdinn from seeds 0..reps-1), and neither
    # recovers this crystal from every start (8 and 6 of 10 in one run): with 3 repeats the
    # median chi² was a coin toss.
    reps = 1 if quick else 10
    phase_retrieval(pattern, "ER**5", progress=False)  # warm-up
    rows = {k: [] for k in ("t_cdinn", "t_cdinn_1", "t_cohere", "ratio", "ratio_1", "chi_cdinn", "chi_cohere",
                            "chi_cohere_noconj", "err_cohere")}
    threads = torch.get_num_threads()
    sc_cdinn, sc_cohere = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            t0 = time.perf_counter()
            res = phase_retrieval(pattern, DEFAULT_RECIPE, starts=1, support=support, seed=rep, progress=False)
            t_cdinn = time.perf_counter() - t0
            torch.set_num_threads(1)  # like for like: cohere's numpy/scipy FFT runs on one thread
            t0 = time.perf_counter()
            phase_retrieval(pattern, DEFAULT_RECIPE, starts=1, support=support, seed=rep, progress=False)
            t_cdinn_1 = time.perf_counter() - t0
            torch.set_num_threads(threads)
            t_cohere, image, errs = run_cohere(pattern, support, Path(tmp))
            chi_cohere = float(chi2(intensity(np.conj(image).astype(np.complex64)), pattern))
            chi_noconj = float(chi2(intensity(image.astype(np.complex64)), pattern))
            chi_cdinn = float(chi2(intensity(res.object), pattern))
            for key, val in (("t_cdinn", t_cdinn), ("t_cdinn_1", t_cdinn_1), ("t_cohere", t_cohere),
                             ("ratio", t_cohere / t_cdinn), ("ratio_1", t_cohere / t_cdinn_1),
                             ("chi_cdinn", chi_cdinn), ("chi_cohere", chi_cohere),
                             ("chi_cohere_noconj", chi_noconj), ("err_cohere", errs[-1])):
                rows[key].append(val)
            sc_cdinn.append(score(res.object, truth))
            sc_cohere.append(score(np.conj(image), truth))
            log(f"rep {rep}: cdinn {t_cdinn:.1f} s chi2 {chi_cdinn:.2e}; cohere {t_cohere:.1f} s chi2 {chi_cohere:.2e} "
                f"(unconjugated {chi_noconj:.2e}); speed-up {t_cohere / t_cdinn:.1f}x")
    ratio = median(rows["ratio"])
    better = median(rows["chi_cdinn"]) <= median(rows["chi_cohere"])
    verdict = "meets" if ratio >= TARGET and better else "misses"

    def ssim_pe(scores):
        return (f"{median([s['ssim'] for s in scores]):.3f} / {median([s['phase_error'] for s in scores]):.3f}; "
                f"{sum(s['success'] for s in scores)}/{len(scores)} successes")

    md = [
        f"Pattern: faceted crystal seed {PATTERN_SEED}, 64³, Poisson 1e9 photons. cdinn: `{DEFAULT_RECIPE}`, "
        f"1 start, CPU torch. cohere-core 4.5.4: `create_rec(..., 'np', -1)` with "
        f"`{COHERE_PARAMS}`, 600 iterations. Both start from the same autocorrelation support. "
        f"{reps} repeat(s), cdinn and cohere alternating; median (min–max).",
        "",
        table(
            ["", "cdinn", "cohere-core 4.5.4 (numpy)"],
            [
                [f"wall time, 600 iterations (cdinn: {threads} threads, complex64; cohere: 1 thread, complex128)",
                 spread(rows["t_cdinn"], "{:.2f}") + " s", spread(rows["t_cohere"], "{:.2f}") + " s"],
                ["wall time, like for like: both on 1 thread", spread(rows["t_cdinn_1"], "{:.2f}") + " s",
                 spread(rows["t_cohere"], "{:.2f}") + " s"],
                ["per iteration", f"{median(rows['t_cdinn']) / 600 * 1e3:.2f} ms", f"{median(rows['t_cohere']) / 600 * 1e3:.2f} ms"],
                ["chi² (`cdinn.physics.chi2` of the final object)", spread(rows["chi_cdinn"], "{:.2e}"), spread(rows["chi_cohere"], "{:.2e}")],
                ["amplitude SSIM / phase error (rad) vs truth", ssim_pe(sc_cdinn), ssim_pe(sc_cohere)],
            ],
        ),
        "",
        f"**Speed-up cdinn / cohere: {spread(rows['ratio'], '{:.1f}')}×** (target ≥ {TARGET}× with chi² no worse: "
        f"**{verdict}**); on one thread each: {spread(rows['ratio_1'], '{:.1f}')}× (cdinn still in complex64: "
        "single precision is a choice cdinn makes, cohere's numpy backend does not offer it). cohere's own last error (`errs[-1]`, unscaled amplitude residual): "
        f"{spread(rows['err_cohere'], '{:.2e}')}; chi² of cohere's object *without* the conjugation: "
        f"{spread(rows['chi_cohere_noconj'], '{:.2e}')} (much larger: confirms cohere's inverse-FFT convention).",
        "",
        "Configuration differences that cannot be matched: cohere's random start uses a time-based seed "
        "and phases in [0, π/2); it computes in complex128 with scipy.fft on one thread (cdinn: complex64, "
        f"torch, {threads} threads, and 1 thread in the like-for-like row); its shrink-wrap blur reflects at the edges (cdinn's is periodic); its final "
        "average is of amplitudes with the last iterate's phase (cdinn averages phase-aligned complex iterates).",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    print(main(quick=True))
