"""Latent densities: normalisation on the zero-CoM subspace, sampling statistics."""

import math

import pytest
import torch

from molfff.fff import CenteredNormal, DenseLayout, GraphLayout, ParticleLayout, StandardNormal

pytestmark = pytest.mark.usefixtures("float64")


def test_standard_normal_closed_form():
    z = torch.randn(5, 3)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(StandardNormal().log_prob(z, DenseLayout()), want)


@pytest.mark.parametrize(("n", "d"), [(2, 1), (3, 1), (2, 2)])
def test_centered_normal_integrates_to_one_on_subspace(n, d):
    """Integrate exp(log p) over the (n-1)·d subspace by quadrature in orthonormal coordinates."""
    latent = CenteredNormal(n, d)
    q = latent.layout.basis  # (n·d, m)
    m = q.shape[1]
    grid = torch.linspace(-8, 8, 161)
    step = grid[1] - grid[0]
    coords = torch.cartesian_prod(*([grid] * m)).reshape(-1, m)
    z = coords @ q.T
    total = latent.log_prob(z).exp().sum() * step**m
    torch.testing.assert_close(total, torch.tensor(1.0), atol=1e-6, rtol=0)
    # the full-space constant would be off by (d/2) log 2π per sample
    wrong = (latent.log_prob(z) - 0.5 * d * math.log(2 * math.pi)).exp().sum() * step**m
    assert abs(wrong - 1) > 0.5


def test_centered_normal_rejects_off_subspace():
    with pytest.raises(ValueError, match="centre of mass"):
        CenteredNormal(3, 2).log_prob(torch.ones(1, 6))


def test_centered_samples_have_projector_covariance():
    g = torch.Generator().manual_seed(0)
    latent = CenteredNormal(3, 2)
    z = latent.sample(50000, generator=g).double()
    torch.testing.assert_close(
        z.reshape(-1, 3, 2).mean(1), torch.zeros(50000, 2), atol=1e-6, rtol=0
    )
    cov = z.T @ z / z.shape[0]
    proj = latent.layout.basis @ latent.layout.basis.T
    torch.testing.assert_close(cov, proj, atol=0.03, rtol=0)


def test_graph_and_particle_layouts_agree():
    """The same molecules as (B, n·d) rows and as a graph batch give the same log-density."""
    z = ParticleLayout(4, 3).project(torch.randn(2, 12))
    batch = torch.tensor([0] * 4 + [1] * 4)
    graph = GraphLayout(batch, pos_dim=3)
    a = StandardNormal().log_prob(z, ParticleLayout(4, 3))
    b = StandardNormal().log_prob(z.reshape(8, 3), graph)
    torch.testing.assert_close(a, b)
