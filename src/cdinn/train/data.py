"""Training data for the trainer: simulated patterns held in memory, or HDF5 shards.

Every item is a dict of tensors: ``input`` (the normalised diffraction amplitude
``(1, *input)``, as the networks see it), ``amplitude`` and ``phase`` (the object,
centre-cropped to the network's output size) — real-space targets are only used by
supervised losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cdinn.physics.fourier import crop_to, pad_to
from cdinn.models.base import CDIModel
from cdinn.simulate.crystal import faceted_crystal, simulate_pattern
from cdinn.simulate.dataset import SimulatedDataset


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of a dataset: depends on nothing else."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class SimulatedPatterns(Dataset):
    """Faceted crystals simulated once into memory (deterministic per (seed, index)).

    Parameters
    ----------
    n : int
        Number of samples.
    size : int
        Pattern size per axis (the network input).
    ndim : int
        2 or 3.
    output_size : int
        Size per axis of the real-space targets (centre crop of the object array).
    oversampling : float or (low, high)
        Linear oversampling ratio, drawn per sample from the range.
    photons : (low, high)
        Total photon counts, drawn log-uniformly per sample; ``None`` for noise-free.
    phase_range : (low, high)
        Peak-to-peak phase inside the crystal, radians.
    seed : int
        Dataset seed.
    """

    def __init__(
        self,
        n: int,
        size: int,
        ndim: int = 3,
        output_size: int | None = None,
        oversampling: float | Sequence[float] = 2.0,
        photons: Sequence[float] | None = (1e7, 1e9),
        phase_range: Sequence[float] = (0.5, 3.0),
        seed: int = 0,
        progress: bool = True,
    ):
        output_size = output_size or size
        shape = (size,) * ndim
        os_range = (oversampling, oversampling) if isinstance(oversampling, (int, float)) else tuple(oversampling)
        self.inputs = torch.empty((n, 1) + shape)
        self.amplitude = torch.empty((n,) + (output_size,) * ndim)
        self.phase = torch.empty_like(self.amplitude)
        for i in tqdm(range(n), desc="simulating", disable=not progress, leave=False):
            rng = np.random.default_rng(sample_seed(seed, i))
            obj = faceted_crystal(shape, oversampling=rng.uniform(*os_range), phase_range=rng.uniform(*phase_range), seed=rng)
            photon = None if photons is None else float(np.exp(rng.uniform(np.log(photons[0]), np.log(photons[1]))))
            pattern = simulate_pattern(obj, photons=photon, seed=int(rng.integers(2**31)))
            self.inputs[i] = CDIModel.normalise(pattern, ndim)
            target = crop_to(obj, (output_size,) * ndim)
            self.amplitude[i] = target.abs()
            self.phase[i] = target.angle() * (target.abs() > 1e-3)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input": self.inputs[i], "amplitude": self.amplitude[i], "phase": self.phase[i]}


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or zero-pad every axis of ``x`` to ``size``."""
    shape = tuple(min(n, size) for n in x.shape)
    return pad_to(crop_to(x, shape), (size,) * x.ndim)


class ShardPatterns(Dataset):
    """Samples of a ``cdinn simulate`` dataset (sharded HDF5), read lazily, on a network's grids.

    The pattern is centre-cropped (or zero-padded) to the network's input size — a crop keeps
    the oversampling — and the object to its output size.

    Parameters
    ----------
    directory : dataset directory (``shard-*.h5``)
    input_size, output_size : the network's grids per axis
    indices : the samples to use (a train/validation split), default all
    """

    def __init__(self, directory: str, input_size: int, output_size: int, indices: Sequence[int] | None = None):
        self.source = SimulatedDataset(directory, keys=("intensity", "amplitude", "phase"))
        self.indices = list(range(len(self.source))) if indices is None else list(indices)
        self.input_size, self.output_size = input_size, output_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.source[self.indices[i]]
        pattern = _fit(item["intensity"].float(), self.input_size)
        ndim = pattern.ndim
        return {
            "input": CDIModel.normalise(pattern, ndim),
            "amplitude": _fit(item["amplitude"].float(), self.output_size),
            "phase": _fit(item["phase"].float(), self.output_size),
        }
