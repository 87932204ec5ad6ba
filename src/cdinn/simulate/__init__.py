"""Object generators, simulated diffraction patterns and sharded training sets."""

from cdinn.simulate.atomistic import atomistic_object, gold_crystal
from cdinn.simulate.augment import random_symmetry, shrink_sample
from cdinn.simulate.crystal import faceted_crystal, simulate_pattern
from cdinn.simulate.dataset import SimulatedDataset, write_dataset
from cdinn.simulate.generators import KINDS, SimulationConfig, simulate_rows
from cdinn.simulate.polygons import polygon_object
from cdinn.simulate.sample import Sample
from cdinn.simulate.superellipsoid import superellipsoid_object

__all__ = [
    "KINDS",
    "Sample",
    "SimulatedDataset",
    "SimulationConfig",
    "atomistic_object",
    "faceted_crystal",
    "shrink_sample",
    "gold_crystal",
    "polygon_object",
    "random_symmetry",
    "simulate_pattern",
    "simulate_rows",
    "superellipsoid_object",
    "write_dataset",
]
