"""The decoder's preimage of a data point, for the exact density of the model that samples.

A free-form flow generates with its decoder, ``x = g(z)``, ``z ~ p_Z``, so the density of what it
samples is, by the change of variables,

    q(x) = p_Z(z*) / |det J_g(z*)|,        g(z*) = x.

The paper's estimate (Draxler et al. 2024, eq. 134-135) evaluates the same expression at
``z = f(x)``: exact where the encoder inverts the decoder, and elsewhere the density of the
different point ``g(f(x))``, not a normalised density of ``x``. :func:`invert_decoder` finds
``z*`` by Newton's method on ``r(z) = g(z) - x``, started from ``z0 = f(x)``, in the coordinates of
the layout's subspace (dense, particles with zero centre of mass, graphs alike):

    z_{k+1} = z_k - a_k J_g(z_k)^{-1} r(z_k),

with the exact per-sample Jacobian (:func:`~molfff.fff.logdet.jacobian`) and a backtracking line
search: ``a_k = 1, 1/2, 1/4, ...`` until ``||r||`` decreases by the Armijo factor
``1 - 1e-4 a_k``. The Jacobian computed at the last iterate is the one of the log-determinant, so
the estimate's cost (one Jacobian at ``z0``) is the first iteration, and a sample whose encoder
already inverts the decoder costs nothing more. Samples that converged leave the batch.

A sample **converges** when the root mean square of its residual per degree of freedom,
``||g(z) - x|| / sqrt(m)``, is at most ``tol``. It does not when

- ``J_g`` is singular (numerically) at an iterate: ``g`` is not locally invertible there;
- no step length decreases the residual (a local minimum of ``||r||`` with ``r != 0``: ``x`` has no
  preimage near ``z0``, or the iteration sits between folds of ``g``);
- ``max_iter`` steps do not reach ``tol``.

In each case the last accepted iterate is returned, with its residual, ``converged = False`` and
the log-determinant at that iterate: the density there is that of ``g(z)``, not of ``x``. Where
``g`` folds, ``x`` may have several preimages; the iteration finds one (usually the one nearest
``z0``) and the density it gives counts that branch only, so it is a lower bound on ``q(x)`` (the
NLL an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from molfff.fff.layout import DenseLayout, Layout
from molfff.fff.linalg import logabsdet, solve_ex
from molfff.fff.logdet import jacobian
from molfff.fff.network import FlowNetwork

ARMIJO = 1e-4
"""Sufficient decrease asked of a step of length ``a``: ``||r_new|| < (1 - ARMIJO a) ||r||``."""


def default_tol(dtype: torch.dtype) -> float:
    """Default tolerance on the RMS residual per degree of freedom, in data units: ``1e-12`` in
    float64, ``1e-5`` in float32 (about 100 float32 rounding steps at unit scale)."""
    return 1e-12 if dtype == torch.float64 else 1e-5


@dataclass
class DecoderPreimage:
    """Result of :func:`invert_decoder`; per-sample tensors are ``(B,)``.

    Attributes:
        z: ``z*``, shaped like ``x``: the last accepted iterate.
        log_det: ``log|det J_g(z*)|`` on the layout's subspace.
        log_det_start: ``log|det J_g(z0)|``, the paper estimate's log-determinant (computed as
            the first Newton iterate's Jacobian).
        residual: ``||g(z*) - x||`` (Euclidean norm over the sample's entries, data units).
        residual_start: ``||g(z0) - x||``, the same at the start (the reconstruction error the
            estimate ignores when ``z0 = f(x)``).
        converged: whether ``residual / sqrt(m) <= tol``.
        iterations: Newton steps taken (int64).
    """

    z: Tensor
    log_det: Tensor
    log_det_start: Tensor
    residual: Tensor
    residual_start: Tensor
    converged: Tensor
    iterations: Tensor


def invert_decoder(
    decoder: FlowNetwork,
    x: Tensor,
    z0: Tensor,
    layout: Layout | None = None,
    *,
    c: Tensor | None = None,
    tol: float | None = None,
    max_iter: int = 20,
    line_search: int = 10,
    restarts: int = 0,
    chunk_size: int | None = None,
) -> DecoderPreimage:
    """Solve ``g(z) = x`` per sample by damped Newton steps from ``z0`` (see the module docstring).

    Samples that do not converge from ``z0`` start again, up to ``restarts`` times, from
    ``z ~ N(0, I)`` on the layout's subspace (a fixed generator per restart, so results are
    reproducible): where ``g`` folds, Newton from ``f(x)`` can stall behind a fold although ``x``
    has a preimage elsewhere.

    Runs without recording gradients; :func:`implicit_preimage` attaches the gradients of ``z*``.

    Args:
        decoder: g, called as ``decoder(z, c, layout)``.
        x: data batch laid out as ``layout`` says (on the layout's subspace).
        z0: starting latents shaped like ``x``, usually ``f(x)``.
        layout: batch structure (dense full-dimensional if omitted).
        c: conditioning, one row per sample, or None.
        tol: RMS residual per degree of freedom at which a sample has converged (data units);
            :func:`default_tol` of ``x.dtype`` if None.
        max_iter: Newton steps at most (the Jacobian is evaluated ``max_iter + 1`` times at most).
        line_search: step halvings tried before a sample is declared stalled.
        restarts: fresh starting points tried for samples that did not converge.
        chunk_size: Jacobian columns per vmap chunk.

    Returns:
        :class:`DecoderPreimage`.

    Raises:
        ValueError: if ``x`` and ``z0`` differ in shape, or ``max_iter < 0``.
    """
    if x.shape != z0.shape:
        raise ValueError(
            f"x and z0 must have the same shape, got {tuple(x.shape)}, {tuple(z0.shape)}"
        )
    if max_iter < 0 or line_search < 1 or restarts < 0:
        raise ValueError(
            "need max_iter >= 0, line_search >= 1 and restarts >= 0, got "
            f"{max_iter}, {line_search}, {restarts}"
        )
    layout = DenseLayout() if layout is None else layout
    tol = default_tol(x.dtype) if tol is None else tol
    with torch.no_grad():
        out = _newton(decoder, x, z0, layout, c, tol, max_iter, line_search, chunk_size)
        for k in range(restarts):
            retry = ~out.converged
            if not bool(retry.any()):
                break
            rows, sub = layout.select(x, retry)
            gen = torch.Generator(device=x.device).manual_seed(k)
            start = sub.randn(x[rows], generator=gen)
            cs = None if c is None else c[retry]
            again = _newton(
                decoder, x[rows], start, sub, cs, tol, max_iter, line_search, chunk_size
            )
            won = torch.zeros_like(retry)
            won[retry] = again.converged
            won_rows = layout.select(x, won)[0]
            out.z[won_rows] = again.z[sub.select(x[rows], again.converged)[0]]
            for name in ("log_det", "residual", "converged"):
                getattr(out, name)[won] = getattr(again, name)[again.converged]
            out.iterations[retry] += again.iterations
        return out


def _residual_norm(layout: Layout, r: Tensor) -> Tensor:
    return layout.sum_per_sample(r**2).sqrt()


def _newton(decoder, x, z0, layout, c, tol, max_iter, line_search, chunk_size) -> DecoderPreimage:
    b = layout.num_samples(x)
    z = z0.detach().clone()
    r = decoder(z, c, layout) - x
    norm = _residual_norm(layout, r)
    norm_start = norm.clone()
    threshold = tol * layout.dims(x).sqrt()
    log_det = torch.full((b,), float("nan"), dtype=x.dtype, device=x.device)
    log_det_start = log_det.clone()
    iterations = torch.zeros(b, dtype=torch.long, device=x.device)
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    for it in range(max_iter + 1):
        if not bool(active.any()):
            break
        rows, sub = layout.select(x, active)
        za, xa, ra = z[rows], x[rows], r[rows]
        ca = None if c is None else c[active]
        jac = jacobian(decoder, za, sub, c=ca, chunk_size=chunk_size)
        log_det[active] = logabsdet(jac)
        if it == 0:
            log_det_start = log_det.clone()
        step = (norm[active] > threshold[active]) & (it < max_iter)  # (Ba,)
        if not bool(step.any()):
            break
        delta, ok = solve_ex(jac, sub.coordinates(ra))
        delta = torch.where(ok.unsqueeze(1), delta, torch.zeros_like(delta))
        direction = sub.from_coordinates(delta, za)
        pending = step & ok
        norm_a = norm[active]
        accepted = torch.zeros_like(pending)
        for k in range(line_search):
            if not bool(pending.any()):
                break
            a = 0.5**k
            z_try = za - a * direction
            r_try = decoder(z_try, ca, sub) - xa
            n_try = _residual_norm(sub, r_try)
            better = pending & (n_try < (1 - ARMIJO * a) * norm_a)
            take = sub.broadcast(better.to(za.dtype), za).bool()
            za = torch.where(take, z_try, za)
            ra = torch.where(take, r_try, ra)
            norm_a = torch.where(better, n_try, norm_a)
            accepted |= better
            pending &= ~better
        z[rows], r[rows], norm[active] = za, ra, norm_a
        iterations[active] += accepted.long()
        still = active.clone()
        still[active] = accepted  # the others converged, stalled or hit a singular Jacobian
        active = still
    return DecoderPreimage(
        z, log_det, log_det_start, norm, norm_start, norm <= threshold, iterations
    )


def implicit_preimage(
    decoder: FlowNetwork,
    x: Tensor,
    z_star: Tensor,
    layout: Layout | None = None,
    *,
    c: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """``z*`` with the gradients of the implicit function ``g(z*(x, θ), θ) = x``.

    Returns a tensor equal to ``z_star`` whose derivatives are ``dz*/dx = J_g^{-1}`` and
    ``dz*/dθ = -J_g^{-1} ∂g/∂θ`` (implicit function theorem), through one decoder call and one
    Jacobian: ``z* - (h - stop_grad(h))`` with ``h = J_g(z*)^{-1} (g(z*) - x)``, ``J_g`` held
    constant. Exact at a converged ``z*`` (where ``J_g(z*)`` is singular, ``h`` is zero and no
    gradient flows); call it with gradients enabled.
    """
    layout = DenseLayout() if layout is None else layout
    z_star = z_star.detach()
    with torch.no_grad():
        jac = jacobian(decoder, z_star, layout, c=c, chunk_size=chunk_size)
    r = decoder(z_star, c, layout) - x
    step, ok = solve_ex(jac, layout.coordinates(r))  # singular only where z* is no preimage
    h = layout.from_coordinates(torch.where(ok.unsqueeze(1), step, torch.zeros_like(step)), z_star)
    return z_star - (h - h.detach())
