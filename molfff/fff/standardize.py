"""Per-dimension standardisation ``z = (x - shift) / scale``, an affine flow with a known log-det.

A flow trained on ``z`` gives the density of ``x`` by the change of variables
``log p(x) = log p(z) - sum_d log scale_d``, so an NLL of ``z`` plus :attr:`Standardize.log_abs_det`
is the NLL of ``x`` in original units.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Standardize(nn.Module):
    """``z = (x - shift) / scale`` over the last dimension; ``shift``, ``scale`` ``(D,)`` buffers.

    Buffers (saved with a module's state) start at the identity (``shift = 0, scale = 1``);
    :meth:`fit` sets them from training statistics.

    Args:
        dim: D, the number of features.
        dtype: dtype of the buffers (float32 unless a caller needs float64 statistics).
    """

    def __init__(self, dim: int, dtype: torch.dtype | None = None):
        super().__init__()
        if dim < 0:
            raise ValueError(f"dim must be >= 0, got {dim}")
        self.register_buffer("shift", torch.zeros(dim, dtype=dtype))
        self.register_buffer("scale", torch.ones(dim, dtype=dtype))

    @classmethod
    def from_data(cls, x: Tensor, *, correction: int = 1, min_std: float = 1e-8) -> Standardize:
        """A standardisation fitted to ``x`` ``(B, D)``, in ``x``'s dtype (see :meth:`fit`)."""
        if x.dim() != 2:
            raise ValueError(f"x must be (B, D), got {tuple(x.shape)}")
        return cls(x.shape[1], dtype=x.dtype).fit(x, correction=correction, min_std=min_std)

    @torch.no_grad()
    def fit(self, x: Tensor, *, correction: int = 1, min_std: float = 1e-8) -> Standardize:
        """Set ``shift`` to the mean and ``scale`` to the standard deviation of ``x`` ``(B, D)``.

        A dimension whose standard deviation is below ``min_std`` (constant data) is centred but
        not scaled (``scale = 1``). ``correction`` is Bessel's correction of the standard
        deviation (1: sample std; 0: population std, as ``numpy.std``).

        Raises:
            ValueError: ``x`` is not ``(B, D)`` with this D, has fewer than 2 rows, or is not
                finite.
        """
        if x.dim() != 2 or x.shape[1] != self.shift.shape[0]:
            raise ValueError(f"x must be (B, {self.shift.shape[0]}), got {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"standardisation needs at least 2 rows, got {x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ValueError("standardisation data contain NaN or infinite values")
        std = x.std(dim=0, correction=correction)
        scale = torch.where(std >= min_std, std, torch.ones_like(std))
        self.shift.copy_(x.mean(dim=0).to(self.shift))
        self.scale.copy_(scale.to(self.scale))
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``(..., D) -> (..., D)`` standardised, in ``x``'s dtype."""
        return (x - self.shift.to(x)) / self.scale.to(x)

    def inverse(self, z: Tensor) -> Tensor:
        """``(..., D) -> (..., D)`` back in original units."""
        return z * self.scale.to(z) + self.shift.to(z)

    @property
    def log_abs_det(self) -> Tensor:
        """``sum_d log scale_d = log |det d inverse(z) / dz|``, a scalar.

        Add it to an NLL of standardised data for the NLL in original units.
        """
        return self.scale.log().sum()
