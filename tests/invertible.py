"""Small invertible maps with exact, parameter-sharing inverses, for testing the FFF identities."""

import torch
from torch import Tensor, nn


class AffineCoupling(nn.Module):
    """``f(x) = coupling(A x + b)``, a 2-block affine coupling after a linear mixing; exact inverse.

    The coupling keeps ``x_1`` (first half) and maps ``x_2 -> x_2 * exp(s(x_1)) + t(x_1)``.
    """

    def __init__(self, dim: int, hidden: int = 8):
        super().__init__()
        self.d1 = dim // 2
        self.a = nn.Parameter(torch.eye(dim) + 0.3 * torch.randn(dim, dim))
        self.b = nn.Parameter(0.1 * torch.randn(dim))
        self.net = nn.Sequential(
            nn.Linear(self.d1, hidden), nn.Tanh(), nn.Linear(hidden, 2 * (dim - self.d1))
        )
        for p in self.net.parameters():
            nn.init.normal_(p, std=0.5)

    def _st(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(x1).chunk(2, dim=-1)
        return torch.tanh(s), t

    def forward(self, x: Tensor, c: Tensor | None = None, layout=None) -> Tensor:
        y = x @ self.a.T + self.b
        y1, y2 = y[:, : self.d1], y[:, self.d1 :]
        s, t = self._st(y1)
        return torch.cat([y1, y2 * torch.exp(s) + t], dim=1)

    def inverse(self, z: Tensor, c: Tensor | None = None, layout=None) -> Tensor:
        z1, z2 = z[:, : self.d1], z[:, self.d1 :]
        s, t = self._st(z1)
        y = torch.cat([z1, (z2 - t) * torch.exp(-s)], dim=1)
        return torch.linalg.solve(self.a, (y - self.b).T).T


def brute_log_abs_det(fn, x: Tensor, create_graph: bool = False) -> Tensor:
    """``log|det J|`` per sample from the full Jacobian of a per-sample map, ``(B,)``."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(
            lambda t: fn(t[None])[0], xi, create_graph=create_graph
        )
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)
