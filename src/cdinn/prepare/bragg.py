"""Preparing a measured pattern for reconstruction: centre on the Bragg peak, crop to an
FFT-friendly box, bin, and resample to a target oversampling and array size.

Oversampling is set by the reciprocal-space pixel: taking ``s`` measured pixels into one
prepared pixel divides the linear oversampling by ``s``; cropping the pattern changes the
resolution, not the oversampling. The resampling by a non-integer ``s`` is exact for a
compact object: the autocorrelation (inverse transform of the intensity) is cropped or
zero-padded in real space, which is lossless while it still holds the whole autocorrelation,
i.e. for a target oversampling of at least 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import maximum_filter, uniform_filter

from cdinn.errors import InputError
from cdinn.io.scan import SpecScan
from cdinn.physics import estimate_oversampling, fill_masked, pad_to
from cdinn.physics import fourier_resample as physics_resample
from cdinn.physics.geometry import DIFFRACTOMETERS, BraggGeometry


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


def bin_pattern(data: np.ndarray, mask: np.ndarray, factors: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``factors`` pixels per axis into one; partly masked blocks are rescaled to full counts.

    A block is masked when less than half of it was measured. Trailing pixels that do not fill
    a block are dropped.
    """
    f = tuple(int(b) for b in factors)
    if len(f) != data.ndim or min(f) < 1:
        raise InputError(f"binning {factors}: need {data.ndim} positive integers")
    if all(b == 1 for b in f):
        return data, mask
    shape = tuple(n // b for n, b in zip(data.shape, f))
    if min(shape) < 4:
        raise InputError(f"binning {f} leaves a pattern of shape {shape}")
    cut = tuple(slice(0, n * b) for n, b in zip(shape, f))
    blocks = tuple(x for n, b in zip(shape, f) for x in (n, b))
    axes = tuple(range(1, 2 * len(f), 2))
    good = (~mask[cut]).reshape(blocks).sum(axis=axes)
    counts = np.where(mask, 0, data)[cut].reshape(blocks).sum(axis=axes)
    full = int(np.prod(f))
    binned = np.where(good > 0, counts * full / np.maximum(good, 1), 0.0)
    return binned.astype(np.float32), good < full / 2


def find_peak(data: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, ...]:
    """Index of the Bragg peak: the maximum of the 3-pixel box-smoothed pattern.

    Smoothing makes a single hot pixel lose against the peak, whose neighbours are bright too.
    """
    d = np.where(mask, 0, data) if mask is not None else data
    smooth = uniform_filter(d.astype(np.float32), size=3, mode="constant")
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(smooth)), d.shape))


def _filled(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return data
    return fill_masked(torch.from_numpy(data), torch.from_numpy(mask)).numpy()


def fourier_resample(intensity: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a centred pattern to ``shape`` pixels over the same reciprocal-space range.

    The autocorrelation is cropped or zero-padded to ``shape`` and transformed back; the total
    count is preserved (each new pixel holds the counts of the area it covers).
    """
    pattern = torch.from_numpy(np.ascontiguousarray(intensity, dtype=np.float32))
    out = physics_resample(pattern, shape, reciprocal=True).real.clamp_min(0).numpy()
    total = float(out.sum())
    return (out * (float(intensity.sum()) / total if total > 0 else 0.0)).astype(np.float32)


def _resample_mask(mask: np.ndarray, factors: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    if not mask.any():
        return np.zeros(tuple(shape), dtype=bool)
    # A prepared pixel is unmeasured if any measured pixel it covers was.
    grown = maximum_filter(mask, size=tuple(max(1, int(np.ceil(f))) for f in factors))
    idx = np.ix_(*[np.clip(np.round(m // 2 + (np.arange(n) - n // 2) * f).astype(int), 0, m - 1) for m, n, f in zip(mask.shape, shape, factors)])
    return grown[idx]


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

    Returns
    -------
    Prepared
    """
    data = np.asarray(data, dtype=np.float32)
    mask = np.zeros(data.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != data.shape:
        raise InputError(f"mask shape {mask.shape} does not match the data shape {data.shape}")
    ndim = data.ndim
    bins = (int(binning),) * ndim if np.isscalar(binning) else tuple(int(b) for b in binning)
    data, mask = bin_pattern(data, mask, bins)
    peak = find_peak(data, mask)
    # The largest box centred (index M//2) on the peak that stays inside the measurement.
    box = tuple(fft_friendly(2 * min(c, n - c)) if min(c, n - c) >= 2 else 0 for c, n in zip(peak, data.shape))
    if min(box) < 4:
        raise InputError(f"the peak at {peak} is too close to the edge of the data {data.shape} to centre a box on it")
    sl = tuple(slice(c - b // 2, c - b // 2 + b) for c, b in zip(peak, box))
    meas, meas_mask = data[sl], mask[sl]
    over_in = estimate_oversampling(_filled(meas, meas_mask), threshold=threshold, ndim=ndim)

    out_shape = box if size is None else ((int(size),) * ndim if np.isscalar(size) else tuple(int(s) for s in size))
    if len(out_shape) != ndim or min(out_shape) < 4:
        raise InputError(f"size {size}: need {ndim} sizes of at least 4")
    if oversampling is not None and oversampling <= 1:
        raise InputError(f"oversampling {oversampling}: must be above 1 (2 or more for a unique solution)")
    notes: list[str] = []
    used, factors = [], []
    for axis, (m, n, o) in enumerate(zip(box, out_shape, over_in)):
        s = 1.0 if oversampling is None else o / oversampling
        if s * n > m:
            if oversampling is not None:
                notes.append(f"axis {axis}: the measurement spans {m} pixels, too few for {n} at oversampling {oversampling:g}; kept {o * n / m:.2f}")
            s = min(m / n, 1.0) if oversampling is None else m / n
        u = max(2, min(m, 2 * int(round(s * n / 2))))
        used.append(u)
        factors.append(u / n)
    crop_sl = tuple(slice(b // 2 - u // 2, b // 2 - u // 2 + u) for b, u in zip(box, used))
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
        intensity = fourier_resample(_filled(region, region_mask), out_shape)
        out_mask = _resample_mask(region_mask, factors, out_shape)
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
