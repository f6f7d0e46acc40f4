"""A learned, conditioning-dependent location and scale around a dense encoder or decoder.

A posterior much narrower than the prior (sir, gaussian_mixture's narrow component, lotka_volterra)
asks a plain encoder to stretch a tiny region of theta onto N(0, I), and the decoder to shrink it
back, with a reconstruction error that must be small *relative to the posterior's width*. The
wrappers here give both networks that zoom for free:

    f(x, c) = net_f((x - mu_f(c)) * exp(-s_f(c)), c)
    g(z, c) = mu_g(c) + exp(s_g(c)) * net_g(z, c)

where ``(mu, s) = LocScale(c)`` is a small MLP. The affine parts are ordinary layers of f and g:
the flow's Jacobians, exact likelihood and inversion include them, and the FFF surrogate trains
them with everything else. It is a conditional affine layer of the kind masked autoregressive
flows stack (Papamakarios et al. 2017), here one around each free-form network. The MLP's last
layer starts at zero, so each wrapper starts as its bare network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molfff.nn.resnet import ACTIVATIONS

# s is soft-clamped to (-S, S): scales from e^-8 ~ 3e-4 to e^8 of the standardised data
_S_MAX = 8.0


class LocScale(nn.Module):
    """``c (B, C) -> (mu (B, D), s (B, D))``, a two-layer MLP; ``exp(s)`` is the scale.

    Args:
        dim: D, data dimension.
        cond_dim: C, conditioning dimension (at least 1).
        width: hidden width.
        activation: one of ``relu, silu, tanh, gelu``.
    """

    def __init__(self, dim: int, cond_dim: int, width: int = 64, activation: str = "silu"):
        super().__init__()
        if dim < 1 or cond_dim < 1 or width < 1:
            raise ValueError(
                f"LocScale needs dim, cond_dim, width >= 1, got {dim}, {cond_dim}, {width}"
            )
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.Linear(cond_dim, width),
            act(),
            nn.Linear(width, width),
            act(),
            nn.Linear(width, 2 * dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        mu, s = self.net(c).chunk(2, dim=-1)
        return mu, _S_MAX * torch.tanh(s / _S_MAX)


def _broadcast(t: Tensor, like: Tensor) -> Tensor:
    return t.expand_as(like) if t.shape[0] != like.shape[0] else t


class _Wrapped(nn.Module):
    """A dense network ``net(x, c, layout)`` with its own :class:`LocScale` of ``c``."""

    def __init__(
        self, net: nn.Module, dim: int, cond_dim: int, width: int = 64, activation: str = "silu"
    ):
        super().__init__()
        self.net = net
        self.loc_scale = LocScale(dim, cond_dim, width, activation)

    def _loc_scale(self, c: Tensor | None) -> tuple[Tensor, Tensor]:
        if c is None:
            raise ValueError(f"{type(self).__name__} needs the conditioning c")
        return self.loc_scale(c)


class LocScaleInput(_Wrapped):
    """Encoder ``f(x, c) = net((x - mu(c)) * exp(-s(c)), c)`` for dense ``(B, D)`` rows.

    Args:
        net: a dense network called as ``net(x, c, layout)``.
        dim, cond_dim, width, activation: of the :class:`LocScale` MLP.

    Raises:
        ValueError: called without ``c``.
    """

    def forward(self, x: Tensor, c: Tensor | None = None, layout=None) -> Tensor:
        mu, s = self._loc_scale(c)
        return self.net((x - _broadcast(mu, x)) * torch.exp(-_broadcast(s, x)), c, layout)


class LocScaleOutput(_Wrapped):
    """Decoder ``g(z, c) = mu(c) + exp(s(c)) * net(z, c)`` for dense ``(B, D)`` rows.

    Args and errors: as :class:`LocScaleInput`.
    """

    def scale(self, c: Tensor | None) -> Tensor:
        """``exp(s(c))``, ``(B, D)``: the decoder's learned width at each conditioning row."""
        return torch.exp(self._loc_scale(c)[1])

    def forward(self, z: Tensor, c: Tensor | None = None, layout=None) -> Tensor:
        mu, s = self._loc_scale(c)
        y = self.net(z, c, layout)
        return _broadcast(mu, y) + torch.exp(_broadcast(s, y)) * y
