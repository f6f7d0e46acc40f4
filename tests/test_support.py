"""Unconstrain: bounded support to the reals, with a closed-form log-det (float64 identities)."""

import math

import pytest
import torch

from molfff.fff.support import Unconstrain

LOWER = torch.tensor([-1.0, 0.0, -math.inf, -math.inf, 2.0], dtype=torch.float64)
UPPER = torch.tensor([1.0, math.inf, 3.0, math.inf, 2.5], dtype=torch.float64)


def _mixed() -> Unconstrain:
    return Unconstrain(5, eps=1e-12).double().set_bounds(LOWER, UPPER)


def _inside(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 5, generator=g, dtype=torch.float64) * 0.98 + 0.01
    return torch.stack(
        [2 * u[:, 0] - 1, 5 * u[:, 1], 3 - 5 * u[:, 2], 10 * u[:, 3] - 5, 2 + 0.5 * u[:, 4]], 1
    )


def test_log_abs_det_is_the_jacobians():
    t = _mixed()
    for x in _inside(6):
        jac = torch.autograd.functional.jacobian(t, x)
        assert torch.allclose(jac, torch.diag(torch.diagonal(jac)))  # acts per dimension
        torch.testing.assert_close(t.log_abs_det(x), torch.linalg.slogdet(jac).logabsdet)


def test_inverse_round_trips_and_stays_inside():
    t = _mixed()
    x = _inside(100)
    torch.testing.assert_close(t.inverse(t(x)), x)
    u = 3 * torch.randn(1000, 5, dtype=torch.float64)
    torch.testing.assert_close(t(t.inverse(u)), u)
    assert t.contains(t.inverse(u)).all()
    torch.testing.assert_close(t(x)[:, 3], x[:, 3])  # unbounded: the identity


@pytest.mark.parametrize(("lower", "upper"), [(-1.0, 1.0), (0.5, math.inf), (-math.inf, 3.0)])
def test_density_integrates_to_one(lower, upper):
    """p(x) = N(T(x); 0, 1) |T'(x)| is a density on (lower, upper)."""
    t = Unconstrain(1, eps=1e-300).double().set_bounds(torch.tensor([lower]), torch.tensor([upper]))
    x = t.inverse(torch.linspace(-40, 40, 400_001, dtype=torch.float64)[:, None])
    x = x[t.contains(x)]  # points the float64 sigmoid / exp did not round onto a bound
    log_p = -0.5 * t(x)[:, 0] ** 2 - 0.5 * math.log(2 * math.pi) + t.log_abs_det(x)
    total = torch.trapezoid(log_p.exp(), x[:, 0])  # over x; negative where T decreases
    assert abs(abs(float(total)) - 1) < 1e-6


def test_identity_by_default_and_for_old_states():
    t = Unconstrain(3)
    x = torch.randn(4, 3)
    assert t.is_identity and torch.equal(t(x), x) and torch.equal(t.inverse(x), x)
    assert torch.equal(t.log_abs_det(x), torch.zeros(4))
    bounded = Unconstrain(3).set_bounds(torch.zeros(3), torch.ones(3))
    fresh = Unconstrain(3)
    fresh.load_state_dict(bounded.state_dict())
    assert torch.equal(fresh.upper, torch.ones(3)) and not fresh.is_identity
    fresh.load_state_dict({})  # a state saved before the buffers existed loads as the identity
    assert fresh.is_identity


def test_bad_bounds_and_clamping():
    t = Unconstrain(2)
    with pytest.raises(ValueError, match="lower < upper"):
        t.set_bounds(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        t.set_bounds(torch.tensor([math.nan, 0.0]), torch.ones(2))
    t.set_bounds(torch.zeros(2), torch.ones(2))
    edge = torch.tensor([[0.0, 1.0], [-5.0, 7.0]])
    assert torch.isfinite(t(edge)).all() and torch.isfinite(t.log_abs_det(edge)).all()
    assert not t.contains(edge).any()


def test_edges_stay_inside_and_exact():
    t = Unconstrain(3).set_bounds(
        torch.tensor([-1.0, 0.0, -math.inf]), torch.tensor([1, math.inf, 5])
    )
    x = t.inverse(torch.tensor([[40.0, 100.0, 100.0], [-40.0, -200.0, -200.0]]))
    assert t.contains(x).all() and not t.outside(x).any()  # not on a bound, not infinite
    near = torch.tensor([[0.0, 1e-9, 5 - 1e-3]])  # one-sided: no clamp this far from the bound
    expected = torch.tensor([0.0, math.log(1e-9), math.log(1e-3)])
    torch.testing.assert_close(t(near)[0], expected, rtol=1e-4, atol=1e-5)
    log_det = math.log(2) - math.log(1e-9) - math.log(1e-3)  # -log(2 · 0.5 · 0.5) at 0
    torch.testing.assert_close(t.log_abs_det(near), torch.tensor([log_det]), rtol=1e-4, atol=0)
    nan_row = torch.tensor([[math.nan, 1.0, 0.0]])
    assert not t.outside(nan_row).any()  # NaN is not "outside": callers see the NaN
    with pytest.raises(TypeError, match="floating-point"):
        t(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"scalar or \(3,\)"):
        t.set_bounds(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="overflows"):
        t.set_bounds(-3e38, 3e38)
