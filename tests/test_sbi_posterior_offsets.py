"""scripts/sbi_posterior_offsets.py: a density's mean on a grid, in reference sds."""

import pytest
import torch

from tests.helpers import load_script

offsets = load_script("sbi_posterior_offsets")


@pytest.mark.usefixtures("float64")
def test_grid_mean_of_a_gaussian_density_is_its_mean():
    """A correlated Gaussian 3 and -2 reference sds off the grid's centre: the normalised
    grid density has that mean, and rows with -inf (no preimage) are left out."""
    ref = torch.randn(20_000, 2) * torch.tensor([0.01, 0.3]) + torch.tensor([0.5, 2.0])
    centre, sd = ref.mean(0), ref.std(0)
    true_mean = centre + torch.tensor([3.0, -2.0]) * sd
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]]) * torch.outer(sd, sd)
    theta = offsets.grid(centre, sd, half_width=12.0, points=161)
    assert theta.shape == (161**2, 2)
    log_prob = torch.distributions.MultivariateNormal(true_mean, cov).log_prob(theta)
    log_prob[::7] = -torch.inf
    log_prob[3::7] = torch.nan  # a failed preimage may give nan: left out too
    mean, share = offsets.density_mean(theta, log_prob)
    assert share == pytest.approx(1 - 2 / 7, abs=1e-3)
    torch.testing.assert_close(
        offsets.in_reference_sds(mean, ref), torch.tensor([3.0, -2.0]), atol=1e-3, rtol=0
    )
    # a density integrates to one; the rows left out take their share of the mass with them
    full = torch.distributions.MultivariateNormal(true_mean, cov).log_prob(theta)
    assert offsets.grid_mass(full, sd, 12.0, 161) == pytest.approx(1.0, abs=1e-4)
    assert offsets.grid_mass(full + 2.0, sd, 12.0, 161) == pytest.approx(torch.e**2, rel=1e-4)
    assert offsets.grid_mass(log_prob, sd, 12.0, 161) == pytest.approx(5 / 7, abs=2e-3)


def test_grid_refuses_three_parameters():
    with pytest.raises(ValueError, match="at most 2 parameters"):
        offsets.grid(torch.zeros(3), torch.ones(3), 12.0, 11)
