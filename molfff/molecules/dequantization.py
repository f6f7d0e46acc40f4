"""Dequantization of discrete atom features: a continuous flow then bounds their likelihood.

A flow models positions and *continuous* node features ``v``; the data has discrete atom types
``k`` (one-hot over K classes) and an integer charge ``c``. A variational distribution
``q(v | x, h)`` whose support maps back to ``h = (k, c)`` turns the flow's density into a bound
(Satorras et al. 2021b, section 4; Ho et al. 2019; Hoogeboom et al. 2021):

    log P(x, h) >= E_{v ~ q(v | x, h)} [ log p_model(x, v) - log q(v | x, h) ].

Atom types (argmax flow, Hoogeboom et al. 2021, section 4): draw ``u ~ N(mu, sigma^2)`` in R^K and
threshold it into the region where class k is the argmax,

    v_k = u_k,      v_i = u_k - delta - softplus(u_k - u_i)   (i ≠ k),

so ``v_k - v_i > delta >= 0``. Ordering the coordinates with k first, the Jacobian is
triangular with diagonal 1 and ``σ(u_k - u_i)``, hence

    log|det ∂v/∂u| = sum_{i≠k} log σ(u_k - u_i).

The shift ``delta`` (``margin``) moves the region away from the ties ``v_i = v_k``, which float32
rounding would otherwise produce when ``u_i >> u_k``; a shift has unit Jacobian and changes no
density. Sampling maps back with ``k = argmax(v)``.

Charge (variational dequantization, Ho et al. 2019, section 3.1.2): draw ``u ~ N(mu, sigma^2)``
in R and set

    s = delta + (1 - 2 delta) σ(u) ∈ (delta, 1 - delta),     v = (c + s) / a,

with ``a`` the ``charge_scale``: ``c`` is the raw integer charge (for QM9 the atomic number, as in
the reference E-NF/EDM code), and ``a`` optionally brings ``v`` to O(1) (``a = 10`` for QM9; the
default ``a = 1`` keeps raw atomic numbers). ``delta`` keeps ``floor(a v)`` exact under rounding.

    log|dv/du| = log σ(u) + log σ(-u) + log(1 - 2 delta) - log a,

and sampling maps back with ``c = floor(a v)``.

What ``log q(v | x, h)`` contains (per node, summed per molecule by :class:`Dequantizer`): the
full Gaussian log-density of ``u`` in K + 1 dimensions *with* its normaliser,
``sum_j [-(u_j - mu_j)^2 / (2 sigma_j^2) - log sigma_j - log(2π)/2]``, minus the thresholding
log-det above, minus the charge log-det above (which includes ``-log a`` and ``log(1 - 2 delta)``).
It is therefore the density of ``v`` in the coordinates the flow sees, and integrates to one over
the region ``{argmax = k, floor(a v_c) = c}``; nothing else is added (no uniform-noise or
per-dimension constants).

The mean and log standard deviation come from an :class:`~molfff.nn.egnn.EGNN` reading the
molecule's positions and ``(one_hot, c / a)``; only its invariant feature output is used, so
``q`` is invariant to rotations, reflections and translations and equivariant to permutations of
the atoms (noise permuted alike).

References:
    Hoogeboom, Nielsen, Jaini, Forré, Welling, "Argmax Flows and Multinomial Diffusion: Learning
    Categorical Distributions", NeurIPS 2021, arXiv:2102.05379.
    Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative Models with
    Variational Dequantization and Architecture Design", ICML 2019, arXiv:1902.00275.
    Satorras, Hoogeboom, Fuchs, Posner, Welling, "E(n) Equivariant Normalizing Flows",
    NeurIPS 2021, arXiv:2105.09016 (2021b).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal
from torch_geometric.utils import scatter

from molfff.nn.egnn import EGNN

_LOG_2PI = math.log(2 * math.pi)


def _check_margin(margin: float, upper: float) -> None:
    if not 0.0 <= margin < upper:
        raise ValueError(f"margin must be in [0, {upper}), got {margin}")


def argmax_threshold(u: Tensor, index: Tensor, margin: float = 0.0) -> tuple[Tensor, Tensor]:
    """Threshold ``u`` into the region where ``index`` is the argmax (Hoogeboom et al. 2021).

    ``v_k = u_k``, ``v_i = u_k - margin - softplus(u_k - u_i)`` for ``i ≠ k``;
    ``log|det ∂v/∂u| = sum_{i≠k} log σ(u_k - u_i)``.

    Args:
        u: ``(N, K)`` unconstrained values.
        index: ``(N,)`` class k of every row, in ``0..K-1``.
        margin: ``delta >= 0``, the smallest gap ``v_k - v_i``.

    Returns:
        ``v (N, K)`` with ``argmax(v) = index`` and the log-det ``(N,)``.
    """
    if u.dim() != 2 or index.shape != (u.shape[0],):
        raise ValueError(f"need u (N, K) and index (N,), got {tuple(u.shape)}, {index.shape}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= u.shape[1]):
        raise ValueError(f"index must lie in 0..{u.shape[1] - 1}")
    _check_margin(margin, math.inf)
    is_k = F.one_hot(index.long(), u.shape[1]).bool()  # (N, K)
    u_k = u.gather(1, index.long().unsqueeze(1))  # (N, 1)
    v = torch.where(is_k, u_k, u_k - margin - F.softplus(u_k - u))
    log_det = torch.where(is_k, 0.0, F.logsigmoid(u_k - u)).sum(dim=1)
    return v, log_det


def _softplus_inverse(y: Tensor) -> Tensor:
    """``log(exp(y) - 1)`` for ``y > 0``, written as ``y + log(1 - exp(-y))`` for stability."""
    return y + torch.log(-torch.expm1(-y))


def _log_density(u: Tensor, mu: Tensor, log_sigma: Tensor, log_det: Tensor) -> Tensor:
    """``sum_j log N(u_j) - log_det`` per row; ``-inf`` where ``log_det`` is ``+inf`` (outside)."""
    inside = torch.isfinite(log_det)
    u = torch.where(inside.unsqueeze(1), u, mu)  # keep the Gaussian finite outside the support
    log_n = Normal(mu, log_sigma.exp(), validate_args=False).log_prob(u).sum(dim=1)
    value = log_n - torch.where(inside, log_det, 0.0)
    return torch.where(inside, value, torch.full_like(value, -math.inf))


def argmax_threshold_inverse(v: Tensor, margin: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Invert :func:`argmax_threshold`: ``k = argmax(v)``, ``u_i = v_k - softplus^{-1}(gap_i)``.

    With ``gap_i = v_k - v_i - margin``. Rows with some ``gap_i <= 0`` (``i ≠ k``) lie outside
    the image of the threshold map; their log-det is reported as ``+inf`` (and their ``u`` is
    meaningless) so that densities come out as ``-inf``.

    Args:
        v: ``(N, K)`` thresholded values.
        margin: the ``delta`` used in the forward map.

    Returns:
        ``u (N, K)``, ``index (N,)`` and the forward log-det ``(N,)`` at ``u``.
    """
    if v.dim() != 2:
        raise ValueError(f"need v (N, K), got {tuple(v.shape)}")
    _check_margin(margin, math.inf)
    index = v.argmax(dim=1)
    is_k = F.one_hot(index, v.shape[1]).bool()  # (N, K)
    v_k = v.gather(1, index.unsqueeze(1))  # (N, 1)
    gap = torch.where(is_k, 1.0, v_k - v - margin)  # (N, K), placeholder 1 on the argmax
    inside = (gap > 0).all(dim=1)  # (N,)
    t = _softplus_inverse(gap.clamp(min=torch.finfo(v.dtype).tiny))  # u_k - u_i
    u = torch.where(is_k, v_k, v_k - t)
    log_det = torch.where(is_k, 0.0, F.logsigmoid(t)).sum(dim=1)
    log_det = torch.where(inside, log_det, torch.full_like(log_det, math.inf))
    return u, index, log_det


def argmax_log_prob(
    v: Tensor, mu: Tensor, log_sigma: Tensor, margin: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``log q(v) = log N(u; mu, sigma^2) - log|det ∂v/∂u|`` with ``u`` from the inverse map.

    Args:
        v: ``(N, K)`` thresholded values; ``mu``, ``log_sigma``: ``(N, K)`` Gaussian of ``u``.
        margin: the ``delta`` of the forward map.

    Returns:
        ``log q (N,)`` (``-inf`` outside the support) and the class ``(N,)``.
    """
    if mu.shape != v.shape or log_sigma.shape != v.shape:
        raise ValueError(
            f"v, mu, log_sigma must share one (N, K) shape, got {tuple(v.shape)}, "
            f"{tuple(mu.shape)}, {tuple(log_sigma.shape)}"
        )
    u, index, log_det = argmax_threshold_inverse(v, margin)
    return _log_density(u, mu, log_sigma, log_det), index


def ordinal_dequantize(
    u: Tensor, c: Tensor, scale: float = 1.0, margin: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``v = (c + delta + (1 - 2 delta) σ(u)) / a`` and its log-det (Ho et al. 2019).

    ``log|dv/du| = log σ(u) + log σ(-u) + log(1 - 2 delta) - log a``, elementwise.

    Args:
        u: ``(N, C)`` unconstrained values; c: ``(N, C)`` integer-valued.
        scale: ``a > 0``; margin: ``delta`` in ``[0, 1/2)``.

    Returns:
        ``v (N, C)`` with ``floor(a v) = c`` and the log-det ``(N,)`` summed over columns.
    """
    if u.shape != c.shape or u.dim() != 2:
        raise ValueError(f"need u and c of one (N, C) shape, got {tuple(u.shape)}, {c.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    _check_margin(margin, 0.5)
    s = margin + (1.0 - 2.0 * margin) * torch.sigmoid(u)
    v = (c.to(u.dtype) + s) / scale
    log_det = F.logsigmoid(u) + F.logsigmoid(-u) + math.log1p(-2.0 * margin) - math.log(scale)
    return v, log_det.sum(dim=1)


def ordinal_dequantize_inverse(
    v: Tensor, scale: float = 1.0, margin: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Invert :func:`ordinal_dequantize`: ``c = floor(a v)``, ``s = a v - c``,
    ``u = logit((s - delta) / (1 - 2 delta))``.

    Entries with ``s`` outside ``(delta, 1 - delta)`` are outside the image; their rows get log-det
    ``+inf``.

    Returns:
        ``u (N, C)``, ``c (N, C)`` (floats holding integers) and the forward log-det ``(N,)``.
    """
    if v.dim() != 2:
        raise ValueError(f"need v (N, C), got {tuple(v.shape)}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    _check_margin(margin, 0.5)
    y = v * scale
    c = torch.floor(y)
    t = (y - c - margin) / (1.0 - 2.0 * margin)  # σ(u)
    inside = ((t > 0) & (t < 1)).all(dim=1)
    u = torch.log(t) - torch.log1p(-t)
    log_det = F.logsigmoid(u) + F.logsigmoid(-u) + math.log1p(-2.0 * margin) - math.log(scale)
    log_det = torch.where(inside, log_det.sum(dim=1), torch.full_like(v[:, 0], math.inf))
    return u, c, log_det


def ordinal_log_prob(
    v: Tensor, mu: Tensor, log_sigma: Tensor, scale: float = 1.0, margin: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``log q(v) = log N(u; mu, sigma^2) - log|dv/du|`` summed over columns.

    Returns:
        ``log q (N,)`` (``-inf`` outside the support) and ``c = floor(a v)`` ``(N, C)``.
    """
    if mu.shape != v.shape or log_sigma.shape != v.shape:
        raise ValueError(
            f"v, mu, log_sigma must share one (N, C) shape, got {tuple(v.shape)}, "
            f"{tuple(mu.shape)}, {tuple(log_sigma.shape)}"
        )
    u, c, log_det = ordinal_dequantize_inverse(v, scale, margin)
    return _log_density(u, mu, log_sigma, log_det), c


class Dequantizer(nn.Module):
    """Variational dequantizer of ``(one_hot (N, K), charge (N, 1))`` into ``v (N, K + 1)``.

    Columns ``0..K-1`` of ``v`` are the argmax-flow values of the atom type, column K is the
    dequantized charge ``(c + s) / charge_scale``; see the module docstring for the maps and for
    exactly what ``log q`` contains. An :class:`EGNN` reads ``pos`` and ``[one_hot, c / a]``
    and outputs per node ``(mu, log sigma)`` of the ``K + 1`` Gaussian coordinates ``u``, to
    which ``type_offset * one_hot`` is added on the type columns. The EGNN's output layer starts
    at zero, so ``u ~ N(type_offset * one_hot, I)`` at initialisation.

    Why an offset: with ``type_offset = 0`` each class's ``v`` fills its whole argmax cone (a
    fifth of ``N(0, I)``), and an identity-like flow with this q is a stable "uniform types"
    optimum. Starting ``v`` deep inside the cone is one way to leave it. Measured on the
    ladder (``scripts/qm9_ladder.py``, CH4, 1000 steps), it did not help by itself: q's means
    drifted back from 3 to about 1.3 within 1000 steps and the type agreement was 0.34 at
    beta 2000; at beta 200 it was 0.74 with the offset and 0.78 without. Default 0.

    Args:
        num_types: K, number of atom types (5 for QM9: H, C, N, O, F).
        charge_scale: ``a``; the charge column is ``(c + s) / a`` (1: raw atomic numbers).
        margin: ``delta``, see module docstring; ``0 <= delta < 1/2``.
        type_offset: added to the mean of ``u`` on the true type's column (see above); finite.
        hidden, blocks: width and depth of the conditional EGNN.
        **egnn_kwargs: further :class:`EGNN` arguments (``sublayers``, ``activation``, ...).
    """

    def __init__(
        self,
        num_types: int,
        *,
        charge_scale: float = 1.0,
        margin: float = 1e-3,
        type_offset: float = 0.0,
        hidden: int = 64,
        blocks: int = 2,
        **egnn_kwargs,
    ):
        super().__init__()
        if num_types < 1:
            raise ValueError(f"num_types must be >= 1, got {num_types}")
        if not charge_scale > 0:
            raise ValueError(f"charge_scale must be positive, got {charge_scale}")
        _check_margin(margin, 0.5)
        if not math.isfinite(type_offset):
            raise ValueError(f"type_offset must be finite, got {type_offset}")
        self.num_types, self.charge_scale, self.margin = num_types, float(charge_scale), margin
        self.type_offset = float(type_offset)
        self.features = num_types + 1
        self.net = EGNN(
            self.features, 2 * self.features, hidden=hidden, blocks=blocks, **egnn_kwargs
        )
        nn.init.zeros_(self.net.embedding_out.weight)
        nn.init.zeros_(self.net.embedding_out.bias)

    def _check_inputs(self, pos: Tensor, batch: Tensor) -> None:
        if pos.dim() != 2 or pos.shape[1] < 1 or not pos.is_floating_point():
            raise ValueError(f"pos must be a float (N, 3) tensor, got {tuple(pos.shape)}")
        if batch.shape != (pos.shape[0],) or batch.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"batch must be an integer ({pos.shape[0]},) tensor, got {tuple(batch.shape)} "
                f"{batch.dtype}"
            )

    def _num_graphs(self, batch: Tensor, num_graphs: int | None) -> int:
        needed = int(batch.max().item()) + 1 if batch.numel() else 0
        if num_graphs is None:
            return needed
        if num_graphs < needed:
            raise ValueError(f"num_graphs={num_graphs} but batch holds graph index {needed - 1}")
        return num_graphs

    def conditional(
        self, pos: Tensor, one_hot: Tensor, charge: Tensor, batch: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(mu, log sigma)``, each ``(N, K + 1)``, of ``u`` given the molecule (invariant)."""
        h = torch.cat([one_hot.to(pos.dtype), charge.to(pos.dtype) / self.charge_scale], dim=1)
        _, out = self.net(pos, h, batch.long())
        mu, log_sigma = out.chunk(2, dim=1)
        if self.type_offset:
            # type columns only: one_hot padded with a zero for the charge column
            mu = mu + self.type_offset * F.pad(one_hot.to(mu.dtype), (0, 1))
        return mu, log_sigma

    def forward(
        self,
        pos: Tensor,
        one_hot: Tensor,
        charge: Tensor,
        batch: Tensor,
        *,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
        num_graphs: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``v ~ q(v | pos, h)`` by reparameterisation and return its log-density.

        ``u = mu + sigma · eps``, ``eps ~ N(0, I)``; ``v = [threshold(u_types, k),
        (c + s(u_c)) / a]``; ``log q = sum_nodes [log N(u; mu, sigma^2) - log|det ∂v/∂u|]``.

        Args:
            pos: ``(N, 3)`` positions.
            one_hot: ``(N, K)`` exactly one-hot atom types.
            charge: ``(N, 1)`` integer-valued charges (raw atomic numbers for QM9).
            batch: ``(N,)`` molecule index of every atom.
            eps: optional ``(N, K + 1)`` standard normal noise (drawn if omitted).
            generator: random generator for ``eps``.
            num_graphs: B (default ``batch.max() + 1``).

        Returns:
            ``v (N, K + 1)`` and ``log q (B,)``, the term subtracted in the ELBO.
        """
        self._check_inputs(pos, batch)
        n, k = pos.shape[0], self.num_types
        if one_hot.shape != (n, k):
            raise ValueError(f"one_hot must be ({n}, {k}), got {tuple(one_hot.shape)}")
        if not bool(((one_hot == 0) | (one_hot == 1)).all() and (one_hot.sum(dim=1) == 1).all()):
            raise ValueError("one_hot rows must hold a single 1 and zeros elsewhere")
        if charge.shape != (n, 1):
            raise ValueError(f"charge must be ({n}, 1), got {tuple(charge.shape)}")
        if not bool(torch.isfinite(charge).all() and (charge == torch.round(charge)).all()):
            raise ValueError("charge must hold finite integer values")
        if eps is None:
            eps = torch.randn(n, k + 1, generator=generator, dtype=pos.dtype, device=pos.device)
        elif eps.shape != (n, k + 1):
            raise ValueError(f"eps must be ({n}, {k + 1}), got {tuple(eps.shape)}")
        num_graphs = self._num_graphs(batch, num_graphs)
        mu, log_sigma = self.conditional(pos, one_hot, charge, batch)
        eps = eps.to(pos.dtype)
        u = mu + torch.exp(log_sigma) * eps  # (N, K + 1)
        # log N(u; mu, sigma^2) through eps = (u - mu) / sigma, which we have exactly: no
        # cancellation in u - mu when sigma is small against mu
        log_n = (-0.5 * eps**2 - log_sigma - 0.5 * _LOG_2PI).sum(dim=1)  # (N,)
        v_types, ld_types = argmax_threshold(u[:, :k], one_hot.argmax(dim=1), self.margin)
        v_charge, ld_charge = ordinal_dequantize(
            u[:, k:], charge.to(pos.dtype), self.charge_scale, self.margin
        )
        log_q = scatter(log_n - ld_types - ld_charge, batch.long(), 0, num_graphs, reduce="sum")
        return torch.cat([v_types, v_charge], dim=1), log_q

    def log_prob(
        self, pos: Tensor, v: Tensor, batch: Tensor, *, num_graphs: int | None = None
    ) -> Tensor:
        """``log q(v | pos, quantize(v))`` per molecule ``(B,)`` for given ``v (N, K + 1)``.

        The conditioning atom types and charges are those ``v`` decodes to, so this is the
        density of :meth:`forward` at ``v`` given the molecule ``v`` belongs to. Points within
        ``margin`` of a cell boundary have density zero (``-inf``).
        """
        self._check_inputs(pos, batch)
        n, k = pos.shape[0], self.num_types
        if v.shape != (n, k + 1):
            raise ValueError(f"v must be ({n}, {k + 1}), got {tuple(v.shape)}")
        num_graphs = self._num_graphs(batch, num_graphs)
        one_hot, charge = self.quantize(v)
        mu, log_sigma = self.conditional(pos, one_hot, charge, batch)
        lq_types, _ = argmax_log_prob(v[:, :k], mu[:, :k], log_sigma[:, :k], self.margin)
        lq_charge, _ = ordinal_log_prob(
            v[:, k:], mu[:, k:], log_sigma[:, k:], self.charge_scale, self.margin
        )
        return scatter(lq_types + lq_charge, batch.long(), 0, num_graphs, reduce="sum")

    def quantize(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``v (N, K + 1) -> (one_hot (N, K), charge (N, 1))``: argmax and ``floor(a v_c)``.

        Both outputs have ``v``'s dtype; ``charge`` holds integers.
        """
        k = self.num_types
        if v.dim() != 2 or v.shape[1] != k + 1:
            raise ValueError(f"v must be (N, {k + 1}), got {tuple(v.shape)}")
        one_hot = F.one_hot(v[:, :k].argmax(dim=1), k).to(v.dtype)
        charge = torch.floor(v[:, k:] * self.charge_scale)
        return one_hot, charge
