"""scripts/sbi_gaussian_baseline.py: the ridge-regression Gaussian posterior in closed form."""

import math

import pytest
import torch

from tests.helpers import load_script

baseline = load_script("sbi_gaussian_baseline")


@pytest.mark.usefixtures("float64")
def test_recovers_a_linear_gaussian_posterior_and_its_density():
    """theta = A x + b + L eps: the fit's log q(theta | x) approaches the true conditional
    density (in original units, so the standardisation's log-det must be right), and its
    samples have the right mean and covariance."""
    torch.manual_seed(0)
    a = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.0, 4.0]])
    b = torch.tensor([1.0, -3.0])
    chol = torch.tensor([[0.5, 0.0], [0.2, 0.1]])
    x = 3.0 * torch.randn(20_000, 3) + 1.0
    theta = x @ a.T + b + torch.randn(20_000, 2) @ chol.T
    model = baseline.GaussianPosterior(theta, x, ridge=0.0)
    truth = torch.distributions.MultivariateNormal(x[:500] @ a.T + b, scale_tril=chol)
    gap = model.log_prob(theta[:500], x[:500]) - truth.log_prob(theta[:500])
    assert gap.abs().mean() < 0.02  # estimation noise of 20,000 pairs; log(scale) is ~4 nats
    draws = model.sample(50_000, x[:1], generator=torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(draws.mean(0), (x[0] @ a.T + b), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), chol @ chol.T, atol=0.005, rtol=0)


def test_ridge_shrinks_towards_the_prior():
    torch.manual_seed(1)
    x = torch.randn(200, 4)
    theta = x[:, :2] + 0.1 * torch.randn(200, 2)
    tight = baseline.GaussianPosterior(theta, x, ridge=0.0)
    loose = baseline.GaussianPosterior(theta, x, ridge=1e6)
    nll = [-(m.log_prob(theta, x).mean().item()) for m in (tight, loose)]
    assert nll[0] < nll[1] - 1.0
    assert math.isfinite(nll[1])
