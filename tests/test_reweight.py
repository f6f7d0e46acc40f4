"""Importance weights, Kish ESS and reweighted expectations against closed forms."""

import math

import pytest
import torch

from molfff.boltzmann.reweight import (
    kish_ess,
    log_importance_weights,
    mean_interatomic_distance,
    resolve_observable,
    reweighted_mean,
)
from molfff.errors import UserError


def _gaussian_case(n, s, seed=0):
    """Proposal q = N(0, 1), target p ∝ exp(-x^2 / (2 s^2)) in 1-D."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    log_q = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)
    u = 0.5 * x**2 / s**2  # unnormalised: the normaliser cancels in self-normalised weights
    return x, log_importance_weights(log_q, u)


def test_ess_matches_closed_form():
    """ESS fraction -> 1 / E_q[w^2] with w = p/q: for p = N(0, s^2), q = N(0, 1),
    E_q[w^2] = 1 / (s sqrt(2 - s^2))."""
    s = 0.8
    _, log_w = _gaussian_case(400_000, s)
    want = s * math.sqrt(2 - s**2)
    assert kish_ess(log_w) == pytest.approx(want, abs=0.01)


def test_reweighted_mean_and_error_bar():
    """E_p[x^2] = s^2 under the target; the bootstrap error covers the deviation."""
    s = 0.7
    x, log_w = _gaussian_case(20_000, s, seed=1)
    est = reweighted_mean(x**2, log_w, generator=torch.Generator().manual_seed(0))
    assert abs(est.mean - s**2) < 4 * est.stderr
    assert 0 < est.stderr < 0.02
    raw = reweighted_mean(x**2)
    assert abs(raw.mean - 1.0) < 4 * raw.stderr  # unweighted: the proposal's own moment


def test_infinite_energies_get_zero_weight():
    log_w = log_importance_weights(torch.zeros(3), torch.tensor([0.0, math.inf, 1.0]))
    assert log_w[1] == -math.inf
    est = reweighted_mean(torch.tensor([1.0, float("nan"), 1.0]), log_w)
    assert est.mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all importance weights are zero"):
        kish_ess(torch.full((3,), -math.inf))


def test_mean_distance_of_a_square():
    square = torch.tensor([[0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    assert mean_interatomic_distance(square, 4, 2).item() == pytest.approx((4 + 2 * 2**0.5) / 6)


def test_observables_resolve():
    assert resolve_observable("energy")(torch.zeros(2, 1), lambda x: x.sum(1) + 3).tolist() == [
        3,
        3,
    ]
    assert resolve_observable("math:fabs") is math.fabs
    with pytest.raises(UserError, match="unknown observable"):
        resolve_observable("entropy")
    with pytest.raises(UserError, match="cannot be imported"):
        resolve_observable("nonexistent_pkg:f")


def test_samples_off_the_energy_axis_are_counted_with_their_weight():
    from molfff.boltzmann.report import outside_window

    u = torch.tensor([-1.0, 0.0, 2.0, 5.0, float("inf"), float("nan")], dtype=torch.float64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15, 0.0], dtype=torch.float64)
    count, mass = outside_window(u, w, lo=-1.0, hi=2.0)  # the window's ends are inside
    assert count == 3 and mass == pytest.approx(0.4)
    assert outside_window(u[:3], w[:3], -1.0, 2.0) == (0, 0.0)
