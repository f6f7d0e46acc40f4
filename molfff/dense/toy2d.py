"""Two-dimensional densities with exact log-densities, for checking a flow end to end.

Each is a Gaussian mixture, so ``log p`` is exact and the entropy ``H = -E_p[log p]`` is a
Monte-Carlo average of exact values; evaluated on the same test points as the model it gives the
KL divergence ``KL(p || q) = E_p[log p - log q]`` with low variance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from molfff.dense.splits import DenseData, Split
from molfff.errors import UserError


class GaussianMixture2D:
    """``p(x) = sum_k w_k N(x; mu_k, Sigma_k)`` in two dimensions.

    Args:
        means: ``(K, 2)``.
        covs: ``(K, 2, 2)`` positive definite.
        weights: ``(K,)``, normalised here.
    """

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor | None = None):
        k = means.shape[0]
        weights = torch.ones(k) if weights is None else weights
        self.components = torch.distributions.MultivariateNormal(means.double(), covs.double())
        self.log_weights = torch.log(weights.double() / weights.sum())

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)``, ``(B, 2) -> (B,)``."""
        lp = self.components.log_prob(x.double().unsqueeze(1)) + self.log_weights  # (B, K)
        return torch.logsumexp(lp, dim=1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, 2)`` float64 samples."""
        idx = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        chol = self.components.scale_tril[idx]  # (n, 2, 2)
        return self.components.loc[idx] + (chol @ eps.unsqueeze(2)).squeeze(2)


def ring(n_modes: int = 8, radius: float = 2.0, std: float = 0.4) -> GaussianMixture2D:
    """Equal-weight isotropic modes on a circle: the classic multi-modal test density."""
    angle = torch.arange(n_modes) * 2 * math.pi / n_modes
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return GaussianMixture2D(means, std**2 * torch.eye(2).expand(n_modes, 2, 2))


def blobs() -> GaussianMixture2D:
    """Three overlapping anisotropic components of unequal weight."""
    means = torch.tensor([[-1.0, 0.0], [1.2, 0.8], [0.5, -1.2]])
    covs = torch.tensor(
        [[[0.6, 0.4], [0.4, 0.5]], [[0.3, -0.1], [-0.1, 0.4]], [[0.5, 0.0], [0.0, 0.1]]]
    )
    return GaussianMixture2D(means, covs, torch.tensor([0.5, 0.3, 0.2]))


DENSITIES = {"ring": ring, "blobs": blobs}


def get_density(name: str) -> GaussianMixture2D:
    """A named 2-D density: ``ring`` or ``blobs``."""
    if name not in DENSITIES:
        raise UserError(f"unknown 2-D density {name!r}; choose from {', '.join(DENSITIES)}")
    return DENSITIES[name]()


def toy2d_task(density: str, n_train: int, n_val: int, n_test: int, seed: int) -> DenseData:
    """Train/validation/test samples of a named density, reproducible from ``seed``."""
    p = get_density(density)
    g = torch.Generator().manual_seed(seed)
    splits = {
        name: Split(p.sample(n, generator=g).float())
        for name, n in (("train", n_train), ("val", n_val), ("test", n_test))
    }
    return DenseData(f"toy2d/{density}", splits, p.log_prob, extra_metrics=grid_integrals)


GRID_HALF_WIDTH = 5.0
"""Half-width of the square ``[-5, 5]^2`` the density integrals cover: the densities here put
less than ``1e-6`` of their mass outside it."""


def grid_integrals(model, half_width: float = GRID_HALF_WIDTH, grid: int = 400) -> dict:
    """``∫ q(x) dx`` over ``[-w, w]^2`` by the midpoint rule on ``grid x grid`` cells, from the
    exact log-density and from the paper's estimate (``model.log_prob(x, exact=...)`` in original
    units). A normalised density gives 1 (up to the mass outside the square and the grid error).

    Cells whose centre has no preimage found by Newton count as zero density.

    Returns:
        ``density_integral_exact``, ``density_integral_estimate`` and
        ``density_integral_exact_converged`` (share of cells with a preimage).
    """
    edges = torch.linspace(-half_width, half_width, grid + 1, dtype=torch.float64)
    mid = (edges[1:] + edges[:-1]) / 2
    pts = torch.cartesian_prod(mid, mid)
    cell = (edges[1] - edges[0]).item() ** 2
    param = next(model.parameters())
    out = {}
    for kind, exact in (("exact", True), ("estimate", False)):
        lp = torch.cat(
            [model.log_prob(c.to(param), exact=exact).double().cpu() for c in pts.split(8192)]
        )
        out[f"density_integral_{kind}"] = (lp.exp().nansum() * cell).item()
        if exact:
            out["density_integral_exact_converged"] = lp.isfinite().double().mean().item()
    return out
