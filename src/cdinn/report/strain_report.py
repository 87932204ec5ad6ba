"""The physics reading of a Bragg CDI reconstruction: the crystal in the lab frame, its size
in nm, displacement and strain along G, and one figure that shows them at a glance."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import distance_transform_edt  # noqa: E402
from skimage.measure import marching_cubes  # noqa: E402

from cdinn.report.figures import describe, phase_limit, save_figure, scale_bar  # noqa: E402
from cdinn.io.results import Result  # noqa: E402
from cdinn.physics.geometry import BraggGeometry, lab_vector_to_grid, to_lab  # noqa: E402
from cdinn.physics.strain import StrainMap, bragg_norm, strain_map  # noqa: E402
from cdinn.physics.support import largest_component  # noqa: E402


@dataclass
class Crystal:
    """A reconstruction on a cubic lab grid (axes z, y, x; z along the beam).

    Attributes
    ----------
    obj : complex object
    strain : phase, displacement (nm) and strain along G inside the crystal, on the lab grid
    native : the same on the reconstruction's own (detector) grid, where they were computed;
        its voxels all have the same volume, so its statistics are the crystal's, free of
        interpolation
    voxel_nm : grid spacing
    g_grid : unit Bragg vector along the grid axes
    size_nm : extent of the crystal along z, y, x
    """

    obj: np.ndarray
    strain: StrainMap
    native: StrainMap
    voxel_nm: float
    g_grid: np.ndarray
    size_nm: tuple[float, float, float]

    @property
    def support(self) -> np.ndarray:
        """The crystal's voxels."""
        return self.strain.support

    def strain_percentiles(self, q: Sequence[float] = (1, 50, 99)) -> np.ndarray:
        """Percentiles of the strain (in %) inside the crystal."""
        s = self.native.strain[self.native.support]
        return np.nanpercentile(s[np.isfinite(s)] * 100, q)


def crystal_support(amplitude: np.ndarray, threshold: float) -> np.ndarray:
    """Largest connected region where the amplitude is at least ``threshold`` of its maximum."""
    return largest_component(torch.from_numpy(amplitude >= threshold * amplitude.max())).numpy()


def analyse(
    result: Result,
    geometry: BraggGeometry,
    hkl: Sequence[int] | None = (1, 1, 1),
    lattice_nm: float | None = 0.408,
    threshold: float = 0.3,
) -> Crystal:
    """Put a 3D reconstruction in the lab frame and compute its strain along G.

    Parameters
    ----------
    result : reconstruction of a pattern prepared with ``geometry``
    geometry : the prepared pattern's Bragg geometry
    hkl, lattice_nm : reflection and cubic lattice constant giving |G|; None uses the
        measured |q| of the Bragg peak instead (Au(111): (1, 1, 1), 0.408 nm)
    threshold : amplitude fraction of the crystal's surface
    """
    if result.object.ndim != 3:
        raise ValueError("the strain analysis needs a 3D Bragg reconstruction")
    basis = geometry.real_space_basis(result.object.shape)
    q = geometry.q_bragg()
    g_norm = bragg_norm(hkl, lattice_nm) if hkl is not None and lattice_nm is not None else float(np.linalg.norm(q))
    # Strain on the detector grid (exact chain rule), then every field moved to the lab grid.
    native = strain_map(result.object, crystal_support(np.abs(result.object), threshold), q, g_norm, basis)
    obj, voxel = to_lab(result.object, basis)
    support = crystal_support(np.abs(obj), threshold)
    # Each field is extended outwards by its nearest inside value first, so that interpolation
    # at the crystal's surface never mixes in the NaNs of the outside.
    _, nearest = distance_transform_edt(~native.support, return_indices=True)
    phase, strain = (np.where(support, to_lab(f[tuple(nearest)], basis, voxel_nm=voxel)[0], np.nan)
                     for f in (native.phase, native.strain))
    idx = np.nonzero(support)
    size = tuple(float((i.max() - i.min() + 1) * voxel) for i in idx)
    smap = StrainMap(phase, phase / g_norm, strain, support, g_norm)
    return Crystal(obj, smap, native, voxel, lab_vector_to_grid(q / np.linalg.norm(q)), size)  # type: ignore[arg-type]


def _bbox(support: np.ndarray, margin: int = 3) -> tuple[slice, ...]:
    idx = np.nonzero(support)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1)) for i, n in zip(idx, support.shape))


STRAIN_RANGE_MIN = 0.02
"""Smallest default half-range of the strain colour scale (%): see ``figures.PHASE_RANGE_MIN``."""


def _isosurface(ax: plt.Axes, crystal: Crystal, threshold: float, p_lim: float) -> plt.cm.ScalarMappable:
    """The crystal's surface coloured by phase on the slices' scale, and G drawn outside it."""
    amp = np.abs(crystal.obj)
    box = _bbox(crystal.support, 2)
    a = amp[box] / amp.max()
    verts, faces, _, _ = marching_cubes(a, level=threshold, spacing=(crystal.voxel_nm,) * 3)
    # Colour each face by the phase of the nearest crystal voxel (the surface lies half outside).
    phase = np.where(crystal.support, crystal.strain.phase, np.nan)[box]
    _, nearest = distance_transform_edt(~np.isfinite(phase), return_indices=True)
    filled = phase[tuple(nearest)]
    vidx = np.clip(np.round(verts / crystal.voxel_nm).astype(int), 0, np.array(a.shape) - 1)
    face_phase = filled[tuple(vidx.T)][faces].mean(axis=1)
    mappable = plt.cm.ScalarMappable(plt.Normalize(-p_lim, p_lim), "coolwarm")
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    # Plot (x, y, z) from grid (z, y, x) vertices so that the picture is in the lab frame.
    xyz = verts[:, ::-1]
    mesh = Poly3DCollection(xyz[faces], facecolors=mappable.to_rgba(face_phase), edgecolor="none", linewidth=0)
    ax.add_collection3d(mesh)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    span = hi - lo
    # G from a corner of the box, pointing inwards-and-along G but starting outside the crystal.
    g = crystal.g_grid[::-1]
    start = np.where(g >= 0, lo, hi) - 0.15 * span * np.sign(g + 1e-12)
    length = 0.5 * span.max()
    ends = np.stack([start, start + g * length])
    lo, hi = np.minimum(lo, ends.min(axis=0)), np.maximum(hi, ends.max(axis=0))
    for setter, k in ((ax.set_xlim, 0), (ax.set_ylim, 1), (ax.set_zlim, 2)):
        setter(lo[k], hi[k])
    ax.set_box_aspect(hi - lo + 1e-6)
    ax.quiver(*start, *(g * length), color="k", linewidth=2, arrow_length_ratio=0.2)
    ax.text(*(start - g * length * 0.12), "G", fontsize=9, weight="bold")  # at the tail: outside the crystal
    ax.set_xlabel("x (nm)", fontsize=7)
    ax.set_ylabel("y (nm)", fontsize=7)
    ax.set_zlabel("z, beam (nm)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title(f"isosurface at {threshold:.0%} of the maximum amplitude,\ncoloured by phase", fontsize=8)
    return mappable


def strain_figure(
    path: str | Path,
    crystal: Crystal,
    result: Result,
    title: str = "",
    threshold: float = 0.3,
    phase_range: float | None = None,
    strain_range: float | None = None,
    amplitude_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """One page: slices of amplitude, phase and strain through the crystal's centre of mass
    with nm scale bars, the isosurface coloured by phase on the same scale with G, the strain
    histogram and the reconstruction's numbers.

    ``phase_range`` (rad) and ``strain_range`` (%) fix the half-ranges of the symmetric colour
    scales; by default the 99th percentile inside the crystal, at least ``PHASE_RANGE_MIN`` and
    :data:`STRAIN_RANGE_MIN`, so that a flat field is not stretched. ``amplitude_range``: the
    amplitude scale as fractions of the maximum.
    """
    box = _bbox(crystal.support)
    com = [int(round(np.mean(i))) for i in np.nonzero(crystal.support)]
    amp = np.abs(crystal.obj) / np.abs(crystal.obj).max()
    phase = np.where(crystal.support, crystal.strain.phase, np.nan)
    strain = np.where(crystal.support, crystal.strain.strain * 100, np.nan)
    # Planes through the crystal's centre of mass: (name, slicer, horizontal label, vertical label).
    planes = [
        ("x-y plane", (com[0], box[1], box[2]), "x", "y"),
        ("x-z plane", (box[0], com[1], box[2]), "x", "z"),
        ("y-z plane", (box[0], box[1], com[2]), "y", "z"),
    ]
    inside = np.isfinite(strain)
    s_lim = float(strain_range) if strain_range is not None else max(float(np.percentile(np.abs(strain[inside]), 99)), STRAIN_RANGE_MIN)
    p_lim = phase_limit(phase, phase_range)
    rows = [
        ("amplitude", amp, "gray", amplitude_range, "amplitude / max"),
        ("phase", phase, "coolwarm", (-p_lim, p_lim), "rad"),
        ("strain ε along G", strain, "coolwarm", (-s_lim, s_lim), "%"),
    ]
    fig = plt.figure(figsize=(13, 9.5), layout="constrained")
    grid = fig.add_gridspec(3, 5, width_ratios=[1, 1, 1, 0.08, 1.5])
    for r, (name, vol, cmap, lim, unit) in enumerate(rows):
        for c, (plane, sl, hx, vy) in enumerate(planes):
            ax = fig.add_subplot(grid[r, c])
            img = vol[sl]
            im = ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1], origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(hx, fontsize=8)
            ax.set_ylabel(vy, fontsize=8)
            ax.set_title(f"{name}: {plane}", fontsize=8)
            scale_bar(ax, crystal.voxel_nm, img.shape[1], color="k" if r else "w")
        fig.colorbar(im, cax=fig.add_subplot(grid[r, 3]), label=unit)
    side = grid[:, 4].subgridspec(3, 2, height_ratios=[1.4, 0.8, 0.8], width_ratios=[1, 0.05])
    iso = _isosurface(fig.add_subplot(side[0, 0], projection="3d"), crystal, threshold, p_lim)
    fig.colorbar(iso, cax=fig.add_subplot(side[0, 1]), label="phase (rad)")
    ax = fig.add_subplot(side[1, :])
    values = crystal.native.strain[crystal.native.support] * 100
    values = values[np.isfinite(values)]
    ax.hist(values, bins=60, range=(-s_lim * 1.5, s_lim * 1.5), color="tab:blue")
    ax.set_xlabel("strain ε along G (%)", fontsize=8)
    ax.set_ylabel("voxels (reconstruction grid)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    p1, p50, p99 = crystal.strain_percentiles()
    ax = fig.add_subplot(side[2, :])
    ax.axis("off")
    prov = result.provenance
    if prov.get("method") == "invert":
        # textwrap keeps a long refinement recipe whole instead of cutting it off.
        how = [f"model: {prov.get('model', '?')}", *textwrap.wrap(f"refine: {prov.get('refine', '?')}", 44),
               f"chi² = {result.chi2:.4g}"]
    else:
        how = [*textwrap.wrap(f"recipe: {prov.get('recipe', '?')}", 44),
               f"chi² = {result.chi2:.4g}   starts: {prov.get('starts', '?')}"]
    lines = [
        *([f"scan {prov['scan']}" + (f", {prov['energy_kev']:.2f} keV" if prov.get("energy_kev") else "")] if prov.get("scan") else []),
        f"method: {prov.get('method', '?')}",
        *how,
        f"voxel {crystal.voxel_nm:.1f} nm (lab frame, cubic)",
        "crystal z × y × x: " + " × ".join(f"{s:.0f}" for s in crystal.size_nm) + " nm",
        f"|G| = {crystal.strain.g_norm:.3f} nm⁻¹, d = {2 * np.pi / crystal.strain.g_norm:.4f} nm",
        f"strain 1–99 %: {p1:+.3f} … {p99:+.3f} %",
        f"strain median {p50:+.3f} %, std {np.nanstd(values):.3f} %",
        "slices through the centre of mass;",
        f"G along (x, y, z) = ({', '.join(f'{v:+.2f}' for v in crystal.g_grid[::-1])})",
        f"cdinn {prov.get('version', '?')}",
    ]
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace", transform=ax.transAxes)
    fig.suptitle("\n".join([title, *textwrap.wrap(describe(prov, result.chi2), 150)]).strip(), fontsize=10)
    return save_figure(fig, path)
