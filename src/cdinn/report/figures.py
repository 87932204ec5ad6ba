"""Figures a beamline scientist reads at a glance: slices of amplitude and phase, the
pattern on a log scale, convergence curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdinn.io.atomic import atomic_path  # noqa: E402


PHASE_RANGE_MIN = 0.5
"""Smallest default half-range of a phase colour scale (rad): a nearly flat phase stays pale
instead of being stretched to look structured (``--phase-range`` sets any range)."""


def central_slices(volume: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The central sections of a 2D or 3D array, labelled by their plane (array axes 0, 1, 2)."""
    if volume.ndim == 2:
        return [("", volume)]
    c = [n // 2 for n in volume.shape]
    return [(f"axis 0 = {c[0]}", volume[c[0]]), (f"axis 1 = {c[1]}", volume[:, c[1]]), (f"axis 2 = {c[2]}", volume[:, :, c[2]])]


def flatten_phase(obj: np.ndarray, reference: np.ndarray | None = None, threshold: float = 0.5) -> np.ndarray:
    """``obj`` with the global phase removed: the amplitude-weighted mean phase of ``reference``
    (default ``obj``) over its bright part (amplitude >= ``threshold`` of the maximum) becomes 0,
    so that a flat phase sits at the centre of a symmetric colour scale."""
    ref = obj if reference is None else reference
    amp = np.abs(ref)
    inside = amp >= threshold * max(amp.max(), 1e-30)
    if not inside.any():
        return obj
    mean = np.sum(ref[inside] * amp[inside])  # the weighted circular mean of the phase
    return obj * np.exp(-1j * np.angle(mean)) if abs(mean) > 0 else obj


def phase_limit(phase: np.ndarray, requested: float | None = None) -> float:
    """Half-range of a symmetric phase colour scale: ``requested``, else the 99th percentile of
    ``|phase|`` (finite values) but at least :data:`PHASE_RANGE_MIN`."""
    if requested is not None:
        return float(requested)
    values = np.abs(phase[np.isfinite(phase)])
    return float(max(PHASE_RANGE_MIN, np.percentile(values, 99) if values.size else np.pi))


def describe(provenance: dict, chi2: float | None = None) -> str:
    """One line for a figure's header: scan and energy where known, the method (network and
    refinement, or recipe and starts), chi² and the cdinn version."""
    parts = []
    if provenance.get("scan"):
        parts.append(f"scan {provenance['scan']}")
    if provenance.get("energy_kev"):
        parts.append(f"{provenance['energy_kev']:.2f} keV")
    if provenance.get("method") == "invert":
        parts.append(f"network {provenance.get('model', '?')} + refine {provenance.get('refine', '?')}")
    elif provenance.get("recipe"):
        starts = provenance.get("starts", 1)
        averaged = (provenance.get("averaging") or {}).get("used", 1)
        parts.append(f"{provenance['recipe']}, {starts} start{'s' if starts != 1 else ''}"
                     + (f", {averaged} averaged" if averaged > 1 else ""))
    if chi2 is not None:
        parts.append(f"chi² {chi2:.4g}")
    if provenance.get("version"):
        parts.append(f"cdinn {provenance['version']}")
    return " · ".join(parts)


def _phase_rgba(obj: np.ndarray, threshold: float = 0.1) -> np.ma.MaskedArray:
    amp = np.abs(obj)
    return np.ma.masked_where(amp < threshold * max(amp.max(), 1e-30), np.angle(obj))


def object_box(obj: np.ndarray, threshold: float = 0.1, margin: float = 0.15) -> tuple[slice, ...]:
    """The box around the object (amplitude >= ``threshold`` of its maximum), with a margin of
    ``margin`` times its extent (at least 2 pixels) per axis, clipped to the array."""
    amp = np.abs(obj)
    idx = np.nonzero(amp >= threshold * max(amp.max(), 1e-30))
    box = []
    for i, n in zip(idx, amp.shape):
        pad = max(2, int(margin * (i.max() - i.min() + 1)))
        box.append(slice(max(0, int(i.min()) - pad), min(n, int(i.max()) + pad + 1)))
    return tuple(box)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (format from the suffix, PNG by default) and close it."""
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out


def scale_bar(ax: plt.Axes, pixel_nm: float, extent_px: float, color: str = "w") -> None:
    """A scale bar of a round length (about 30 % of ``extent_px`` pixels) in the lower right corner."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = nice_length(0.3 * extent_px * pixel_nm)
    ax.add_artist(AnchoredSizeBar(ax.transData, length / pixel_nm, f"{length:g} nm", "lower right", pad=0.3, color=color,
                                  frameon=False, size_vertical=max(0.4, 0.01 * extent_px), fontproperties={"size": 7}))


def nice_length(x: float) -> float:
    """1, 2 or 5 times a power of ten, at most ``x``."""
    if x <= 0:
        return 1.0
    p = 10 ** np.floor(np.log10(x))
    return float(max(m * p for m in (1, 2, 5) if m * p <= x))


def comparison_figure(
    path: str | Path,
    objects: Sequence[tuple[str, np.ndarray]],
    pattern: np.ndarray | None = None,
    histories: Sequence[tuple[str, np.ndarray]] = (),
    title: str = "",
    crop: bool = False,
    pixel_nm: Sequence[float] | None = None,
    phase_range: float | None = None,
    amplitude_range: tuple[float, float] = (0.0, 1.0),
    subtitle: str = "",
) -> Path:
    """One page comparing complex images: per object, amplitude and phase central slices.

    Arrays are drawn as a detector shows its frames: row 0 at the top, column 0 at the left
    (a 2D pattern's object reads as it would in an image viewer). Every panel row has its
    colour bars; the phase of every object is shown relative to its own mean phase.

    Parameters
    ----------
    path : output image (PNG, PDF, SVG), written atomically
    objects : (label, complex array) pairs, already aligned on each other
    pattern : measured intensity, shown on a log scale (central slice)
    histories : (label, chi² per iteration) curves
    title, subtitle : figure title and a smaller second line (method, sample, version)
    crop : zoom every object on the first one's extent (amplitude ≥ 10 % of its maximum)
        with a margin, for objects that fill a small part of their array
    pixel_nm : real-space pixel size per axis (nm) when known: scale bars in nm
    phase_range : half-range of the phase colour scale (rad); default :func:`phase_limit` of
        the first object
    amplitude_range : amplitude colour scale as fractions of each object's maximum
    """
    if crop:
        box = object_box(objects[0][1])
        objects = [(label, obj[box]) for label, obj in objects]
    objects = [(label, flatten_phase(obj)) for label, obj in objects]
    n_sl = len(central_slices(objects[0][1]))
    ncols = 2 * n_sl + 2  # amplitude slices, colour bar, phase slices, colour bar
    top = 1 if (pattern is not None or histories) else 0
    fig = plt.figure(figsize=(2.4 * 2 * n_sl + 1.6, 2.3 * (len(objects) + top) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(objects) + top, ncols, width_ratios=[1] * n_sl + [0.07] + [1] * n_sl + [0.07])
    if top:
        if pattern is not None:
            ax = fig.add_subplot(grid[0, :n_sl])
            sl = central_slices(pattern)[0][1]
            im = ax.imshow(np.log10(np.maximum(sl, 0) + 1), cmap="magma", origin="upper")
            ax.set_title("pattern, log10(I+1), central slice", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, cax=fig.add_subplot(grid[0, n_sl]), label="log10(I+1)")
        if histories:
            ax = fig.add_subplot(grid[0, n_sl + 1 : 2 * n_sl + 1])
            for label, h in histories:
                ax.semilogy(np.arange(1, len(h) + 1), h, label=label, lw=1)
            ax.set_xlabel("iteration")
            ax.set_ylabel("chi²")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    # One phase scale for every row, from the first (reference) object: small strains stay comparable.
    ref = objects[0][1]
    inside = np.abs(ref) >= 0.5 * np.abs(ref).max()
    vmax = phase_limit(np.angle(ref[inside]) if inside.any() else np.array([np.pi]), phase_range)
    for row, (label, obj) in enumerate(objects, start=top):
        amp = np.abs(obj) / max(np.abs(obj).max(), 1e-30)
        for k, ((plane, a), (_, o)) in enumerate(zip(central_slices(amp), central_slices(obj))):
            ax = fig.add_subplot(grid[row, k])
            im_a = ax.imshow(a, cmap="gray", vmin=amplitude_range[0], vmax=amplitude_range[1], origin="upper")
            if row == top:
                ax.set_title(f"amplitude {plane}".strip(), fontsize=9)
            if k == 0:
                ax.set_ylabel(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if pixel_nm is not None:
                axes = [i for i in range(obj.ndim) if obj.ndim == 2 or i != k]
                scale_bar(ax, float(pixel_nm[axes[-1]]), a.shape[1])
            ax = fig.add_subplot(grid[row, n_sl + 1 + k])
            im_p = ax.imshow(_phase_rgba(o), cmap="coolwarm", vmin=-vmax, vmax=vmax, origin="upper")
            if row == top:
                ax.set_title(f"phase {plane}".strip(), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im_a, cax=fig.add_subplot(grid[row, n_sl]), label="amplitude / max")
        fig.colorbar(im_p, cax=fig.add_subplot(grid[row, 2 * n_sl + 1]), label="phase (rad)")
    if title or subtitle:
        width = int(fig.get_figwidth() * 11)  # characters of a 10-point line across the page
        fig.suptitle("\n".join([title, *textwrap.wrap(subtitle, width)]).strip(), fontsize=10)
    return save_figure(fig, path)


def stack_figure(
    path: str | Path,
    chi2: np.ndarray,
    floors: np.ndarray,
    frames: Sequence[tuple[int, np.ndarray]],
    title: str = "",
    subtitle: str = "",
    phase_range: float | None = None,
    amplitude_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """A stack of N reconstructions on one page: the chi² of every frame against its index,
    beside each frame's counting-noise floor where known (frames above it drawn in red), and the
    amplitude and phase of a few chosen frames, each cropped to its object (3D: the central
    section along axis 0).

    Parameters
    ----------
    path : output image (PNG, PDF, SVG), written atomically
    chi2, floors : per frame ``(N,)``; a floor is NaN where the pattern is not photon counts
    frames : (index, complex object) of the frames to draw, labelled by index and chi²
    title, subtitle : figure title and a smaller second line
    phase_range : half-range of the phase colour scale (rad); default from each frame
        (:func:`phase_limit`), the widest of them, so that all share one scale
    amplitude_range : amplitude colour scale as fractions of each frame's maximum
    """
    index = np.arange(len(chi2))
    counted = np.isfinite(floors)
    above = counted & (chi2 > floors)
    cols = len(frames)
    fig = plt.figure(figsize=(max(7.0, 1.9 * cols + 1.2), 6.6), layout="constrained")
    grid = fig.add_gridspec(3, cols + 1, width_ratios=[1] * cols + [0.07], height_ratios=[1.25, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    small = 4 if len(chi2) <= 500 else 1
    ax.scatter(index[~above], chi2[~above], s=small, color="tab:blue", label="chi² of each frame", linewidths=0)
    if above.any():
        ax.scatter(index[above], chi2[above], s=small, color="tab:red", linewidths=0,
                   label=f"above its counting-noise floor ({int(above.sum())} of {int(counted.sum())})")
    if counted.any():
        ax.plot(index[counted], floors[counted], color="0.4", lw=0.8, label="counting-noise floor")
    for k, _ in frames:
        ax.annotate(str(k), (k, chi2[k]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("chi²")
    ax.set_xlim(-0.5, len(chi2) - 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    cuts = [central_slices(flatten_phase(obj[object_box(obj)]))[0] for _, obj in frames]
    sections, plane = [c[1] for c in cuts], "\n(central section, axis 0)" if cuts[0][0] else ""
    vmax = max(phase_limit(np.angle(s[np.abs(s) >= 0.5 * np.abs(s).max()]), phase_range) for s in sections)
    for col, ((k, _), sl) in enumerate(zip(frames, sections)):
        ax = fig.add_subplot(grid[1, col])
        im_a = ax.imshow(np.abs(sl) / max(np.abs(sl).max(), 1e-30), cmap="gray", vmin=amplitude_range[0],
                         vmax=amplitude_range[1], origin="upper")
        ax.set_title(f"frame {k}\nchi² {chi2[k]:.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if col == 0:
            ax.set_ylabel("amplitude" + plane, fontsize=8)
        ax = fig.add_subplot(grid[2, col])
        im_p = ax.imshow(_phase_rgba(sl), cmap="coolwarm", vmin=-vmax, vmax=vmax, origin="upper")
        ax.set_xticks([])
        ax.set_yticks([])
        if col == 0:
            ax.set_ylabel("phase" + plane, fontsize=8)
    fig.colorbar(im_a, cax=fig.add_subplot(grid[1, cols]), label="amplitude / max")
    fig.colorbar(im_p, cax=fig.add_subplot(grid[2, cols]), label="phase (rad)")
    if title or subtitle:
        width = int(fig.get_figwidth() * 11)
        fig.suptitle("\n".join([title, *textwrap.wrap(subtitle, width)]).strip(), fontsize=10)
    return save_figure(fig, path)
