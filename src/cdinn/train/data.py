"""Training data: samples of the ``simulate/`` generators, made on the fly or read from shards.

There is one simulation path: :func:`cdinn.simulate.generators.simulate_rows`. Sample ``i``
depends only on the dataset seed and ``i``, so a sample made in a DataLoader worker, in
another run or read back from a ``cdinn simulate`` shard is the same sample, and a resumed run
sees exactly the data an uninterrupted run would.

Every item is a dict of tensors: ``intensity`` (the measured pattern, counts, on the network's
input grid), ``amplitude``, ``phase`` and ``support`` (the object on the network's output
grid; real-space targets are used by supervised losses only). How a network scales its input
is the network's business (:meth:`cdinn.models.base.CDIModel.prepare`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cdinn.errors import InputError
from cdinn.physics.fourier import fit_to
from cdinn.simulate.dataset import SimulatedDataset
from cdinn.simulate.generators import KINDS, SimulationConfig, simulate_rows
from cdinn.simulate.masks import MaskSpec, detector_mask

MASK_STREAM = 0x6D61736B
"""Seeds a sample's detector mask apart from its simulation (same dataset seed and index)."""


def _item(row: dict[str, Any], input_size: int, output_size: int, centre: bool = True) -> dict[str, torch.Tensor]:
    item = {
        key: fit_to(torch.as_tensor(row[key]).float(), (input_size if key == "intensity" else output_size,) * row[key].ndim)
        for key in ("intensity", "amplitude", "phase", "support")
    }
    if centre and bool(item["support"].any()):
        # A pattern does not know where its object sits: a network can only learn targets
        # whose support is centred (the polygons generator places its objects anywhere).
        support = item["support"]
        idx = torch.nonzero(support).float().mean(dim=0)
        shifts = tuple(int(n // 2 - round(float(c))) for n, c in zip(support.shape, idx))
        dims = tuple(range(support.ndim))
        for key in ("amplitude", "phase", "support"):
            item[key] = torch.roll(item[key], shifts, dims)
    return item


def simulation_configs(
    kind: str | Sequence[str],
    input_size: int,
    ndim: int,
    oversampling: Sequence[float] = (2.0, 2.0),
    photons: Sequence[float] | None = (1e4, 1e9),
    seed: int = 0,
    augment: bool = True,
    options: dict[str, dict] | None = None,
) -> list[SimulationConfig]:
    """One :class:`SimulationConfig` per generator family, sampling oversampling ``[lo, hi]``.

    The object grid is the largest that ``lo`` allows (``input_size / lo``); each sample is
    Fourier-shrunk by a random factor so that the pattern side over the object-grid side
    covers ``[lo, hi]`` (the crystal itself fills ~85-95 % of its grid).
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    lo, hi = (float(oversampling), float(oversampling)) if isinstance(oversampling, (int, float)) else map(float, oversampling)
    if not 1.0 <= lo <= hi:
        raise ValueError(f"oversampling range must satisfy 1 <= lo <= hi, got {[lo, hi]}")
    object_size = max(8, int(input_size // lo))
    base = input_size / object_size
    resample = (base / hi, min(1.0, base / lo)) if hi > base else None
    configs = []
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown data kind {k!r}; use shards or one of {', '.join(KINDS)}")
        configs.append(SimulationConfig(
            kind=k, object_size=object_size, oversampling=base, ndim=ndim, seed=seed,
            photons=None if photons is None else (float(photons[0]), float(photons[1])),
            augment=augment, resample=resample, wrap_phase=True, options=dict((options or {}).get(k, {})),
        ))
    return configs


class GeneratedPatterns(Dataset):
    """``n`` samples simulated on demand; sample ``i`` comes from family ``i mod len(configs)``.

    Parameters
    ----------
    configs : simulation configurations (:func:`simulation_configs`), one per family
    n : number of samples
    input_size, output_size : the network's grids per axis
    first : index of the first sample (disjoint ranges make disjoint training and validation sets)
    centre : roll each target so that its support's centre of mass is at the grid centre
    masks : unmeasured detector pixels to simulate (:class:`cdinn.simulate.masks.MaskSpec`);
        each item then has a ``mask`` (True = not measured, the pattern zero there), drawn from
        the dataset seed and the sample index only
    """

    def __init__(self, configs: Sequence[SimulationConfig], n: int, input_size: int, output_size: int, first: int = 0,
                 centre: bool = True, masks: MaskSpec | None = None):
        self.configs, self.n, self.first = list(configs), int(n), int(first)
        self.input_size, self.output_size, self.centre, self.masks = input_size, output_size, centre, masks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        index = self.first + int(i)
        config = self.configs[index % len(self.configs)]
        item = _item(simulate_rows(config, index)[0], self.input_size, self.output_size, self.centre)
        if self.masks is not None:
            rng = np.random.default_rng((config.seed, index, MASK_STREAM))
            mask = torch.from_numpy(detector_mask(item["intensity"].shape, self.masks, rng))
            item["intensity"] = item["intensity"].masked_fill(mask, 0.0)
            item["mask"] = mask
        return item


def generated_patterns(data: dict[str, Any], input_size: int, output_size: int, ndim: int, seed: int, n: int,
                       first: int = 0) -> GeneratedPatterns:
    """``n`` samples from index ``first`` as a training configuration's ``data`` table describes
    them (families, ranges, masks, centring), drawn with ``seed``: the training and validation
    sets (the table's seed) and the held-out sets of model cards and tests (another seed).
    A bad table is an :class:`~cdinn.errors.InputError`."""
    d = {k: v for k, v in data.items() if k not in ("n_train", "n_val", "seed", "workers", "centre")}
    kind = d.pop("kind", "faceted")
    try:
        masks = MaskSpec.from_dict(d.pop("masks")) if "masks" in d else None
    except (TypeError, ValueError) as exc:
        raise InputError(f"data.masks: {exc}") from None
    try:
        configs = simulation_configs(kind, input_size, ndim, seed=seed, **d)
    except (TypeError, ValueError) as exc:
        raise InputError(f"data: {exc}") from None
    return GeneratedPatterns(configs, n, input_size, output_size, first=first, centre=bool(data.get("centre", True)),
                             masks=masks)


class ShardPatterns(Dataset):
    """Samples of a ``cdinn simulate`` dataset (sharded HDF5), read lazily, on a network's grids.

    The pattern is centre-cropped (or zero-padded) to the network's input size — a crop keeps
    the oversampling — and the object to its output size.

    Parameters
    ----------
    directory : dataset directory (``shard-*.h5``)
    input_size, output_size : the network's grids per axis
    indices : the samples to use (a train/validation split), default all
    centre : roll each target so that its support's centre of mass is at the grid centre
    """

    def __init__(self, directory: str, input_size: int, output_size: int, indices: Sequence[int] | None = None,
                 centre: bool = True):
        self.source = SimulatedDataset(directory, keys=("intensity", "amplitude", "phase", "support"), require_all=True)
        self.indices = list(range(len(self.source))) if indices is None else list(indices)
        self.input_size, self.output_size, self.centre = input_size, output_size, centre

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.source[self.indices[i]]
        return _item({k: item[k] for k in ("intensity", "amplitude", "phase", "support")}, self.input_size, self.output_size, self.centre)
