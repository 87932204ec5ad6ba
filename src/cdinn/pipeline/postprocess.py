"""Cleaning a network prediction: support, largest crystal, centring, phase offset."""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label

from cdinn.physics.support import centre_on_support, threshold_support


def clean_prediction(obj: torch.Tensor, threshold: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Support from the thresholded amplitude, largest connected component, centred on its
    centre of mass, mean phase inside the support removed.

    Parameters
    ----------
    obj : complex tensor ``(*spatial)`` (unbatched)
    threshold : relative amplitude threshold of the support

    Returns
    -------
    (object, support) on the same grid; the object is zero outside the support.
    """
    support = threshold_support(obj, threshold).cpu().numpy()
    labels = label(support)
    if labels.max() > 1:
        sizes = np.bincount(labels.ravel())[1:]
        support = labels == (1 + int(np.argmax(sizes)))
    sup = torch.from_numpy(support).to(obj.device)
    out, sup = centre_on_support((obj * sup).unsqueeze(0), sup.unsqueeze(0))
    out, sup = out[0], sup[0]
    mean_phase = torch.angle(out[sup].sum()) if bool(sup.any()) else torch.tensor(0.0)
    return out * torch.exp(-1j * mean_phase), sup
