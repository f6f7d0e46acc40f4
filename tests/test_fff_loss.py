"""The surrogate's gradient against the exact gradient of log|det J_f| (paper eq. 7-8)."""

import math

import pytest
import torch

from molfff.fff import DenseLayout, ParticleLayout, fff_loss, hutchinson_vectors
from tests.invertible import AffineCoupling, brute_log_abs_det


def _grads(scalar, params):
    return torch.autograd.grad(scalar, params)


def _surrogate_grad(f, x, k, decoder_jvp="forward"):
    terms = fff_loss(x, f, f.inverse, beta=0.0, hutchinson_samples=k, decoder_jvp=decoder_jvp)
    return _grads(terms.trace_surrogate.sum(), list(f.parameters()))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("decoder_jvp", ["forward", "reverse"])
def test_full_frame_surrogate_gradient_is_exact(decoder_jvp):
    """K = D orthonormal vectors scaled to sqrt(D) make the trace estimate exact, so the
    gradient of the surrogate must equal the gradient of sum log|det J_f| to round-off."""
    torch.manual_seed(0)
    dim = 4
    f = AffineCoupling(dim)
    x = torch.randn(6, dim)
    got = _surrogate_grad(f, x, k=dim, decoder_jvp=decoder_jvp)
    want = _grads(brute_log_abs_det(f, x, create_graph=True).sum(), list(f.parameters()))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.usefixtures("float64")
def test_single_vector_surrogate_gradient_is_unbiased():
    """Averaged over many standard normal v, the K=1 gradient matches the exact one."""
    torch.manual_seed(1)
    dim = 3
    f = AffineCoupling(dim)
    x = torch.randn(4, dim).repeat(4000, 1)  # many v for the same 4 points, in one batch
    got = _surrogate_grad(f, x, k=1)
    want = _grads(brute_log_abs_det(f, x[:4], create_graph=True).sum() * 4000, list(f.parameters()))
    flat_got = torch.cat([g.flatten() for g in got])
    flat_want = torch.cat([w.flatten() for w in want])
    rel = (flat_got - flat_want).norm() / flat_want.norm()
    assert rel < 0.05, rel
    # a wrong estimator (no stop-gradient on J_g v) gives a visibly different gradient
    assert (flat_got - 2 * flat_want).norm() / flat_want.norm() > 0.5


@pytest.mark.usefixtures("float64")
def test_subspace_surrogate_gradient_on_zero_com():
    """Particles: with v projected on the zero-CoM subspace, the exact (K=m) surrogate gives
    the gradient of log|det A| of the map restricted to the subspace."""
    torch.manual_seed(2)
    layout = ParticleLayout(n_particles=3, spatial_dim=2)
    q = layout.basis  # (6, 4)
    a = torch.nn.Parameter(torch.eye(4) + 0.2 * torch.randn(4, 4))

    def f(x, c=None, layout=None):
        return x @ q @ a.T @ q.T + layout_perp(x)

    def g(z, c=None, layout=None):
        return torch.linalg.solve(a, (z @ q).T).T @ q.T + layout_perp(z)

    def layout_perp(t):
        return t - t @ q @ q.T

    x = layout.project(torch.randn(5, 6))
    terms = fff_loss(x, f, g, beta=0.0, layout=layout, hutchinson_samples=4)
    (got,) = torch.autograd.grad(terms.trace_surrogate.sum(), [a])
    want = 5 * torch.linalg.inv(a).T  # d/dA log|det A| = A^{-T}, for each of the 5 samples
    torch.testing.assert_close(got, want.detach())


@pytest.mark.usefixtures("float64")
def test_loss_terms_at_exact_inverse():
    """Reconstruction vanishes, log p_Z matches the closed form, trace ≈ D with K = D."""
    torch.manual_seed(3)
    f = AffineCoupling(4)
    x = torch.randn(7, 4)
    t = fff_loss(x, f, f.inverse, beta=5.0, hutchinson_samples=4)
    torch.testing.assert_close(t.reconstruction, torch.zeros(7), atol=1e-20, rtol=0)
    z = f(x)
    want_logp = -0.5 * (z**2).sum(1) - 2 * math.log(2 * math.pi)
    torch.testing.assert_close(t.log_prob_z, want_logp.detach())
    torch.testing.assert_close(t.trace_surrogate, torch.full((7,), 4.0))
    torch.testing.assert_close(t.loss, t.nll_surrogate)


@pytest.mark.usefixtures("float64")
def test_hutchinson_frame_is_orthonormal_and_scaled():
    layout = ParticleLayout(4, 3)
    like = torch.zeros(5, 12)
    vs = hutchinson_vectors(like, layout, k=3)
    m = 9
    gram = torch.stack([torch.stack([layout.dot(a, b) for b in vs]) for a in vs])  # (K, K, B)
    torch.testing.assert_close(gram.permute(2, 0, 1), m * torch.eye(3).expand(5, 3, 3))
    for v in vs:
        torch.testing.assert_close(layout.project(v), v)


def test_hutchinson_covariance_is_identity():
    """E[v v^T] = I for the scaled orthonormal frame (K = 2 of D = 3)."""
    g = torch.Generator().manual_seed(0)
    vs = hutchinson_vectors(torch.zeros(20000, 3), DenseLayout(), k=2, generator=g)
    cov = sum(v.T @ v for v in vs) / (2 * 20000)
    torch.testing.assert_close(cov, torch.eye(3), atol=0.05, rtol=0)


def test_bad_arguments_are_named():
    f = AffineCoupling(2)
    with pytest.raises(ValueError, match="beta"):
        fff_loss(torch.zeros(2, 2), f, f.inverse, beta=-1.0)
    with pytest.raises(ValueError, match="Hutchinson"):
        fff_loss(torch.zeros(2, 2), f, f.inverse, beta=1.0, hutchinson_samples=3)
    with pytest.raises(ValueError, match="preserve shape"):
        fff_loss(torch.zeros(2, 2), lambda x, c, layout: x[:, :1], f.inverse, beta=1.0)


@pytest.mark.usefixtures("float64")
def test_gradient_reaches_a_differentiable_input():
    """With x = h(phi) from an upstream map, the K = D surrogate's gradient w.r.t. phi equals the
    exact gradient of log|det J_f(x)| through x (as a dequantizer needs)."""
    torch.manual_seed(5)
    f = AffineCoupling(3)
    phi = torch.randn(4, 3, requires_grad=True)
    x = torch.sinh(phi)
    terms = fff_loss(x, f, f.inverse, beta=0.0, hutchinson_samples=3)
    (got,) = torch.autograd.grad(terms.trace_surrogate.sum(), [phi])
    (want,) = torch.autograd.grad(
        brute_log_abs_det(f, torch.sinh(phi), create_graph=True).sum(), [phi]
    )
    torch.testing.assert_close(got, want)


def test_hutchinson_on_the_sphere_has_norm_sqrt_m_and_identity_second_moment():
    layout = ParticleLayout(3, 2)  # m = 4 degrees of freedom in 6 coordinates
    like = torch.zeros(20000, 6, dtype=torch.float64)
    (v,) = hutchinson_vectors(like, layout, 1, torch.Generator().manual_seed(0), sphere=True)
    torch.testing.assert_close(v.norm(dim=1), torch.full((20000,), 2.0, dtype=torch.float64))
    assert float(layout.project(v).sub(v).abs().max()) < 1e-12  # on the subspace
    q = layout.basis.to(torch.float64)
    second = (v @ q).T @ (v @ q) / v.shape[0]  # E[v v^T] in subspace coordinates
    torch.testing.assert_close(second, torch.eye(4, dtype=torch.float64), atol=0.03, rtol=0)
