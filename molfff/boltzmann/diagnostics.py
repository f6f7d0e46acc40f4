"""Checks on samples: the configurational temperature, and MCMC convergence diagnostics.

The convergence diagnostics (split-R-hat, a first-half/second-half drift z-score) are used by
:mod:`molfff.boltzmann.mcmc`.

For samples from ``p(x) ∝ exp(-U(x)/kT)`` that vanish fast enough at the boundary, integration by
parts gives ``E[|∇U|^2] = kT E[ΔU]``, so the ratio ``E[|∇U|^2] / E[ΔU]`` estimates kT using
positions alone (Rugh 1997; Butler, Ayton, Jepps, Evans 1998). Applied to a *reduced* energy
``u = U/kT`` the ratio must be 1; a wrong energy (e.g. a pair term off by a factor 2) shows as a
ratio far from 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import hessian, vmap


def gradient_and_laplacian(
    energy: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Exact ``|∇U(x)|^2`` and ``ΔU(x) = tr ∇²U(x)`` per sample.

    The Hessian of every sample is formed with ``torch.func`` (``vmap`` of ``hessian``), so
    memory grows as ``chunk_size · D^2``; fine for the particle benchmarks (D <= 165).

    Args:
        energy: batched energy ``(B, D) -> (B,)``.
        x: ``(B, D)`` positions.
        chunk_size: samples per vectorised Hessian evaluation.

    Returns:
        ``(B,)`` squared gradient norms and ``(B,)`` Laplacians.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (B, D) tensor, got shape {tuple(x.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    def single(xi: Tensor) -> Tensor:
        return energy(xi.unsqueeze(0)).squeeze(0)

    grad_sq, lap = [], []
    for xc in x.detach().split(chunk_size):
        xg = xc.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(energy(xg).sum(), xg)
        h = vmap(hessian(single))(xc)  # (b, D, D)
        grad_sq.append((g**2).sum(dim=1))
        lap.append(torch.diagonal(h, dim1=1, dim2=2).sum(dim=1))
    return torch.cat(grad_sq), torch.cat(lap)


def configurational_temperature(
    energy: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int = 256
) -> tuple[float, float]:
    """Configurational temperature ``kT_conf = E[|∇U|^2] / E[ΔU]`` and its standard error.

    For ``x ~ exp(-U/kT)``: ``E[|∇U|^2] = kT E[ΔU]`` (integration by parts), so the estimate is
    kT in the units of ``energy``; for the reduced energies of
    :func:`molfff.boltzmann.get_energy` it must be 1. The standard error is the delta-method one
    of a ratio of means, ``sqrt(Var[|∇U|^2 - R ΔU] / N) / mean(ΔU)``, which assumes independent
    samples (correlated MCMC samples make the true error larger).

    References:
        Rugh, "Dynamical approach to temperature", PRL 78, 772 (1997).
        Butler, Ayton, Jepps, Evans, "Configurational temperature: verification of Monte Carlo
        simulations", J. Chem. Phys. 109, 6519 (1998).

    Args:
        energy: batched energy ``(B, D) -> (B,)``.
        x: ``(B, D)`` samples, B >= 2.
        chunk_size: samples per vectorised Hessian evaluation.

    Returns:
        ``(estimate, stderr)`` as Python floats.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (B, D) with B >= 2 samples, got shape {tuple(x.shape)}")
    grad_sq, lap = gradient_and_laplacian(energy, x, chunk_size)
    if not (torch.isfinite(grad_sq).all() and torch.isfinite(lap).all()):
        raise ValueError("energy gradient or Laplacian is not finite on some samples")
    mean_lap = lap.mean()
    if mean_lap <= 0:
        raise ValueError(f"mean Laplacian must be positive for a temperature, got {mean_lap:.3g}")
    ratio = grad_sq.mean() / mean_lap
    resid = grad_sq - ratio * lap
    stderr = resid.std() / (mean_lap * resid.numel() ** 0.5)
    return float(ratio), float(stderr)


def split_rhat(values: Tensor) -> float:
    """Split-R-hat of a scalar over chains: ``(T, C)`` draws -> float.

    Each chain is cut into two halves of length m = floor(T/2) (the middle draw of an odd T is
    dropped), giving M = 2C sequences ``ψ_{j,1..m}``. With ``B = m/(M-1) sum_j (ψ̄_j - ψ̄)^2``
    and ``W = (1/M) sum_j s_j^2``,

        R-hat = sqrt( ((m-1)/m · W + B/m) / W ),

    close to 1 when all chains sample the same distribution (Gelman et al. 2013, sec. 11.4).

    Returns:
        R-hat, or NaN when T < 4 or the within-chain variance is zero.
    """
    if values.dim() != 2:
        raise ValueError(f"values must be (T, C) draws, got shape {tuple(values.shape)}")
    t = values.shape[0]
    if t < 4:
        return float("nan")
    m = t // 2
    v = values.double()
    halves = torch.cat([v[:m], v[t - m :]], dim=1)  # (m, 2C)
    w = halves.var(dim=0, unbiased=True).mean()
    b = m * halves.mean(dim=0).var(unbiased=True)
    if not w > 0:
        return float("nan")
    return float(torch.sqrt(((m - 1) / m * w + b / m) / w))


def stationarity_z(values: Tensor) -> float:
    """z-score of a drift between the first and the second half of many independent chains.

    Per chain c, ``δ_c = mean(second half) - mean(first half)`` of its T draws. If every chain
    was stationary when recording began, ``E[δ_c] = 0`` and the δ_c are independent across
    chains whatever the autocorrelation within a chain, so ``z = mean(δ) / (std(δ)/sqrt(C))``
    is approximately standard normal; a burn-in too short for the chains to forget their start
    shows as a large ``|z|``.

    Args:
        values: ``(T, C)`` draws of a scalar, T >= 2, C >= 2.

    Returns:
        z, or NaN when T < 2, C < 2 or all δ_c are equal.
    """
    if values.dim() != 2:
        raise ValueError(f"values must be (T, C) draws, got shape {tuple(values.shape)}")
    t, c = values.shape
    if t < 2 or c < 2:
        return float("nan")
    v = values.double()
    delta = v[t - t // 2 :].mean(0) - v[: t // 2].mean(0)  # (C,)
    sd = delta.std()
    if not sd > 0:
        return float("nan")
    return float(delta.mean() / (sd / c**0.5))
