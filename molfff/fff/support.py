"""Bounded support to the reals, ``u = T(x)``: a fixed flow with a closed-form log-det.

A density with hard walls (a box prior, a positive rate) is hard for a flow on the reals: the
walls must be learned, and the mass near them is pulled inward. Modelling ``u = T(x)`` instead
removes the walls, and the density of ``x`` follows by the change of variables
``log p(x) = log p_U(T(x)) + log |det dT/dx|`` (:meth:`Unconstrain.log_abs_det`). Per dimension,
with bounds ``lower < upper`` (either may be infinite):

- both finite: ``u = logit((x - lower) / (upper - lower))``;
- ``lower`` only: ``u = log(x - lower)``;  ``upper`` only: ``u = log(upper - x)``;
- neither: ``u = x``.

These are the unconstraining transforms of Stan (reference manual, "Constraint transforms") and
of ``torch.distributions.biject_to``, applied per dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Unconstrain(nn.Module):
    """``u = T(x)`` from the box ``lower < x < upper`` to the reals, ``(..., D) -> (..., D)``.

    ``lower``, ``upper`` ``(D,)`` are buffers in the module's dtype (saved with a module's
    state) that start at ``-inf, +inf`` (the identity); :meth:`set_bounds` sets them. A state
    saved before these buffers existed loads as the identity.

    Inputs on or beyond a finite bound are clamped inside it, so ``T`` stays finite: two-sided,
    to ``eps`` of the box's width from a face; one-sided, to the smallest normal number of the
    input's dtype from the bound. :meth:`inverse` returns points strictly inside finite bounds.
    Use :meth:`contains` to check data. Inputs must be floating point.

    Args:
        dim: D, the number of features.
        eps: the two-sided clamp margin (default: the float32 machine epsilon).
    """

    def __init__(self, dim: int, eps: float = float(torch.finfo(torch.float32).eps)):
        super().__init__()
        if dim < 0:
            raise ValueError(f"dim must be >= 0, got {dim}")
        self.eps = eps
        self.register_buffer("lower", torch.full((dim,), -torch.inf))
        self.register_buffer("upper", torch.full((dim,), torch.inf))
        self._identity = True  # kept on the host: no device sync per call

    @torch.no_grad()
    def set_bounds(self, lower: Tensor, upper: Tensor) -> Unconstrain:
        """Set the support; ``lower``, ``upper`` ``(D,)`` (or broadcastable), ``±inf`` for none.

        Raises:
            ValueError: a bound is NaN or does not broadcast to ``(D,)``, ``lower >= upper`` in
                some dimension, or a two-sided box is too wide for the buffers' dtype.
        """
        d = self.lower.shape[0]
        lower = torch.as_tensor(lower, dtype=self.lower.dtype)
        upper = torch.as_tensor(upper, dtype=self.upper.dtype)
        for name, b in (("lower", lower), ("upper", upper)):
            if b.dim() > 1 or b.numel() not in (1, d):
                raise ValueError(f"{name} bound must be a scalar or ({d},), got {tuple(b.shape)}")
        lower, upper = lower.expand(d), upper.expand(d)
        if lower.isnan().any() or upper.isnan().any():
            raise ValueError("support bounds must not be NaN")
        if not torch.where(lower.isfinite() & upper.isfinite(), upper - lower, 0).isfinite().all():
            raise ValueError("a two-sided support's width overflows the buffers' dtype")
        if not (lower < upper).all():
            raise ValueError(
                f"support needs lower < upper, got {lower.tolist()} and {upper.tolist()}"
            )
        self.lower.copy_(lower)
        self.upper.copy_(upper)
        self._identity = self._bounds_are_infinite()
        return self

    def _bounds_are_infinite(self) -> bool:
        return not (self.lower.isfinite().any() or self.upper.isfinite().any())

    @property
    def is_identity(self) -> bool:
        """True when no dimension has a finite bound."""
        return self._identity

    def contains(self, x: Tensor) -> Tensor:
        """``(...,)`` bool: which rows of ``x`` ``(..., D)`` lie strictly inside the support."""
        return ((x > self.lower.to(x)) & (x < self.upper.to(x))).all(dim=-1)

    def outside(self, x: Tensor) -> Tensor:
        """``(...,)`` bool: rows of ``x`` ``(..., D)`` on or beyond a bound (NaN rows: False)."""
        return ((x <= self.lower.to(x)) | (x >= self.upper.to(x))).any(dim=-1)

    def _parts(self, like: Tensor) -> tuple[Tensor, ...]:
        if not like.is_floating_point():
            raise TypeError(f"Unconstrain needs floating-point input, got {like.dtype}")
        lo, hi = self.lower.to(like), self.upper.to(like)
        has_lo, has_hi = lo.isfinite(), hi.isfinite()
        both = has_lo & has_hi
        # finite stand-ins keep the unused branches of torch.where free of inf - inf
        lo0 = torch.where(has_lo, lo, torch.zeros_like(lo))
        hi0 = torch.where(has_hi, hi, torch.ones_like(hi))
        width = torch.where(both, hi0 - lo0, torch.ones_like(lo))
        return has_lo, has_hi, both, lo0, hi0, width

    def _distances(self, x: Tensor, parts: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """Clamped ``s = (x - lower) / width`` and ``r = (upper - x) / width`` (one-sided: the
        distance to the one bound), each clamped as the class describes; ``parts`` from
        :meth:`_parts`."""
        has_lo, has_hi, both, lo0, hi0, width = parts
        tiny = torch.finfo(x.dtype).tiny
        s, r = ((x - lo0) / width).clamp_min(tiny), ((hi0 - x) / width).clamp_min(tiny)
        lo_eps, hi_eps = self.eps, 1 - self.eps
        return (
            torch.where(both, s.clamp(lo_eps, hi_eps), s),
            torch.where(both, r.clamp(lo_eps, hi_eps), r),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``u = T(x)``, ``(..., D) -> (..., D)``."""
        if self.is_identity:
            return x
        parts = self._parts(x)
        has_lo, has_hi, both, *_ = parts
        s, r = self._distances(x, parts)
        u = torch.where(both, s.log() - r.log(), x)
        u = torch.where(has_lo & ~has_hi, s.log(), u)
        return torch.where(has_hi & ~has_lo, r.log(), u)

    def inverse(self, u: Tensor) -> Tensor:
        """``x = T^{-1}(u)``, ``(..., D) -> (..., D)``; strictly inside finite bounds."""
        if self.is_identity:
            return u
        has_lo, has_hi, both, lo0, hi0, width = self._parts(u)
        x = torch.where(both, lo0 + width * torch.sigmoid(u), u)
        x = torch.where(has_lo & ~has_hi, lo0 + u.exp(), x)
        x = torch.where(has_hi & ~has_lo, hi0 - u.exp(), x)
        # where sigmoid or exp rounds onto a bound (or overflows), the nearest number inside
        big = torch.full_like(lo0, torch.finfo(u.dtype).max)
        inner_lo = torch.where(has_lo, torch.nextafter(lo0, big), -big)
        inner_hi = torch.where(has_hi, torch.nextafter(hi0, -big), big)
        return torch.where(has_lo | has_hi, torch.minimum(torch.maximum(x, inner_lo), inner_hi), x)

    def log_abs_det(self, x: Tensor) -> Tensor:
        """``log |det dT/dx|`` at ``x`` ``(..., D)``, shape ``(...,)``.

        Two-sided: ``-sum log(width · s · (1 - s))``; one-sided: ``-sum log(distance)``; add it
        to ``log p_U(T(x))`` for ``log p(x)``.
        """
        if self.is_identity:
            return x.new_zeros(x.shape[:-1])
        parts = self._parts(x)
        has_lo, has_hi, both, _, _, width = parts
        s, r = self._distances(x, parts)
        per_dim = torch.where(both, -(width.log() + s.log() + r.log()), torch.zeros_like(x))
        per_dim = torch.where(has_lo & ~has_hi, -s.log(), per_dim)
        per_dim = torch.where(has_hi & ~has_lo, -r.log(), per_dim)
        return per_dim.sum(dim=-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # states saved before the support existed: the identity, whatever the module held
        for name, bound in (("lower", -torch.inf), ("upper", torch.inf)):
            state_dict.setdefault(prefix + name, torch.full_like(getattr(self, name), bound))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._identity = self._bounds_are_infinite()
