"""Importance reweighting of generator samples towards the Boltzmann distribution.

A generator with exact density q(x) and samples ``x_k ~ q`` estimates equilibrium expectations
under ``p(x) ∝ exp(-u(x))`` (u the reduced energy) by self-normalised importance sampling
(Noé, Olsson, Köhler, Wu, "Boltzmann generators", Science 2019):

    log w_k = -u(x_k) - log q(x_k),      E_p[O] ≈ mu = sum_k w_k O(x_k) / sum_k w_k.

The Kish effective sample size ``ESS = (sum_k w_k)^2 / sum_k w_k^2`` says how many independent
samples of p the weighted set is worth. The standard error is the delta-method one for a ratio
estimator (Owen, "Monte Carlo theory, methods and examples", 2013, §9.2), with normalised
weights ``w̄_k = w_k / sum w``:

    se^2 = sum_k w̄_k^2 (O_k - mu)^2,

which is ``≈ Var_p[O] / ESS``: it shrinks with the effective, not the nominal, sample size.

Both this and a bootstrap over samples (used before; the two agree to ~1 % when the weights are
well behaved) are computed from the samples drawn. When a handful of samples carry the weight,
the region where q under-covers p has not been sampled: the estimate is biased (by O(1/ESS),
always towards the region q favours), and no error bar computed from the same samples sees that
mass. Below :data:`MIN_ESS_SAMPLES` effective samples or an ESS fraction of
:data:`MIN_ESS_FRACTION`, :func:`reweighted_mean` therefore withholds the error bar and
:func:`low_ess_reason` says why.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from molfff.errors import UserError

#: Fewer effective samples than this: estimates flagged, error bars withheld.
MIN_ESS_SAMPLES = 50
#: An ESS below this fraction of the samples drawn: flagged likewise.
MIN_ESS_FRACTION = 0.01


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


def low_ess_reason(log_w: Tensor) -> str | None:
    """Why estimates from these ``(B,)`` log-weights cannot be trusted, or None if they can.

    Flags fewer than :data:`MIN_ESS_SAMPLES` effective samples or an ESS fraction under
    :data:`MIN_ESS_FRACTION` (see the module docstring for why error bars fail there).
    """
    n = log_w.numel()
    fraction = kish_ess(log_w)
    ess = fraction * n
    if ess >= MIN_ESS_SAMPLES and fraction >= MIN_ESS_FRACTION:
        return None
    return (
        f"effective sample size {ess:.1f} of {n} ({100 * fraction:.2f}%) is below "
        f"{MIN_ESS_SAMPLES} samples or {100 * MIN_ESS_FRACTION:g}%: a few samples carry the "
        "weight, so reweighted estimates are biased and have no trustworthy error bar"
    )


def snis_mean_and_stderr(values: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Self-normalised mean, delta-method standard error and Kish ESS over the last dim.

    Args:
        values: ``(..., B)`` finite observable values.
        log_w: ``(..., B)`` log-weights (``-inf`` for weight zero; at least one finite per row).

    Returns:
        ``(...)`` means ``sum w̄ O``, standard errors ``sqrt(sum w̄^2 (O - mean)^2)`` and
        effective sample sizes ``1 / sum w̄^2`` (a count, not a fraction).
    """
    w = torch.softmax(log_w.double(), dim=-1)
    values = values.double()
    mean = (w * values).sum(-1)
    stderr = ((w**2) * (values - mean.unsqueeze(-1)) ** 2).sum(-1).sqrt()
    return mean, stderr, 1.0 / (w**2).sum(-1)


@dataclass
class Estimate:
    """A self-normalised estimate, its standard error (None: withheld) and its Kish ESS."""

    mean: float
    stderr: float | None
    ess: float

    def __str__(self) -> str:
        if self.stderr is None:
            return f"{self.mean:.4f} (no error bar: ESS {self.ess:.1f})"
        return f"{self.mean:.4f} ± {self.stderr:.4f}"


def reweighted_mean(values: Tensor, log_w: Tensor | None = None) -> Estimate:
    """``sum_k w_k O_k / sum_k w_k`` with its delta-method standard error.

    The error bar is withheld (``stderr=None``) when :func:`low_ess_reason` flags the weights.

    Args:
        values: ``(B,)`` observable per sample.
        log_w: ``(B,)`` log-weights; None gives the plain mean (error ``std / sqrt(B)``).

    Raises:
        ValueError: on mismatched shapes, all-zero weights, or a non-finite value with non-zero
            weight.
    """
    if values.dim() != 1 or (log_w is not None and log_w.shape != values.shape):
        raise ValueError(
            f"values and log_w must be (B,), got {tuple(values.shape)}"
            + ("" if log_w is None else f" and {tuple(log_w.shape)}")
        )
    values = values.double()
    weighted = log_w is not None
    log_w = torch.zeros_like(values) if log_w is None else log_w.double()
    normalized_weights(log_w)  # raises if every weight is zero
    keep = torch.isfinite(values) | ~torch.isfinite(log_w)
    if not bool(keep.all()):  # a non-finite value with non-zero weight cannot be averaged
        raise ValueError("observable is not finite on samples with non-zero weight")
    values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    mean, stderr, ess = snis_mean_and_stderr(values, log_w)
    withheld = weighted and low_ess_reason(log_w) is not None
    return Estimate(float(mean), None if withheld else float(stderr), float(ess))


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
    ``mean_distance``) or ``module:function`` naming a Python function.

    ``module`` is looked up in the current working folder first (as ``python -m`` would), so a
    ``myobs.py`` next to the user needs no ``PYTHONPATH``.

    Raises:
        UserError: for an unknown name, a module or function that cannot be imported, or a
            non-callable.
    """
    if callable(spec):
        return spec
    if spec in BUILTIN_OBSERVABLES:
        return BUILTIN_OBSERVABLES[spec]
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise UserError(
            f"unknown observable {spec!r}: use {', '.join(BUILTIN_OBSERVABLES)}, "
            "or module:function (module.py in the working folder or an installed package)"
        )
    try:
        func = getattr(_import_from_cwd(module_name), func_name)
    except Exception as err:  # the user's module may fail in any way while importing
        raise UserError(
            f"observable {spec!r} cannot be imported ({type(err).__name__}: {err})"
        ) from None
    if not callable(func):
        raise UserError(f"observable {spec!r} is not callable")
    return func


def _import_from_cwd(module_name: str):
    """Import ``module_name`` with the working folder first on ``sys.path``, for this import
    only (the ``molfff`` console script, unlike ``python -m``, does not put it there)."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # the file may be newer than the path finders' caches
    try:
        return importlib.import_module(module_name)
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)  # the first occurrence: the entry inserted above


def resolve_observables(
    specs: Sequence[str | Callable] | Mapping[str, str | Callable],
) -> dict[str, Callable[[Tensor, object], Tensor]]:
    """Name -> observable for each spec (see :func:`resolve_observable`); a callable is named
    by its ``__name__``. Raises ``UserError`` for the first spec that does not resolve."""
    if isinstance(specs, Mapping):
        return {name: resolve_observable(spec) for name, spec in specs.items()}
    return {
        spec if isinstance(spec, str) else getattr(spec, "__name__", "observable"): (
            resolve_observable(spec)
        )
        for spec in specs
    }


def evaluate_observable(
    name: str,
    fn: Callable,
    x: Tensor,
    energy,
    samples: str = "reference samples",
    log_w: Tensor | None = None,
) -> Tensor:
    """``fn(x, energy)`` as a ``(B,)`` float64 tensor, checked, for ``x`` ``(B, n·d)``.

    Args:
        samples: what ``x`` is, for the message (``"reference samples"``, ``"generated
            samples"``).
        log_w: ``(B,)`` log-weights of ``x``: a NaN or infinite value is accepted on a sample of
            zero weight (``-inf``, as :func:`reweighted_mean` does); None: on no sample.

    Raises:
        UserError: if ``fn`` raises, returns anything but a ``(B,)`` tensor, or returns a NaN or
            infinite value where it counts.
    """
    try:
        out = fn(x.double(), energy)
    except Exception as err:  # any failure of user code ends in one message
        raise UserError(
            f"observable {name!r} fails on {samples} ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(
            f"observable {name!r} must return a ({x.shape[0]},) tensor for {x.shape[0]} "
            f"samples, got {got}"
        )
    out = out.detach().double()
    bad = ~torch.isfinite(out)
    if log_w is not None:
        bad &= torch.isfinite(log_w)
    if bool(bad.any()):
        raise UserError(
            f"observable {name!r} is NaN or infinite on {int(bad.sum())} of {len(out)} {samples}"
        )
    return out


def check_observable(name: str, fn: Callable, x: Tensor, energy) -> None:
    """Evaluate ``fn`` on a few rows ``x`` ``(k, n·d)`` to catch a broken observable before
    sampling: it must return a finite ``(k,)`` tensor (:func:`evaluate_observable`).

    Raises:
        UserError: if ``fn`` raises or returns anything else.
    """
    evaluate_observable(name, fn, x, energy)
