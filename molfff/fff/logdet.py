"""Exact Jacobians and log-determinants of a network at a batch of points.

For the evaluation NLL of a free-form flow (paper eq. 4 with the decoder):

    -log p(x) = -log p_Z(z) + log|det J_g(z)|,      z = f(x),

``J_g`` is computed exactly, column by column as forward-mode JVPs along an orthonormal basis of
the data subspace, all columns at once with ``torch.func.vmap``. Samples of a batch do not
interact, so one JVP along "basis vector j of every sample" yields column j of every sample's
Jacobian. On a subspace with basis Q (e.g. zero centre of mass) the determinant is that of the
restricted map ``Q^T J Q``; for a map that keeps the subspace this is the density change on it.

Gradient mode is the caller's: under ``torch.no_grad()`` nothing is recorded (evaluation); with
gradients enabled the log-det is differentiable in the network's parameters and in ``x``
(``torch.func.jvp`` composes with autograd), at the memory cost of one graph per column.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molfff.fff.layout import DenseLayout, Layout
from molfff.fff.linalg import logabsdet
from molfff.fff.network import FlowNetwork


def jacobian(
    net: FlowNetwork,
    x: Tensor,
    layout: Layout | None = None,
    *,
    c: Tensor | None = None,
    chunk_size: int | None = None,
    vectorize: bool = True,
) -> Tensor:
    """Per-sample Jacobian of ``net(·, c, layout)`` on the layout's subspace, ``(B, M, M)``.

    Entry ``[b, i, j] = q_i^T J(x_b) q_j`` with ``q`` the layout's orthonormal basis. Rows and
    columns past a sample's own dimension (graphs of different sizes) are filled with the
    identity so that they contribute nothing to determinants.

    Args:
        net: batched map called as ``net(x, c, layout)`` (:class:`~molfff.fff.FlowNetwork`),
            output shaped like ``x``, samples independent.
        x: batch laid out as ``layout`` describes.
        layout: dense full-dimensional if omitted; passed to every call of ``net``.
        c: conditioning passed to ``net`` (one row per sample) or None.
        chunk_size: columns per vmap chunk, to bound memory (None: all at once).
        vectorize: False computes one JVP per column in a Python loop (reference / benchmark).

    Example:
        >>> import torch
        >>> a = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
        >>> jacobian(lambda x, c, layout: x @ a.T, torch.zeros(4, 2)).shape
        torch.Size([4, 2, 2])
    """
    layout = DenseLayout() if layout is None else layout
    basis = layout.tangent_basis(x)  # (M, *x.shape)

    def column(t: Tensor) -> Tensor:
        _, jt = torch.func.jvp(lambda u: net(u, c, layout), (x,), (t,))
        return layout.coordinates(jt)  # (B, M)

    if vectorize:
        cols = torch.func.vmap(column, chunk_size=chunk_size)(basis)  # (M, B, M)
    else:
        cols = torch.stack([column(t) for t in basis])
    jac = cols.permute(1, 2, 0)  # (B, M_out, M_in)
    valid = layout.valid(x)  # (B, M)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device).expand_as(jac)
    return torch.where(pair, jac, eye)


def log_abs_det_jacobian(
    net: FlowNetwork,
    x: Tensor,
    layout: Layout | None = None,
    *,
    c: Tensor | None = None,
    chunk_size: int | None = None,
    vectorize: bool = True,
) -> Tensor:
    """``log|det J(x)|`` of ``net(·, c, layout)`` per sample on the layout's subspace, ``(B,)``.

    See :func:`jacobian` for the arguments; differentiable when gradients are enabled.

    Example:
        ``sinh`` acts elementwise, so ``log|det J| = sum_i log cosh(x_i)``:

        >>> import torch
        >>> x = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
        >>> got = log_abs_det_jacobian(lambda x, c, layout: torch.sinh(x), x)
        >>> torch.allclose(got, torch.cosh(x).log().sum(1))
        True
    """
    jac = jacobian(net, x, layout, c=c, chunk_size=chunk_size, vectorize=vectorize)
    return logabsdet(jac)  # safe batched LU: see molfff.fff.linalg
