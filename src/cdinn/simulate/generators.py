"""From (configuration, index) to dataset rows: generator dispatch, augmentation, diffraction.

Sample ``i`` of a dataset draws all its randomness from ``numpy.random.default_rng([seed, i])``,
so it depends only on the dataset seed and ``i`` — not on the worker, shard or run that made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from cdinn.physics.fourier import intensity, pad_to
from cdinn.physics.noise import poisson_noise
from cdinn.simulate.atomistic import atomistic_object, check_cells
from cdinn.simulate.augment import random_symmetry, shrink_sample
from cdinn.simulate.crystal import faceted_crystal
from cdinn.simulate.polygons import polygon_object
from cdinn.simulate.sample import Sample
from cdinn.simulate.superellipsoid import superellipsoid_object

KINDS = ("polygons", "superellipsoids", "atomistic", "faceted")
NDIM = {"polygons": 2, "superellipsoids": 3, "atomistic": 3}


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a dataset's content (with the sample count).

    Parameters
    ----------
    kind : str
        One of ``polygons``, ``superellipsoids``, ``atomistic``, ``faceted``.
    object_size : int
        Side of the object grid (the targets' shape).
    oversampling : float
        Zero-padding factor: patterns have ``round(object_size * oversampling)`` pixels a side.
    photons : (float, float), optional
        Range of the expected total counts, drawn log-uniformly per sample; ``None`` for
        noise-free intensities.
    seed : int
        Dataset seed.
    ndim : int
        2 or 3; fixed by the kind except for ``faceted``.
    augment : bool
        Apply a random right-angle rotation / flip to each object.
    resample : (float, float), optional
        Range of Fourier-resampling factors (<= 1): oversampling variants of each object.
    wrap_phase : bool
        Store the phase wrapped into (-pi, pi] instead of as generated.
    options : dict
        Generator-specific keyword arguments (e.g. ``cells`` and ``control`` for atomistic).
    """

    kind: str
    object_size: int = 32
    oversampling: float = 2.0
    photons: tuple[float, float] | None = None
    seed: int = 0
    ndim: int = 3
    augment: bool = False
    resample: tuple[float, float] | None = None
    wrap_phase: bool = False
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.kind in NDIM and self.ndim != NDIM[self.kind]:
            object.__setattr__(self, "ndim", NDIM[self.kind])
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.object_size < 8:
            raise ValueError(f"object size must be at least 8, got {self.object_size}")
        if self.oversampling < 1:
            raise ValueError(f"oversampling must be at least 1, got {self.oversampling}")
        if self.photons is not None and not 0 < self.photons[0] <= self.photons[1]:
            raise ValueError(f"photon range must satisfy 0 < LO <= HI, got {self.photons}")
        if self.resample is not None and not 0 < self.resample[0] <= self.resample[1] <= 1:
            raise ValueError(f"resampling range must satisfy 0 < LO <= HI <= 1, got {self.resample}")
        if self.kind == "atomistic":
            check_cells(self.object_size, self.options.get("cells"), self.options.get("voxel", 2.0))

    @property
    def object_shape(self) -> tuple[int, ...]:
        return (self.object_size,) * self.ndim

    @property
    def pattern_shape(self) -> tuple[int, ...]:
        return (int(round(self.object_size * self.oversampling)),) * self.ndim

    @property
    def rows_per_sample(self) -> int:
        """Rows a sample index yields: an atomistic crystal comes with its unstrained control."""
        return 2 if self.kind == "atomistic" and self.options.get("control", True) else 1

    def to_dict(self) -> dict:
        """JSON-ready form (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        d = dict(d)
        for k in ("photons", "resample"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def _faceted(config: SimulationConfig, rng: np.random.Generator) -> Sample:
    # A phase range below 2 pi around a zero mean stays within +-pi: angle() is exact; above
    # it (options max_phase_range) the stored phase is wrapped.
    ptp = rng.uniform(0.5, float(config.options.get("max_phase_range", 3.0)))
    # oversampling 1.15 inside the object grid keeps the smooth edge off the grid border.
    obj = faceted_crystal(config.object_shape, oversampling=1.15, phase_range=ptp, seed=rng).numpy()
    amplitude = np.abs(obj)
    support = amplitude >= 0.5
    phase = np.where(support, np.angle(obj), 0.0)
    return Sample(amplitude.astype(np.float32), phase.astype(np.float32), support, {"phase_range": float(ptp)})


def generate_objects(config: SimulationConfig, rng: np.random.Generator) -> list[Sample]:
    """The real-space objects of one sample index (two for atomistic with control)."""
    opts = config.options
    if config.kind == "polygons":
        return [polygon_object(config.object_size, seed=rng, **opts)]
    if config.kind == "superellipsoids":
        return [superellipsoid_object(config.object_size, seed=rng, **opts)]
    if config.kind == "faceted":
        return [_faceted(config, rng)]
    kwargs = {k: v for k, v in opts.items() if k != "control"}
    strained, control = atomistic_object(config.object_size, seed=rng, **kwargs)
    return [strained, control] if config.rows_per_sample == 2 else [strained]


def simulate_rows(config: SimulationConfig, index: int) -> list[dict[str, np.ndarray | dict]]:
    """Dataset rows of sample ``index``: pattern, targets and parameters.

    Returns
    -------
    list of dict
        Each with ``intensity`` (float32, pattern shape), ``amplitude``, ``phase`` (float32,
        object shape), ``support`` (bool) and ``params`` (dict of floats, fixed keys).
    """
    rng = np.random.default_rng([config.seed, index])
    objects = generate_objects(config, rng)
    # One augmentation draw per index: a crystal and its control stay the same shape.
    sym_seed = int(rng.integers(2**63))
    factor = rng.uniform(*config.resample) if config.resample else None
    rows = []
    for sample in objects:
        if config.augment:
            sample = random_symmetry(sample, np.random.default_rng(sym_seed))
        if factor is not None:
            sample = shrink_sample(sample, factor)
        pattern = intensity(pad_to(torch.from_numpy(sample.object), config.pattern_shape))
        params = dict(sample.params, photons=float("nan"))
        if config.photons is not None:
            lo, hi = np.log(config.photons)
            params["photons"] = float(np.exp(rng.uniform(lo, hi)))
            gen = torch.Generator().manual_seed(int(rng.integers(2**63)))
            pattern = poisson_noise(pattern, params["photons"], generator=gen)
        phase = np.angle(np.exp(1j * sample.phase)) if config.wrap_phase else sample.phase
        rows.append(
            {
                "intensity": pattern.numpy().astype(np.float32),
                "amplitude": sample.amplitude.astype(np.float32),
                "phase": phase.astype(np.float32),
                "support": sample.support.astype(bool),
                "params": params,
            }
        )
    return rows
