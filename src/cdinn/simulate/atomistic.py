"""Faceted gold crystals from an atomistic model (3D-CDI-NN and AutoPhaseNN, Methods).

An FCC gold cube is clipped by 4-20 planes of random high-symmetry orientations at random
distances from its centre and relaxed with a real interatomic potential (asap3's EMT, which
has built-in gold parameters). A random combination of compression, tension and shear (each
strain component at most 1 %) is applied by deforming the box with the atoms remapped, and
the crystal is relaxed again. Positions are in units of the lattice constant; the atom number
density and the displacement (final - initial) projected on the (111) reciprocal lattice vector
are deposited on the object grid (cloud-in-cell).

Strain relaxes from the free surfaces inward: a fully converged minimisation of a free
crystal would remove a homogeneous box strain altogether, so the field that survives is set
by the minimiser budget (``fmax``, ``max_steps``), as in the papers' LAMMPS minimisations.
LAMMPS (EAM) as an alternative engine is not implemented: asap3's EMT is the only engine.
"""

from __future__ import annotations

import itertools

import numpy as np

from cdinn.simulate.sample import Sample

GOLD_LATTICE = 4.078  # angstrom, lattice constant of gold at room temperature
HKL = np.array([1.0, 1.0, 1.0])  # the Bragg reflection whose phase is imaged


def _require_asap():
    try:
        from asap3 import EMT
        from ase import Atoms
        from ase.optimize import FIRE
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the atomistic generator needs ase and asap3: pip install ase asap3") from exc
    return Atoms, EMT, FIRE


def high_symmetry_normals() -> np.ndarray:
    """Unit normals of the {100}, {110} and {111} planes of a cubic lattice (26 of them)."""
    vecs = [v for v in itertools.product((-1, 0, 1), repeat=3) if any(v)]
    normals = np.array(vecs, dtype=np.float64)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def fcc_block(cells: int) -> np.ndarray:
    """Sites of a cube of ``cells``³ FCC unit cells, lattice constant 1, centred on the origin.

    Centred on the cube's geometric centre, the crystal sits symmetrically in the object grid.
    """
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    sites = (grid + basis).reshape(-1, 3)
    return sites - (cells - 0.5) / 2


def clip_planes(cells: int, rng: np.random.Generator, n_planes: tuple[int, int] = (4, 20)) -> tuple[np.ndarray, np.ndarray]:
    """Random clip planes: normals among the high-symmetry ones, distances from the centre.

    Each distance is drawn in ``[0.5, 1]`` times the cube's extent along that normal, so every
    plane can cut the cube and none leaves less than a half-size crystal along its normal.
    """
    normals = high_symmetry_normals()
    k = int(rng.integers(n_planes[0], n_planes[1] + 1))
    chosen = normals[rng.choice(len(normals), size=min(k, len(normals)), replace=False)]
    extent = 0.5 * cells * np.abs(chosen).sum(axis=1)
    return chosen, rng.uniform(0.5, 1.0, len(chosen)) * extent


def random_strain(max_strain: float, rng: np.random.Generator) -> np.ndarray:
    """A symmetric strain tensor: normal (compression/tension) and shear components in ±max."""
    upper = np.triu(rng.uniform(-max_strain, max_strain, (3, 3)))
    return upper + np.triu(upper, 1).T


def relax(atoms, fmax: float, max_steps: int) -> int:
    """Minimise the energy with FIRE; returns the number of steps taken."""
    _, _, FIRE = _require_asap()
    # ASE's FIRE caps the norm of the whole step vector: with the default 0.2 Å a 250k-atom
    # crystal crawls (200 steps do not converge). Capping the RMS step per atom at 0.05 Å
    # instead converges in 2-3x fewer steps to a lower energy.
    opt = FIRE(atoms, logfile=None, maxstep=0.05 * np.sqrt(len(atoms)))
    opt.run(fmax=fmax, steps=max_steps)
    return int(opt.nsteps)


def gold_crystal(
    cells: int = 49,
    max_strain: float = 0.01,
    fmax: float = 0.05,
    max_steps: int = 200,
    seed: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Clip, relax, strain and relax again an FCC gold crystal.

    Parameters
    ----------
    cells : int
        Edge of the initial cube in unit cells (49 cells of 4.078 Å is about 20 nm).
    max_strain : float
        Largest magnitude of each component of the applied strain tensor.
    fmax : float
        Force convergence of both minimisations, eV/Å.
    max_steps : int
        Step budget of each minimisation.
    seed : int or numpy Generator, optional
        Randomness; the same seed gives the same crystal.

    Returns
    -------
    initial, final : ndarray, shape (n_atoms, 3)
        Positions after the first and the second minimisation, lattice constant 1, crystal
        centre at the origin.
    params : dict
        Number of atoms and planes, the applied strain components ``eps_ij``, the steps of
        both minimisations.
    """
    Atoms, EMT, _ = _require_asap()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sites = fcc_block(cells)
    normals, dist = clip_planes(cells, rng)
    sites = sites[(sites @ normals.T <= dist).all(axis=1)]

    box = np.eye(3) * (cells + 10) * GOLD_LATTICE
    atoms = Atoms(f"Au{len(sites)}", positions=sites * GOLD_LATTICE, cell=box, pbc=False)
    atoms.calc = EMT()
    steps1 = relax(atoms, fmax, max_steps)
    initial = atoms.get_positions() / GOLD_LATTICE

    eps = random_strain(max_strain, rng)
    # Deform the box and remap the atoms (positions are about the origin, so x -> (I + eps) x).
    atoms.set_cell(box @ (np.eye(3) + eps).T, scale_atoms=True)
    steps2 = relax(atoms, fmax, max_steps)
    final = atoms.get_positions() / GOLD_LATTICE

    params = {"n_atoms": float(len(sites)), "n_planes": float(len(normals)), "steps_relax": float(steps1), "steps_strain": float(steps2)}
    params.update({f"eps_{i}{j}": float(eps[i, j]) for i in range(3) for j in range(i, 3)})
    return initial, final, params


def deposit_atoms(positions: np.ndarray, phases: np.ndarray, size: int, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """Atom number density (normalised to max 1) and weighted mean phase per voxel, by
    cloud-in-cell deposition.

    Each atom is shared among the 8 voxels around it with trilinear weights, so the density is
    the lattice's band-limited average: an unstrained lattice fills its interior exactly
    uniformly at any voxel size that is a whole number of unit cells, and a strained one varies
    smoothly with the local volume change. Binning each atom into its nearest voxel instead
    aliases the strain into one-voxel jumps of whole atoms (interior values between 2/4 and 6/4
    of the bulk). Voxel ``i`` along an axis is centred on ``(i - size // 2) * voxel``: the
    origin is the array centre, the cdinn convention.
    """
    grid = positions / voxel + size // 2
    base = np.floor(grid).astype(np.int64)
    frac = grid - base
    if (base < 0).any() or (base + 1 >= size).any():
        raise ValueError(f"crystal does not fit in a grid of {size} voxels of {voxel} lattice units")
    counts = np.zeros(size**3)
    total = np.zeros(size**3)
    for corner in itertools.product((0, 1), repeat=3):
        c = np.array(corner)
        weight = np.prod(np.where(c, frac, 1.0 - frac), axis=1)
        flat = np.ravel_multi_index((base + c).T, (size,) * 3)
        counts += np.bincount(flat, weights=weight, minlength=size**3)
        total += np.bincount(flat, weights=weight * phases, minlength=size**3)
    counts = counts.reshape((size,) * 3)
    total = total.reshape((size,) * 3)
    phase = np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)
    return counts / counts.max(), phase


def check_cells(size: int, cells: int | None = None, voxel: float = 2.0) -> int:
    """The crystal's cube edge in unit cells: ``cells``, or by default ``size * voxel - 15``.

    Raises ValueError unless the cube plus 5 lattice units of padding each side fits the grid.
    """
    cells = int(size * voxel - 15) if cells is None else int(cells)
    if cells < 2 or cells + 10 > size * voxel:
        raise ValueError(f"{cells} unit cells plus 5 of padding each side do not fit in {size} voxels of {voxel} lattice units")
    return cells


def atomistic_object(
    size: int = 32,
    cells: int | None = None,
    voxel: float = 2.0,
    max_strain: float = 0.01,
    fmax: float = 0.05,
    max_steps: int = 200,
    seed: int | np.random.Generator | None = None,
) -> tuple[Sample, Sample]:
    """A strained atomistic gold crystal and its unstrained control, on the object grid.

    Parameters
    ----------
    size : int
        Side of the cubic object grid (32 in the papers).
    cells : int, optional
        Edge of the initial FCC cube in unit cells; default ``size * voxel - 15``, which leaves
        at least 7.5 lattice units of padding each side (49 cells, about 20 nm, for 32).
    voxel : float
        Voxel edge in lattice units (the papers: about 2).
    max_strain, fmax, max_steps, seed
        See :func:`gold_crystal`.

    Returns
    -------
    strained, control : Sample
        Amplitude: the deposited atom number density of the final crystal, normalised to 1.
        Phase: ``2 pi (111) . u`` with ``u`` the displacement in lattice units, i.e. the
        displacement along [111] in units of the (111) spacing times ``2 pi``; the control
        has the same amplitude and zero phase. Support: voxels with density >= 0.1.
    """
    cells = check_cells(size, cells, voxel)
    initial, final, params = gold_crystal(cells, max_strain, fmax, max_steps, seed)
    phases = 2 * np.pi * (final - initial) @ HKL
    amplitude, phase = deposit_atoms(final, phases, size, voxel)
    support = amplitude >= 0.1
    phase = np.where(support, phase, 0.0)
    amplitude, phase = amplitude.astype(np.float32), phase.astype(np.float32)
    params["control"] = 0.0
    strained = Sample(amplitude, phase, support, params)
    control = Sample(amplitude, np.zeros_like(phase), support, dict(params, control=1.0))
    return strained, control
