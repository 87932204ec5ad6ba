"""Projections onto the two constraint sets of phase retrieval.

Both operate in the FFT-native layout (see :mod:`cdinn.physics.fourier`), batched over
random starts: ``psi`` has shape ``(B, *spatial)``.

On a CPU the work between the two FFTs runs as fused compiled loops
(:mod:`cdinn.retrieval.kernels`); what follows is the torch-operation path, which CUDA and
other dtypes take. What kept it near the cost of its two FFTs on a CPU: supports are float tensors
(a real-by-complex product is several times cheaper than a complex ``where``); the real
element-wise passes write into buffers the projector owns; |F|² is computed from the
contiguous ``view_as_real`` of the field (the strided ``.real``/``.imag`` views cost as much
as the FFT's own memory traffic); and the two FFTs allocate their results, because torch's
``out=`` FFT computes into a temporary and copies it (measured on a 2-core Xeon at 64³:
these last two took an ER iteration from 3.0 to 2.3 ms, ``benchmarks/results/retrieval.md``).
"""

from __future__ import annotations

import torch

from cdinn.physics.metrics import chi2_from_sums
from cdinn.retrieval import kernels


class Support:
    """A support as two float masks, ``inside`` (1 in the support) and ``outside`` (1 - inside)."""

    def __init__(self, mask: torch.Tensor):
        self.inside = mask.to(torch.float32)
        self.outside = 1.0 - self.inside

    @property
    def mask(self) -> torch.Tensor:
        """Boolean view of the support."""
        return self.inside > 0.5


class FourierProjector:
    """Projection onto the set of objects whose far-field modulus is the measured one.

    Masked (unmeasured) pixels are left free: their Fourier amplitude is kept as it is.

    Parameters
    ----------
    amplitude : tensor ``(*spatial)``, or ``(N, *spatial)`` for N patterns iterated together
        (item ``i`` of the iterate against pattern ``i``)
        Measured amplitude ``sqrt(I)`` in FFT-native layout.
    measured : bool tensor of the same shape, optional
        True where the pixel was measured (native layout); None when all were.
    ndim : number of spatial axes (default: all axes of ``amplitude``)

    Notes
    -----
    The arrays a call uses for |F|², A/|F| and chi² are the projector's own buffers, reused by
    the next call; the projected object it returns is a new tensor.
    """

    def __init__(self, amplitude: torch.Tensor, measured: torch.Tensor | None = None, ndim: int | None = None):
        self.ndim = amplitude.ndim if ndim is None else ndim
        self.dims = tuple(range(-self.ndim, 0))
        if measured is None or bool(measured.all()):
            self.weight = None
            self.free = None
            self.amplitude = amplitude
        else:
            self.weight = measured.to(amplitude.dtype).contiguous()
            self.free = (~measured).to(amplitude.dtype).contiguous()
            self.amplitude = amplitude * self.weight
        self.amplitude = self.amplitude.contiguous()
        self.norm2 = self.amplitude.square().sum(dim=self.dims, dtype=torch.float64)  # per pattern
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != like.shape or buf.device != like.device:
            buf = self._buffers[name] = torch.empty(like.shape, dtype=dtype, device=like.device)
        return buf

    def _measure(self, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The far field of ``psi``, the factor that gives it the measured modulus, and chi² per start."""
        field = torch.fft.fftn(psi, dim=self.dims, norm="ortho")
        parts = torch.view_as_real(field)
        squares = torch.mul(parts, parts, out=self._buffer("squares", parts, torch.float32))
        modulus2 = torch.add(squares[..., 0], squares[..., 1], out=self._buffer("modulus2", psi, torch.float32))
        # factor = A / |F|; with it, sum(|F| A) = sum(|F|^2 factor): no separate sqrt pass.
        factor = torch.clamp_min(modulus2, 1e-30, out=self._buffer("factor", psi, torch.float32))
        factor.rsqrt_().mul_(self.amplitude)
        if self.weight is not None:
            modulus2.mul_(self.weight)
        # sum(|F|^2 * factor) per start. torch's CPU reductions sum in cascade (relative error
        # ~1e-7); a batched BLAS dot (bmm) was 2x faster but off by 3e-5, which floors chi² at
        # ~1e-3 for 8 starts at 64³.
        overlap = torch.mul(modulus2, factor, out=self._buffer("overlap", psi, torch.float32))
        return field, factor, chi2_from_sums(overlap.sum(dim=self.dims).double(), modulus2.sum(dim=self.dims).double(), self.norm2)

    def _fused(self, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The far field of ``psi`` given the measured modulus, and chi² per start: one fused pass
        between the FFTs (:mod:`cdinn.retrieval.kernels`, CPU)."""
        field = torch.fft.fftn(psi, dim=self.dims, norm="ortho")
        return field, kernels.modulus_(field, self.amplitude, self.weight, self.free, self.norm2)

    def __call__(self, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``P_M(psi)`` and the chi² of ``psi`` against the measurement (per start)."""
        if kernels.applies(psi):
            field, chi2 = self._fused(psi)
            return torch.fft.ifftn(field, dim=self.dims, norm="ortho"), chi2
        field, factor, chi2 = self._measure(psi)
        if self.free is not None:
            factor.add_(self.free)
        field.mul_(factor)
        return torch.fft.ifftn(field, dim=self.dims, norm="ortho"), chi2

    def chi2(self, psi: torch.Tensor) -> torch.Tensor:
        """chi² of ``psi`` against the measurement (no inverse transform)."""
        return self._fused(psi)[1] if kernels.applies(psi) else self._measure(psi)[2]


def support_projection(psi: torch.Tensor, support: Support, out: torch.Tensor | None = None) -> torch.Tensor:
    """Projection onto objects that vanish outside the support."""
    return torch.mul(psi, support.inside, out=out)
