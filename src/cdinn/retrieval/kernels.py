"""Fused CPU loops of one projection iteration, one pass over memory each.

Between its two FFTs an iteration does only element-wise work: the modulus constraint
(``|F|²``, ``A/|F|``, the two chi² sums, the rescaled field) and the support relaxation
(``P_M x`` inside the support, a mix of ``x`` and ``P_M x`` outside). As torch operations
those are a dozen passes over the arrays and, on a 2-core CPU at 64³, cost twice the FFT pair
themselves; fused into two OpenMP loops (``_fused.c``, compiled when cdinn is installed) they
cost a fraction of it (``benchmarks/results/retrieval.md``). PyNX fuses the same steps into
GPU kernels.

The loops serve contiguous complex64 arrays on the CPU (:func:`applies`); elsewhere (CUDA,
other dtypes, or an installation without a C compiler) the projector and the algorithms run
the same arithmetic as torch operations, and the tests hold the two to the same results.
"""

from __future__ import annotations

import os

import numpy as np
import torch

try:
    from cdinn.retrieval import _fused
except ImportError:  # built without a C compiler / OpenMP: the torch operations serve
    _fused = None


_pool_pid: int | None = None


def _threads() -> int:
    """torch's thread count, except in a process forked after the loops ran: GNU OpenMP's
    thread pool does not survive a fork, and a parallel region in the child would wait for
    threads that are not there (measured: it hangs), so the child runs them on one thread."""
    global _pool_pid
    pid = os.getpid()
    if _pool_pid is None:
        _pool_pid = pid
    return torch.get_num_threads() if pid == _pool_pid else 1


def available() -> bool:
    """True when the compiled loops were built with this installation."""
    return _fused is not None


def applies(*tensors: torch.Tensor) -> bool:
    """True when the fused loops serve these tensors: all contiguous on the CPU, the first complex64."""
    return (_fused is not None and tensors[0].dtype == torch.complex64
            and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors))


def modulus_(field: torch.Tensor, amplitude: torch.Tensor, weight: torch.Tensor | None,
             free: torch.Tensor | None, norm2: torch.Tensor) -> torch.Tensor:
    """Give ``field`` the measured modulus in place; return chi² per start.

    Parameters
    ----------
    field : complex64 ``(B, *spatial)``, contiguous, CPU
        Far fields (FFT-native layout), rescaled in place by ``A / |F|`` (plus ``free``).
    amplitude : float32 ``(*spatial)``, or ``(B, *spatial)``: one pattern per item (a stacked
        measurement)
        Measured amplitude, zero where unmeasured.
    weight, free : float32, the shape of ``amplitude``, or None
        1 where measured / 1 where not (both None when every pixel was measured): an
        unmeasured pixel keeps its far-field value.
    norm2 : float64 ``()`` or ``(B,)``
        ``sum(A²)`` over the measured pixels, per pattern.

    Returns
    -------
    torch.Tensor
        float32 ``(B,)``: the chi² of each start before the projection, the closed form of
        :func:`cdinn.physics.metrics.chi2_from_sums` evaluated in the loop (as torch
        operations those few scalar steps cost 0.1 ms, 7 % of a 64³ iteration). Each item is
        computed as it would be alone, so a batch of patterns gives each pattern's own numbers.
    """
    batch, n = field.shape[0], field[0].numel()
    chi2 = np.empty(batch, dtype=np.float32)
    _fused.modulus(field.numpy(), amplitude.numpy(), None if weight is None else weight.numpy(),
                   None if free is None else free.numpy(), chi2, norm2.reshape(-1).numpy(), batch, n, _threads())
    return torch.from_numpy(chi2)


def relax_(x: torch.Tensor, p: torch.Tensor, outside: torch.Tensor, cx: float, cp: float) -> torch.Tensor:
    """``x <- p + (1 - S)(cx x + cp p)`` in place, in one pass: ``p`` inside the support,
    ``cx x + (1 + cp) p`` outside.

    With ``p = P_M x``: ER is ``cx = 0, cp = -1``; HIO ``cx = 1, cp = -(1 + beta)``; RAAR
    ``cx = beta, cp = -2 beta``; DM (beta = 1) ``cx = 1, cp = -2``. ``outside`` is ``1 - S``,
    float32 ``(B, *spatial)`` or ``(1, *spatial)`` (shared by the batch).
    """
    batch, n = x.shape[0], x[0].numel()
    _fused.relax(x.numpy(), p.numpy(), outside.numpy(), cx, cp, batch, n, outside.numel() == n, _threads())
    return x
