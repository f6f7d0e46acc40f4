"""Importance reweighting of generator samples towards the Boltzmann distribution.

A generator with exact density q(x) and samples ``x_k ~ q`` estimates equilibrium expectations
under ``p(x) ∝ exp(-u(x))`` (u the reduced energy) by self-normalised importance sampling
(Noé, Olsson, Köhler, Wu, "Boltzmann generators", Science 2019):

    log w_k = -u(x_k) - log q(x_k),      E_p[O] ≈ sum_k w_k O(x_k) / sum_k w_k.

The Kish effective sample size ``ESS = (sum_k w_k)^2 / sum_k w_k^2`` (reported as a fraction of
the number of samples) says how many independent samples of p the weighted set is worth. Error
bars come from the bootstrap over samples, which includes the weights' own variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from molfff.errors import UserError


def log_importance_weights(log_q: Tensor, energy: Tensor) -> Tensor:
    """``log w = -u(x) - log q(x)``, ``(B,)``; non-finite entries (e.g. overlapping LJ
    particles, u = +inf) get weight zero (``-inf``)."""
    if log_q.shape != energy.shape or log_q.dim() != 1:
        raise ValueError(
            f"log_q and energy must both be (B,), got {tuple(log_q.shape)} and "
            f"{tuple(energy.shape)}"
        )
    log_w = -energy.double() - log_q.double()
    return torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))


def normalized_weights(log_w: Tensor) -> Tensor:
    """Self-normalised weights ``w_k / sum w``, ``(B,)``."""
    if not bool(torch.isfinite(log_w).any()):
        raise ValueError("all importance weights are zero (every log-weight is -inf or NaN)")
    return torch.softmax(log_w.double(), dim=0)


def kish_ess(log_w: Tensor) -> float:
    """Kish effective sample size as a fraction of B: ``(sum w)^2 / (B sum w^2)`` in [1/B, 1]."""
    w = normalized_weights(log_w)
    return float(1.0 / (w**2).sum() / log_w.numel())


@dataclass
class Estimate:
    """A self-normalised estimate with its bootstrap standard error."""

    mean: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.stderr:.4f}"


def reweighted_mean(
    values: Tensor,
    log_w: Tensor | None = None,
    n_bootstrap: int = 200,
    generator: torch.Generator | None = None,
) -> Estimate:
    """``sum_k w_k O_k / sum_k w_k`` with a bootstrap standard error.

    Args:
        values: ``(B,)`` observable per sample.
        log_w: ``(B,)`` log-weights; None gives the plain (unweighted) mean.
        n_bootstrap: bootstrap resamples of the B (value, weight) pairs.
    """
    if values.dim() != 1 or (log_w is not None and log_w.shape != values.shape):
        raise ValueError(
            f"values and log_w must be (B,), got {tuple(values.shape)}"
            + ("" if log_w is None else f" and {tuple(log_w.shape)}")
        )
    values = values.double()
    log_w = torch.zeros_like(values) if log_w is None else log_w.double()
    keep = torch.isfinite(values) | ~torch.isfinite(log_w)
    if not bool(keep.all()):  # a non-finite value with non-zero weight cannot be averaged
        raise ValueError("observable is not finite on samples with non-zero weight")
    values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    mean = float((normalized_weights(log_w) * values).sum())
    idx = torch.randint(0, values.numel(), (n_bootstrap, values.numel()), generator=generator)
    boot = (torch.softmax(log_w[idx], dim=1) * values[idx]).sum(1)
    return Estimate(mean, float(boot.std()))


def mean_interatomic_distance(x: Tensor, n_particles: int, spatial_dim: int) -> Tensor:
    """Mean distance over unique particle pairs, ``(B, n·d) -> (B,)``."""
    p = x.reshape(x.shape[0], n_particles, spatial_dim)
    d = torch.cdist(p, p)
    i, j = torch.triu_indices(n_particles, n_particles, offset=1)
    return d[:, i, j].mean(1)


def interatomic_distances(x: Tensor, n_particles: int, spatial_dim: int) -> Tensor:
    """All unique pair distances, ``(B, n·d) -> (B, n(n-1)/2)``."""
    p = x.reshape(x.shape[0], n_particles, spatial_dim)
    i, j = torch.triu_indices(n_particles, n_particles, offset=1)
    return (p[:, i] - p[:, j]).norm(dim=-1)


def _energy(x: Tensor, energy) -> Tensor:
    return energy(x)


def _mean_distance(x: Tensor, energy) -> Tensor:
    return mean_interatomic_distance(x, energy.n_particles, energy.spatial_dim)


BUILTIN_OBSERVABLES: dict[str, Callable[[Tensor, object], Tensor]] = {
    "energy": _energy,
    "mean_distance": _mean_distance,
}


def resolve_observable(spec: str | Callable) -> Callable[[Tensor, object], Tensor]:
    """An observable ``O(x, energy) -> (B,)``: a callable, a built-in name (``energy``,
    ``mean_distance``) or ``package.module:function`` naming a Python function."""
    if callable(spec):
        return spec
    if spec in BUILTIN_OBSERVABLES:
        return BUILTIN_OBSERVABLES[spec]
    if ":" not in spec:
        raise UserError(
            f"unknown observable {spec!r}: use {', '.join(BUILTIN_OBSERVABLES)}, "
            "or package.module:function"
        )
    import importlib

    module_name, func_name = spec.split(":", 1)
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as err:
        raise UserError(f"observable {spec!r} cannot be imported ({err})") from None
    if not callable(func):
        raise UserError(f"observable {spec!r} is not callable")
    return func
