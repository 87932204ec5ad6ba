"""Preparing a measured pattern for reconstruction: centre on the Bragg peak (or, in forward
CDI, on the pattern's centre of symmetry), crop to an FFT-friendly box, bin, and resample to a
target oversampling and array size.

Oversampling is set by the reciprocal-space pixel: taking ``s`` measured pixels into one
prepared pixel divides the linear oversampling by ``s``; cropping the pattern changes the
resolution, not the oversampling. The resampling itself is in :mod:`cdinn.prepare.resample`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cdinn.errors import InputError
from cdinn.io.readers import check_fits
from cdinn.io.scan import SpecScan
from cdinn.physics import estimate_oversampling, fill_masked, pad_to
from cdinn.physics.geometry import DIFFRACTOMETERS, BraggGeometry
from cdinn.prepare.resample import METHODS, bin_pattern, block_dct_resample, dct_blocks, resample_mask, resample_pattern

CENTRES = ("auto", "max", "com", "friedel")


def fft_friendly(n: int) -> int:
    """Largest even integer ``<= n`` whose prime factors are 2, 3 and 5."""
    for m in range(int(n) - int(n) % 2, 1, -2):
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
    raise InputError(f"no FFT-friendly size <= {n}")


def find_centre(data: np.ndarray, mask: np.ndarray | None = None, method: str = "max") -> tuple[int, ...]:
    """Index of the pattern's centre, to be put at the array centre.

    Parameters
    ----------
    data : measured pattern
    mask : True where not measured (ignored by every method)
    method : str
        ``max``: the maximum of the 3-pixel box-smoothed pattern, the Bragg peak (smoothing
        makes a single hot pixel lose against the peak, whose neighbours are bright too).
        ``com``: the centre of mass of the intensity.
        ``friedel``: the centre of symmetry, for forward CDI where a beamstop hides the
        direct beam: the shift ``s`` whose ``log I(s - q)`` correlates best with ``log I(q)``
        over the measured pairs (the pattern of a real object is centro-symmetric, Friedel's
        law); the centre is ``s / 2``.
        ``auto``: ``friedel`` for 2D patterns, ``max`` for 3D ones.
    """
    if method not in CENTRES:
        raise InputError(f"unknown centring method {method!r}; use one of {', '.join(CENTRES)}")
    good = np.ones(data.shape, bool) if mask is None else ~np.asarray(mask, bool)
    d = np.where(good, data, 0).astype(np.float32)
    if method == "auto":
        method = "friedel" if data.ndim == 2 else "max"
    # scipy.ndimage imported on use: `cdinn phase` and `invert` import this module for the
    # input record only, and scipy.ndimage costs ~0.2 s of their start-up
    from scipy.ndimage import center_of_mass, uniform_filter

    if method == "max":
        smooth = uniform_filter(d, size=3, mode="constant")
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(smooth)), d.shape))
    if method == "com":
        return tuple(int(round(c)) for c in center_of_mass(np.clip(d, 0, None)))
    from scipy.signal import fftconvolve  # imported on use: scipy.signal costs ~0.5 s of every command's start-up

    a = np.log1p(np.clip(d, 0, None))
    w = good.astype(np.float32)
    # Masked normalised cross-correlation of a(q) with a(s - q): the sums over the measured
    # pairs of each shift s are convolutions, so every shift is scored alike.
    n = fftconvolve(w, w)
    s_a = fftconvolve(a, w)
    mean_sq = s_a**2 / np.maximum(n, 1.0)
    score = (fftconvolve(a, a) - mean_sq) / np.maximum(fftconvolve(a * a, w) - mean_sq, 1e-12)
    # Shifts with little overlap are pairs of edge pixels, not a symmetry of the pattern.
    score[n < 0.25 * w.sum()] = -np.inf
    s = np.unravel_index(int(np.argmax(score)), score.shape)
    return tuple(int(i) // 2 for i in s)


def _filled(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return data
    return fill_masked(torch.from_numpy(data), torch.from_numpy(mask)).numpy()


@dataclass
class Prepared:
    """A pattern ready for reconstruction and how it was obtained from the measurement.

    Attributes
    ----------
    intensity : float32, peak at the array centre
    mask : bool, True where not measured
    peak : peak index in the (binned) input
    factors : measured (binned) pixels per prepared pixel, per axis
    binning : integer binning applied first
    oversampling_input : linear oversampling per axis estimated on the measured box
    oversampling : linear oversampling per axis of the prepared pattern (``input / factors``)
    """

    intensity: np.ndarray
    mask: np.ndarray
    peak: tuple[int, ...]
    factors: tuple[float, ...]
    binning: tuple[int, ...]
    oversampling_input: tuple[float, ...]
    oversampling: tuple[float, ...]
    notes: list[str] = field(default_factory=list)


def prepare_pattern(
    data: np.ndarray,
    mask: np.ndarray | None = None,
    size: int | Sequence[int] | None = None,
    oversampling: float | None = None,
    binning: int | Sequence[int] = 1,
    threshold: float = 0.1,
    centre: str = "auto",
    method: str = "fourier",
) -> Prepared:
    """Centre, crop, bin and resample a measured 2D/3D pattern.

    Parameters
    ----------
    data : measured intensity (counts)
    mask : True where a pixel was not measured
    size : output size per axis (int or tuple); default the largest FFT-friendly box around
        the peak that the measurement holds
    oversampling : target linear oversampling per axis (>= 2 keeps the resampling exact);
        default keep the measured sampling. Where the measurement is too short to fill
        ``size`` pixels at that sampling, its whole range is used and the oversampling there
        stays higher (reported in ``Prepared.oversampling``).
    binning : integer binning (sum) applied before anything else
    threshold : threshold of the autocorrelation support used to estimate the oversampling
    centre : how the pattern's centre is found (:func:`find_centre`)
    method : resampling, ``fourier`` or ``dct`` (:mod:`cdinn.prepare.resample`); with
        ``dct`` the factor is rounded to a whole number of input pixels per DCT block

    Returns
    -------
    Prepared
    """
    if method not in METHODS:
        raise InputError(f"unknown resampling method {method!r}; use one of {', '.join(METHODS)}")
    data = np.asarray(data, dtype=np.float32)
    mask = np.zeros(data.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != data.shape:
        raise InputError(f"mask shape {mask.shape} does not match the data shape {data.shape}")
    ndim = data.ndim
    bins = (int(binning),) * ndim if np.isscalar(binning) else tuple(int(b) for b in binning)
    data, mask = bin_pattern(data, mask, bins)
    peak = find_centre(data, mask, centre)
    # The largest box centred (index M//2) on the peak that stays inside the measurement.
    box = tuple(fft_friendly(2 * min(c, n - c)) if min(c, n - c) >= 2 else 0 for c, n in zip(peak, data.shape))
    if min(box) < 4:
        raise InputError(f"the peak at {peak} is too close to the edge of the data {data.shape} to centre a box on it")
    sl = tuple(slice(c - b // 2, c - b // 2 + b) for c, b in zip(peak, box))
    meas, meas_mask = data[sl], mask[sl]
    over_in = estimate_oversampling(torch.from_numpy(meas), threshold=threshold, ndim=ndim, mask=torch.from_numpy(meas_mask))
    notes: list[str] = []
    if meas_mask[tuple(b // 2 for b in box)]:
        notes.append("the centre is masked (beamstop): the autocorrelation misses the low frequencies, so the "
                     "oversampling estimate (and an autocorrelation support) can be far off; check it against the object size")

    out_shape = box if size is None else ((int(size),) * ndim if np.isscalar(size) else tuple(int(s) for s in size))
    if len(out_shape) != ndim or min(out_shape) < 4:
        raise InputError(f"size {size}: need {ndim} sizes of at least 4")
    if any(n > 8 * b for n, b in zip(out_shape, box)):
        raise InputError(f"size {tuple(out_shape)}: more than 8 times the {tuple(box)} pixels measured around the peak; "
                         "the result would be padding (choose --size up to 8x the measurement, or a lower --oversampling)")
    check_fits(float(np.prod(out_shape)) * 4 * 8, f"a prepared pattern of {' x '.join(map(str, out_shape))} pixels")
    if oversampling is not None and oversampling <= 1:
        raise InputError(f"oversampling {oversampling}: must be above 1 (2 or more for a unique solution)")
    dct = method == "dct" and oversampling is not None
    used, factors = [], []
    for axis, (m, n, o) in enumerate(zip(box, out_shape, over_in)):
        s = 1.0 if oversampling is None else o / oversampling
        if s * n > m:
            if oversampling is not None:
                notes.append(f"axis {axis}: the measurement spans {m} pixels, too few for {n} at oversampling {oversampling:g}; kept {o * n / m:.2f}")
            s = min(m / n, 1.0) if oversampling is None else m / n
        if dct:
            k = dct_blocks(n)
            u = k * max(1, min(m // k, int(round(s * n / k))))
        else:
            u = max(2, min(m, 2 * int(round(s * n / 2))))
        used.append(u)
        factors.append(u / n)
    if dct:
        # Blocks average whole pixels: put the peak pixel in the middle of output pixel n//2
        # (the Fourier method maps index u//2 to n//2 exactly by itself).
        starts = [min(max(b // 2 - int(u / n * (n // 2 + 0.5)), 0), b - u) for b, u, n in zip(box, used, out_shape)]
    else:
        starts = [b // 2 - u // 2 for b, u in zip(box, used)]
    crop_sl = tuple(slice(a, a + u) for a, u in zip(starts, used))
    region, region_mask = meas[crop_sl], meas_mask[crop_sl]
    if tuple(used) == tuple(out_shape):
        intensity, out_mask = region.copy(), region_mask.copy()
    elif oversampling is None:
        # Keep the measured sampling: the shorter axes are padded with unmeasured pixels.
        intensity = pad_to(torch.from_numpy(region), out_shape).numpy()
        out_mask = ~pad_to(torch.from_numpy(~region_mask), out_shape).numpy()
        notes.append(f"padded {tuple(used)} measured pixels to {tuple(out_shape)}; the padding is masked")
        factors = [1.0] * ndim
    else:
        resample = block_dct_resample if dct else resample_pattern
        intensity = resample(_filled(region, region_mask), out_shape)
        out_mask = resample_mask(region_mask, factors, out_shape)
    intensity[out_mask] = 0
    claimed = tuple(o / f for o, f in zip(over_in, factors))
    return Prepared(intensity, out_mask, peak, tuple(factors), bins, tuple(over_in), claimed, notes)


def geometry_from_spec(
    spec: SpecScan,
    pixel_size_m: float = 55e-6,
    diffractometer: str = "34idc",
    overrides: dict[str, float] | None = None,
) -> BraggGeometry:
    """The measured geometry of a rocking scan from its SPEC record.

    Parameters
    ----------
    spec : the scan (motor positions at its start, the scanned motor and its column)
    pixel_size_m : detector pixel size (the SPEC file does not record it)
    diffractometer : key of :data:`cdinn.physics.geometry.DIFFRACTOMETERS`
    overrides : values replacing the SPEC ones: ``energy_kev``, ``distance_mm``, motor names
        (``Delta``, ``Gamma``, ``Theta``, ...) and ``rocking_step_deg``

    Raises
    ------
    InputError
        Unknown diffractometer, a scan that does not rock a sample circle, a missing motor.
    """
    if diffractometer not in DIFFRACTOMETERS:
        raise InputError(f"unknown diffractometer {diffractometer!r}; known: {', '.join(DIFFRACTOMETERS)}")
    d = DIFFRACTOMETERS[diffractometer]
    over = dict(overrides or {})
    motors = {**spec.motors, **{k: v for k, v in over.items() if k in spec.motors or k in d["sample_motors"] + d["detector_motors"]}}
    mnemonic = spec.scanned_motor
    if mnemonic not in d["sample_mnemonics"]:
        raise InputError(f"SPEC scan {spec.number} ({spec.command}) does not rock a sample circle ({', '.join(d['sample_mnemonics'])})")
    axis = d["sample_mnemonics"].index(mnemonic)
    column = d["sample_motors"][axis]
    missing = [m for m in d["sample_motors"] + d["detector_motors"] if m not in motors]
    if "energy_kev" not in over and "Energy" not in motors:
        missing.append("Energy")
    if "distance_mm" not in over and "camdist" not in motors:
        missing.append("camdist")
    if missing:
        raise InputError(f"SPEC scan {spec.number}: motor position(s) {', '.join(missing)} not recorded; give them as options")
    sample = [motors[m] for m in d["sample_motors"]]
    if column in spec.columns and len(spec.columns[column]) > 1:
        values = spec.columns[column]
        step = float(np.mean(np.diff(values)))
        sample[axis] = float(0.5 * (values[0] + values[-1]))
    else:
        words = spec.command.split()
        step = (float(words[3]) - float(words[2])) / float(words[4])
    step = float(over.get("rocking_step_deg", step))
    energy = float(over.get("energy_kev", motors.get("Energy", 0.0)))
    distance = float(over.get("distance_mm", motors.get("camdist", 0.0))) / 1000.0
    if energy <= 0 or distance <= 0 or step == 0:
        raise InputError(f"SPEC scan {spec.number}: energy {energy} keV, distance {distance} m, step {step} deg must be non-zero")
    return BraggGeometry(
        energy_kev=energy,
        distance_m=distance,
        pixel_size_m=(pixel_size_m, pixel_size_m),
        rocking_step_deg=step,
        sample_angles_deg=tuple(sample),
        detector_angles_deg=tuple(motors[m] for m in d["detector_motors"]),
        rocking_axis=axis,
        sample_axes=d["sample_axes"],
        detector_axes=d["detector_axes"],
        pixel_directions=d["pixel_directions"],
    )
