"""One iteration of each classical phase-retrieval algorithm.

Every function maps the current iterate ``x`` to the next and returns the chi² of ``x``
computed during its Fourier projection (no extra FFT). ``S`` is the support, ``P_M`` the
Fourier projection; reflections are ``R = 2P - I``. The iterate ``x`` is updated in place
and returned, which keeps memory traffic at the floor.
"""

from __future__ import annotations

import torch

from cdinn.retrieval import kernels
from cdinn.retrieval.projections import FourierProjector, Support, support_projection


def error_reduction(x: torch.Tensor, project: FourierProjector, support: Support) -> tuple[torch.Tensor, torch.Tensor]:
    """ER (Gerchberg–Saxton–Fienup): ``x' = P_S P_M x``."""
    p, chi2 = project(x)
    if kernels.applies(x, p, support.outside):
        return kernels.relax_(x, p, support.outside, 0.0, -1.0), chi2
    return support_projection(p, support, out=x), chi2


def hybrid_input_output(
    x: torch.Tensor, project: FourierProjector, support: Support, beta: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """HIO (Fienup 1982): ``x' = P_M x`` inside S, ``x - beta P_M x`` outside.

    Written as ``p + (1 - S)(x - (1 + beta) p)`` with ``p = P_M x``.
    """
    p, chi2 = project(x)
    if kernels.applies(x, p, support.outside):
        return kernels.relax_(x, p, support.outside, 1.0, -(1.0 + beta)), chi2
    return x.sub_(p, alpha=1.0 + beta).mul_(support.outside).add_(p), chi2


def raar(
    x: torch.Tensor, project: FourierProjector, support: Support, beta: float = 0.85
) -> tuple[torch.Tensor, torch.Tensor]:
    """RAAR (Luke 2005), textbook form ``x' = beta/2 (R_S R_M + I) x + (1 - beta) P_M x``.

    With ``p = P_M x`` this is ``p`` inside S and ``beta x + (1 - 2 beta) p`` outside,
    i.e. ``p + beta (1 - S)(x - 2p)``.
    """
    p, chi2 = project(x)
    if kernels.applies(x, p, support.outside):
        return kernels.relax_(x, p, support.outside, beta, -2.0 * beta), chi2
    x.sub_(p, alpha=2.0).mul_(support.outside)
    return torch.add(p, x, alpha=beta, out=x), chi2


def difference_map(
    x: torch.Tensor, project: FourierProjector, support: Support, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference map (Elser 2003) with the usual ``gamma_S = -1/beta``, ``gamma_M = 1/beta``.

    ``x' = x + beta [P_S f_M(x) - P_M f_S(x)]``, ``f_M = (1 + gamma_M) P_M - gamma_M``,
    ``f_S = (1 + gamma_S) P_S - gamma_S``. For ``beta = 1`` one Fourier projection suffices:
    ``x' = x + P_S(2 P_M x - x) - P_M x = (1 - S) x + (2S - 1) P_M x``.
    """
    p, chi2 = project(x)
    if beta == 1.0 and kernels.applies(x, p, support.outside):
        return kernels.relax_(x, p, support.outside, 1.0, -2.0), chi2
    if beta == 1.0:
        return x.mul_(support.outside).addcmul_(p, support.inside - support.outside), chi2
    gamma_s, gamma_m = -1.0 / beta, 1.0 / beta
    f_m = (1.0 + gamma_m) * p - gamma_m * x
    f_s = (1.0 + gamma_s) * support_projection(x, support) - gamma_s * x
    p_fs, _ = project(f_s)
    return x.add_(support_projection(f_m, support).sub_(p_fs), alpha=beta), chi2


ALGORITHMS = {
    "ER": error_reduction,
    "AVG": error_reduction,
    "HIO": hybrid_input_output,
    "RAAR": raar,
    "DM": difference_map,
}
