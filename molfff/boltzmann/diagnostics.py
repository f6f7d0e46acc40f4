"""Checks that samples follow a Boltzmann density: the configurational temperature.

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
