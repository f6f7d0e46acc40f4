"""One standardisation for every user: inverse, log-det, training statistics."""

import pytest
import torch

from molfff.fff.standardize import Standardize


def test_inverse_and_log_det_match_the_diagonal_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [0.1, 2.0, 5.0, 1.0], dtype=torch.float64
    ) + torch.tensor([3.0, -1.0, 0.0, 7.0], dtype=torch.float64)
    s = Standardize.from_data(x)
    z = s(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(s.inverse(z), x, atol=1e-12, rtol=0)
    # log |det d inverse(z)/dz| against slogdet of the Jacobian of the map itself
    jac = torch.autograd.functional.jacobian(s.inverse, z[0])
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign == 1
    torch.testing.assert_close(s.log_abs_det, logabsdet, atol=1e-12, rtol=0)
    fwd = torch.autograd.functional.jacobian(s, x[0])
    torch.testing.assert_close(torch.linalg.slogdet(fwd)[1], -s.log_abs_det, atol=1e-12, rtol=0)


def test_constant_dimensions_are_centred_not_scaled():
    x = torch.cat([torch.randn(50, 2, dtype=torch.float64), torch.full((50, 1), 4.0)], dim=1)
    s = Standardize.from_data(x)
    assert s.scale[2] == 1 and s.shift[2] == 4
    assert torch.equal(s(x)[:, 2], torch.zeros(50, dtype=torch.float64))


def test_population_std_and_identity_start():
    x = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    assert Standardize.from_data(x, correction=0).scale.item() == pytest.approx(1.0)
    assert Standardize.from_data(x).scale.item() == pytest.approx(2**0.5)
    s = Standardize(3)
    v = torch.randn(5, 3)
    assert torch.equal(s(v), v) and s.log_abs_det == 0
    assert set(s.state_dict()) == {"shift", "scale"}  # saved with the module that holds it


@pytest.mark.parametrize(
    "x", [torch.zeros(1, 2), torch.zeros(3), torch.tensor([[0.0, float("nan")], [1.0, 2.0]])]
)
def test_bad_data_are_refused(x):
    with pytest.raises(ValueError):
        Standardize.from_data(x)
