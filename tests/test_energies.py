"""Particle energies against closed forms, symmetries, finite differences and reference data."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from molfff.boltzmann import (
    LennardJones,
    MultiDoubleWell,
    UnknownEnergyError,
    configurational_temperature,
    get_energy,
)
from molfff.boltzmann.diagnostics import gradient_and_laplacian
from molfff.errors import UserError

pytestmark = pytest.mark.usefixtures("float64")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "boltzmann"
NAMES = ("DW4", "LJ13", "LJ55")


def pair(distance: float, d: int) -> torch.Tensor:
    """Two particles ``distance`` apart along the first axis: ``(1, 2·d)``."""
    x = torch.zeros(1, 2 * d)
    x[0, d] = distance
    return x


def random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    """A random element of O(d), reflections included."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g))
    q = q * torch.sign(torch.diagonal(r))
    if torch.rand((), generator=g) < 0.5:
        q[:, 0] = -q[:, 0]
    return q


def spread_configs(energy, b: int, g: torch.Generator) -> torch.Tensor:
    """``(b, n·d)`` configurations without overlapping particles (cubic lattice plus noise)."""
    n, d = energy.n_particles, energy.spatial_dim
    side = math.ceil(n ** (1 / d))
    grid = torch.stack(
        torch.meshgrid(*[torch.arange(side, dtype=torch.float64)] * d, indexing="ij"), -1
    ).reshape(-1, d)[:n]
    spacing = 4.0 if energy.name == "DW4" else 1.1
    x = spacing * grid + 0.1 * torch.randn(b, n, d, generator=g)
    return x.reshape(b, n * d)


def test_lj_pair_at_rm_is_minus_eps():
    lj = LennardJones(2, 3, eps=1.7, rm=1.3, oscillator_scale=0.0, convention="unique")
    torch.testing.assert_close(lj(pair(1.3, 3)), torch.tensor([-1.7]))
    ordered = LennardJones(2, 3, eps=1.7, rm=1.3, oscillator_scale=0.0, convention="ordered")
    torch.testing.assert_close(ordered(pair(1.3, 3)), torch.tensor([-3.4]))
    # zero force at the minimum, repulsive inside, zero crossing at rm / 2^(1/6)
    torch.testing.assert_close(lj.grad(pair(1.3, 3)), torch.zeros(1, 6))
    torch.testing.assert_close(lj(pair(1.3 / 2 ** (1 / 6), 3)), torch.tensor([0.0]))


def test_lj_harmonic_term_and_kT():
    """Two particles at distance r: harmonic term (k/2)·2·(r/2)^2 = k r^2 / 4; u = U / kT."""
    lj = LennardJones(2, 3, oscillator_scale=2.0, kT=0.5, convention="unique")
    r = 1.0
    want = (-1.0 + 2.0 * r**2 / 4) / 0.5
    torch.testing.assert_close(lj(pair(r, 3)), torch.tensor([want]))


def test_double_well_closed_forms():
    dw = MultiDoubleWell(2, 2, a=0.9, b=-4.0, d0=4.0, convention="unique")
    offset = math.sqrt(4.0 / (2 * 0.9))
    minimum = -(4.0**2) / (4 * 0.9)
    for d in (4.0 - offset, 4.0 + offset):
        torch.testing.assert_close(dw(pair(d, 2)), torch.tensor([minimum]))
        torch.testing.assert_close(dw.grad(pair(d, 2)), torch.zeros(1, 4))
    torch.testing.assert_close(dw(pair(4.0, 2)), torch.tensor([0.0]))
    # the minima are minima: slightly off either side is higher
    for d in (4.0 - offset, 4.0 + offset):
        assert (dw(pair(d + 1e-3, 2)) > minimum).all() and (dw(pair(d - 1e-3, 2)) > minimum).all()
    ordered = MultiDoubleWell(2, 2, convention="ordered")
    torch.testing.assert_close(ordered(pair(1.0, 2)), 2 * dw(pair(1.0, 2)))


def test_dw4_sums_over_all_pairs():
    """Unit square of side s: 4 pairs at s and 2 at s·sqrt(2)."""
    dw = get_energy("DW4", convention="unique")
    s = 3.0
    x = torch.tensor([[0.0, 0.0, s, 0.0, s, s, 0.0, s]])

    def v(d):
        return 0.9 * (d - 4) ** 4 - 4 * (d - 4) ** 2

    torch.testing.assert_close(dw(x), torch.tensor([4 * v(s) + 2 * v(s * math.sqrt(2))]))


def test_defaults_and_attributes():
    for name, n, d, conv in (
        ("DW4", 4, 2, "unique"),
        ("LJ13", 13, 3, "ordered"),
        ("lj55", 55, 3, "ordered"),
    ):
        e = get_energy(name)
        assert (e.n_particles, e.spatial_dim, e.convention, e.kT) == (n, d, conv, 1.0)
        assert e.name == name.upper()
    assert get_energy("LJ13", convention="unique").convention == "unique"


@pytest.mark.parametrize("name", NAMES)
def test_invariances(name):
    """Translation, O(d) (with reflections) and permutation of particles leave u unchanged."""
    g = torch.Generator().manual_seed(0)
    e = get_energy(name)
    n, d = e.n_particles, e.spatial_dim
    x = spread_configs(e, 5, g)
    u = e(x)
    assert u.shape == (5,) and torch.isfinite(u).all()
    p = x.reshape(5, n, d)
    q = random_orthogonal(d, g)
    moved = p @ q.T + 3.0 * torch.randn(5, 1, d, generator=g)
    permuted = p[:, torch.randperm(n, generator=g)]
    for y in (moved, permuted):
        torch.testing.assert_close(e(y.reshape(5, n * d)), u)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("convention", ("unique", "ordered"))
def test_gradient_matches_finite_differences(name, convention):
    g = torch.Generator().manual_seed(1)
    e = get_energy(name, convention=convention)
    x = spread_configs(e, 3, g)
    grad = e.grad(x)
    assert grad.shape == x.shape and not grad.requires_grad
    v = torch.randn(x.shape, generator=g)
    h = 1e-5
    fd = (e(x + h * v) - e(x - h * v)) / (2 * h)
    torch.testing.assert_close((grad * v).sum(1), fd, rtol=1e-6, atol=1e-6)


def test_grad_is_differentiable_when_input_requires_grad():
    e = get_energy("DW4")
    x = spread_configs(e, 2, torch.Generator().manual_seed(2)).requires_grad_(True)
    lap_autograd = sum(
        torch.autograd.grad(e.grad(x)[:, k].sum(), x, retain_graph=True)[0][:, k]
        for k in range(x.shape[1])
    )
    _, lap = gradient_and_laplacian(e, x)
    torch.testing.assert_close(lap_autograd, lap)


def test_configurational_temperature_of_a_gaussian():
    """u = |x|^2 / (2 s^2) sampled at variance T s^2 gives kT_conf = T."""
    g = torch.Generator().manual_seed(3)
    s, t = 0.7, 1.5
    x = math.sqrt(t) * s * torch.randn(20000, 3, generator=g)
    est, se = configurational_temperature(lambda y: (y**2).sum(1) / (2 * s**2), x)
    assert abs(est - t) < 4 * se and se < 0.02


def load(name: str, n: int) -> torch.Tensor:
    path = DATA / f"{name}.npy"
    if not path.exists():
        pytest.skip(f"reference data {path} not present")
    return torch.from_numpy(np.load(path)[:n]).double()


@pytest.mark.parametrize(
    "split,name,n",
    [("test_split_DW4", "DW4", 3000), ("test_split_LJ13-1000", "LJ13", 800)],
)
def test_reference_data_follow_the_default_convention(split, name, n):
    """kT_conf = E|∇u|^2 / E[Δu] is 1 for the right reduced energy, far from 1 for the other."""
    x = load(split, n)
    default = get_energy(name)
    other = get_energy(name, "ordered" if default.convention == "unique" else "unique")
    est, se = configurational_temperature(default, x)
    assert abs(est - 1) < 4 * se, (est, se)
    est_other, se_other = configurational_temperature(other, x)
    assert abs(est_other - 1) > 20 * se_other and abs(est_other - 1) > 0.3, (est_other, se_other)


def test_bad_inputs():
    e = get_energy("LJ13")
    with pytest.raises(ValueError, match=r"\(B, 39\).*got \(4, 38\)"):
        e(torch.zeros(4, 38))
    with pytest.raises(ValueError, match="got"):
        e(torch.zeros(39))
    with pytest.raises(ValueError, match="got"):
        e.grad(torch.zeros(2, 13, 3))
    with pytest.raises(ValueError, match="'LJ7'"):
        get_energy("LJ7")
    with pytest.raises(UserError, match="choose from DW4, LJ13, LJ55"):
        get_energy("LJ7")
    with pytest.raises(UnknownEnergyError, match="'both'"):
        get_energy("DW4", convention="both")
    with pytest.raises(ValueError, match="B >= 2"):
        configurational_temperature(e, torch.zeros(1, 39))
    with pytest.raises(ValueError, match="kT"):
        MultiDoubleWell(kT=0.0)
