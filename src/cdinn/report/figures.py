"""Figures a beamline scientist reads at a glance: slices of amplitude and phase, the
pattern on a log scale, convergence curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdinn.io.atomic import atomic_path  # noqa: E402


def central_slices(volume: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The central sections of a 2D or 3D array, labelled by their plane."""
    if volume.ndim == 2:
        return [("", volume)]
    c = [n // 2 for n in volume.shape]
    return [("z=c", volume[c[0]]), ("y=c", volume[:, c[1]]), ("x=c", volume[:, :, c[2]])]


def _phase_rgba(obj: np.ndarray, threshold: float = 0.1) -> np.ma.MaskedArray:
    amp = np.abs(obj)
    return np.ma.masked_where(amp < threshold * max(amp.max(), 1e-30), np.angle(obj))


def _object_box(obj: np.ndarray, threshold: float = 0.1, margin: float = 0.15) -> tuple[slice, ...]:
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


def comparison_figure(
    path: str | Path,
    objects: Sequence[tuple[str, np.ndarray]],
    pattern: np.ndarray | None = None,
    histories: Sequence[tuple[str, np.ndarray]] = (),
    title: str = "",
    crop: bool = False,
) -> Path:
    """One page comparing complex images: per object, amplitude and phase central slices.

    Parameters
    ----------
    path : output image (PNG, PDF, SVG), written atomically
    objects : (label, complex array) pairs, already aligned on each other
    pattern : measured intensity, shown on a log scale (central slice)
    histories : (label, chi² per iteration) curves
    title : figure title
    crop : zoom every object on the first one's extent (amplitude ≥ 10 % of its maximum)
        with a margin, for objects that fill a small part of their array
    """
    if crop:
        box = _object_box(objects[0][1])
        objects = [(label, obj[box]) for label, obj in objects]
    n_sl = len(central_slices(objects[0][1]))
    ncols = 2 * n_sl
    top = 1 if (pattern is not None or histories) else 0
    fig = plt.figure(figsize=(2.4 * ncols + 0.8, 2.3 * (len(objects) + top) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(objects) + top, ncols)
    if top:
        if pattern is not None:
            ax = fig.add_subplot(grid[0, : ncols // 2])
            sl = central_slices(pattern)[0][1]
            im = ax.imshow(np.log10(np.maximum(sl, 0) + 1), cmap="magma", origin="lower")
            ax.set_title("pattern, log10(I+1), central slice", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.8)
        if histories:
            ax = fig.add_subplot(grid[0, ncols // 2 :])
            for label, h in histories:
                ax.semilogy(np.arange(1, len(h) + 1), h, label=label, lw=1)
            ax.set_xlabel("iteration")
            ax.set_ylabel("chi²")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    # One phase scale for every row, from the first (reference) object: small strains stay visible.
    ref = objects[0][1]
    inside = np.abs(ref) >= 0.5 * np.abs(ref).max()
    vmax = float(max(0.5, np.abs(np.angle(ref[inside])).max() if inside.any() else np.pi))
    for row, (label, obj) in enumerate(objects, start=top):
        amp = np.abs(obj) / max(np.abs(obj).max(), 1e-30)
        for k, ((plane, a), (_, o)) in enumerate(zip(central_slices(amp), central_slices(obj))):
            ax = fig.add_subplot(grid[row, k])
            ax.imshow(a, cmap="gray", vmin=0, vmax=1, origin="lower")
            if row == top:
                ax.set_title(f"amplitude {plane}".strip(), fontsize=9)
            if k == 0:
                ax.set_ylabel(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax = fig.add_subplot(grid[row, n_sl + k])
            im = ax.imshow(_phase_rgba(o), cmap="coolwarm", vmin=-vmax, vmax=vmax, origin="lower")
            if row == top:
                ax.set_title(f"phase {plane}".strip(), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8, label="phase (rad)")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
