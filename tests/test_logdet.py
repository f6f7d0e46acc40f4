"""Exact log-det against brute-force slogdet and closed forms, dense, subspace and graphs."""

import math

import pytest
import torch

from molfff.fff import (
    DenseLayout,
    GraphLayout,
    ParticleLayout,
    helmert_basis,
    jacobian,
    log_abs_det_jacobian,
)
from tests.invertible import AffineCoupling, brute_log_abs_det

pytestmark = pytest.mark.usefixtures("float64")


def test_dense_matches_brute_force_slogdet():
    torch.manual_seed(0)
    f = AffineCoupling(5)
    x = torch.randn(9, 5)
    got = log_abs_det_jacobian(f, x)
    torch.testing.assert_close(got, brute_log_abs_det(f, x).detach())


def test_linear_closed_form_and_loop_agree():
    torch.manual_seed(1)
    a = torch.randn(4, 4)
    x = torch.randn(3, 4)
    want = torch.linalg.slogdet(a).logabsdet.expand(3)
    fast = log_abs_det_jacobian(lambda t, c, layout: t @ a.T, x)
    loop = log_abs_det_jacobian(lambda t, c, layout: t @ a.T, x, vectorize=False)
    chunked = log_abs_det_jacobian(lambda t, c, layout: t @ a.T, x, chunk_size=3)
    for got in (fast, loop, chunked):
        torch.testing.assert_close(got, want)


def test_elementwise_closed_form():
    """f(x) = sinh(x): log|det J| = sum log cosh(x)."""
    x = torch.randn(6, 3)
    torch.testing.assert_close(
        log_abs_det_jacobian(lambda t, c, layout: torch.sinh(t), x), torch.log(torch.cosh(x)).sum(1)
    )


def test_helmert_basis_is_orthonormal_and_mean_free():
    h = helmert_basis(6)
    torch.testing.assert_close(h.T @ h, torch.eye(5))
    torch.testing.assert_close(h.sum(0), torch.zeros(5))


def test_particle_subspace_closed_form():
    """x -> (M ⊗ I_d) x with M = Q A Q^T + 11^T/n keeps zero CoM; det on the subspace = det A."""
    torch.manual_seed(2)
    n, d = 4, 3
    layout = ParticleLayout(n, d)
    q = helmert_basis(n)
    a = torch.randn(n - 1, n - 1)
    m = q @ a @ q.T + torch.ones(n, n) / n
    big = torch.kron(m, torch.eye(d))
    x = layout.project(torch.randn(5, n * d))
    got = log_abs_det_jacobian(lambda t, c, layout: t @ big.T, x, layout)
    want = d * torch.linalg.slogdet(a).logabsdet
    torch.testing.assert_close(got, want.expand(5))


def test_custom_dense_basis_restricts_the_map():
    torch.manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(5, 2))
    a = torch.randn(5, 5)
    x = torch.randn(4, 5)
    got = log_abs_det_jacobian(lambda t, c, layout: t @ a.T, x, DenseLayout(q))
    torch.testing.assert_close(got, torch.linalg.slogdet(q.T @ a @ q).logabsdet.expand(4))


def _graph_map(w, v, u, batch, num_graphs):
    """A nonlinear map on node rows with interactions inside each graph only."""

    def fn(t, c=None, layout=None):
        pooled = torch.zeros(num_graphs, t.shape[1], dtype=t.dtype).index_add(
            0, batch, torch.tanh(t @ v)
        )
        return t + torch.tanh(t @ w) + pooled[batch] @ u

    return fn


def test_graph_layout_matches_per_graph_brute_force():
    """Graphs of 2, 4 and 3 nodes with 3 position + 2 feature columns: each graph's log-det on
    its (n-1)·3 + 2n dimensional subspace equals slogdet(Q^T J Q) from its own full Jacobian."""
    torch.manual_seed(4)
    sizes = [2, 4, 3]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    w, v, u = (0.5 * torch.randn(5, 5) for _ in range(3))
    fn = _graph_map(w, v, u, batch, 3)
    x = torch.randn(len(batch), 5)
    layout = GraphLayout(batch, pos_dim=3)
    got = log_abs_det_jacobian(fn, x, layout)

    want, start = [], 0
    for n in sizes:
        xg = x[start : start + n]
        bg = torch.zeros(n, dtype=torch.long)
        fg = _graph_map(w, v, u, bg, 1)
        jac = torch.autograd.functional.jacobian(
            lambda t, fg=fg, n=n: fg(t.reshape(n, 5)).reshape(-1), xg.reshape(-1)
        )
        pos_basis = torch.kron(helmert_basis(n), torch.eye(3))  # (3n, 3(n-1))
        basis = torch.zeros(5 * n, 3 * (n - 1) + 2 * n)
        rows = torch.arange(5 * n).reshape(n, 5)
        basis[rows[:, :3].reshape(-1), : 3 * (n - 1)] = pos_basis
        basis[rows[:, 3:].reshape(-1), 3 * (n - 1) :] = torch.eye(2 * n)
        want.append(torch.linalg.slogdet(basis.T @ jac @ basis).logabsdet)
        start += n
    torch.testing.assert_close(got, torch.stack(want))
    torch.testing.assert_close(layout.dims(x), torch.tensor([7.0, 17.0, 12.0]))


def test_graph_jacobian_pads_with_identity():
    batch = torch.tensor([0, 0, 1, 1, 1])
    x = torch.randn(5, 3)
    jac = jacobian(lambda t, c, layout: 2 * t, x, GraphLayout(batch, pos_dim=3))
    # graph 0 has 3 dof, graph 1 has 6: padded rows of graph 0 are identity
    assert jac.shape == (2, 6, 6)
    torch.testing.assert_close(
        torch.linalg.slogdet(jac).logabsdet, torch.tensor([3, 6]) * math.log(2.0)
    )
