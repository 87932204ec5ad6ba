"""Counting noise of a detector."""

from __future__ import annotations

import torch

from cdinn.physics.fourier import ArrayLike, as_tensor, spatial_dims


def poisson_noise(
    intensity: ArrayLike,
    photons: float | torch.Tensor,
    ndim: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale a noise-free pattern to ``photons`` total counts and draw Poisson counts.

    Parameters
    ----------
    intensity : tensor or ndarray, ``(B, *spatial)`` or ``(*spatial)``
        Noise-free intensity (any scale).
    photons : float or tensor of shape ``(B,)``
        Expected total number of detected photons per pattern.
    ndim : int, optional
        Number of spatial dimensions.
    generator : torch.Generator, optional
        Source of randomness, for reproducible draws.

    Returns
    -------
    torch.Tensor
        Integer-valued counts as float32, same shape as ``intensity``.
    """
    i = as_tensor(intensity).to(torch.float32)
    dims = spatial_dims(i, ndim)
    total = i.sum(dim=dims, keepdim=True)
    if torch.any(total <= 0):
        raise ValueError("cannot add noise to an all-zero pattern")
    scale = torch.as_tensor(photons, dtype=torch.float32, device=i.device)
    scale = scale.reshape(scale.shape + (1,) * len(dims)) if scale.ndim else scale
    return torch.poisson(i * (scale / total), generator=generator)
