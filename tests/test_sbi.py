"""sbibm tasks: splits, observations, the Python ODE simulators, C2ST."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sbibm")
pytest.importorskip("sklearn")

from molfff.dense import sbi, sbi_ode  # noqa: E402
from molfff.dense.c2st import c2st  # noqa: E402
from molfff.dense.splits import Split  # noqa: E402
from molfff.errors import UserError  # noqa: E402

DIMS = {  # (D_theta, D_x)
    "two_moons": (2, 2),
    "slcp": (5, 8),
    "slcp_distractors": (5, 100),
    "gaussian_linear": (10, 10),
    "gaussian_linear_uniform": (10, 10),
    "gaussian_mixture": (2, 2),
    "bernoulli_glm": (10, 10),
    "bernoulli_glm_raw": (10, 100),
    "sir": (2, 10),
    "lotka_volterra": (4, 20),
}


def _rows(t: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in t.tolist()}


def test_every_task_is_listed():
    assert set(DIMS) == set(sbi.TASK_NAMES)


@pytest.mark.parametrize("name", sbi.TASK_NAMES)
def test_splits_shapes_seeds_and_disjointness(name):
    dt, dx = DIMS[name]
    before = torch.random.get_rng_state()
    a = sbi.simulate_splits(name, 40, seed=3, n_test=20)
    assert torch.equal(before, torch.random.get_rng_state()), "global RNG state changed"
    for split, n in {"train": 36, "val": 4, "test": 20}.items():
        assert a[split].x.shape == (n, dt) and a[split].c.shape == (n, dx)
        assert a[split].x.dtype == a[split].c.dtype == torch.float32
    b = sbi.simulate_splits(name, 40, seed=3, n_test=20)
    for split in a:
        assert torch.equal(a[split].x, b[split].x) and torch.equal(a[split].c, b[split].c)
    other = sbi.simulate_splits(name, 40, seed=4, n_test=20)
    assert not torch.equal(other["train"].x, a["train"].x)
    assert not torch.equal(other["test"].x, a["test"].x)
    rows = {split: _rows(a[split].x) for split in a}
    assert not rows["train"] & rows["val"]
    assert not rows["test"] & (rows["train"] | rows["val"])
    smaller = sbi.simulate_splits(name, 10, seed=3, n_test=20)  # same test set for every budget
    assert torch.equal(smaller["test"].c, a["test"].c)


@pytest.mark.parametrize("name", sbi.TASK_NAMES)
def test_observations_and_reference_posterior(name):
    dt, dx = DIMS[name]
    assert sbi.observation(name, 1).shape == (1, dx)
    assert sbi.true_parameters(name, 10).shape == (1, dt)
    ref = sbi.reference_posterior_samples(name, 10)
    assert ref.shape == (10_000, dt) and torch.isfinite(ref).all()


def test_unknown_task_names_list_the_valid_ones():
    for call in (
        lambda: sbi.get_task("moons"),
        lambda: sbi.simulate_splits("moons", 100, 0),
        lambda: sbi.observation("moons", 1),
        lambda: sbi.reference_posterior_samples("moons", 1),
    ):
        with pytest.raises(UserError, match="two_moons.*lotka_volterra"):
            call()


@pytest.mark.parametrize("k", [0, 11, True, 1.0])
def test_bad_observation_number(k):
    with pytest.raises(UserError, match="1..10"):
        sbi.observation("two_moons", k)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": 1},
        {"budget": 2.5},
        {"budget": True},
        {"val_fraction": 0.0},
        {"n_test": 0},
        {"seed": -1},
    ],
)
def test_bad_split_settings(kwargs):
    with pytest.raises(UserError):
        sbi.simulate_splits("two_moons", **{"budget": 100, "seed": 0, **kwargs})


def test_simulator_rejects_bad_parameters():
    task = sbi.get_task("slcp")
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        task.simulate(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        task.simulate(torch.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        task.simulate(torch.full((2, 5), float("nan")))
    with pytest.raises(ValueError, match="int >= 1"):
        task.sample_prior(0)
    with pytest.raises(ValueError, match="NaN"):
        Split(torch.zeros(2, 2), torch.tensor([[0.0], [float("nan")]]))


def test_zscore_from_training_split():
    """The SBI task's module standardises theta and x with the training simulations' statistics
    (constant dimensions centred, not scaled) and reports densities in original units."""
    from molfff.dense.splits import DenseData
    from molfff.train.config import load_config
    from molfff.train.dense import SbiTask

    config = load_config("sbi/gaussian_mixture", ["data.budget=500", "data.n_test=10"])
    task = SbiTask(config.data, 0)
    module = task.new_module(config)
    train = task.data.splits["train"]
    assert torch.equal(
        train.x, sbi.simulate_splits("gaussian_mixture", 500, 0, n_test=10)["train"].x
    )
    for v in (module.standardize_x(train.x), module.standardize_c(train.c)):
        torch.testing.assert_close(v.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(v.std(0), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(module.standardize_x.inverse(module.standardize_x(train.x)), train.x)
    assert float(module.log_scale) == pytest.approx(float(train.x.std(0).log().sum()), rel=1e-5)
    theta = train.x[:5]
    lp_std = module.flow.log_prob(module.standardize_x(theta), module.standardize_c(train.c[:5]))
    torch.testing.assert_close(module.log_prob(theta, train.c[:5]), lp_std - module.log_scale)
    constant = Split(torch.randn(10, 2), torch.ones(10, 3))
    constant_task = SbiTask(
        config.data, 0, DenseData("sbi", dict.fromkeys(task.data.splits, constant))
    )
    assert torch.equal(constant_task.new_module(config).standardize_c.scale, torch.ones(3))


def test_slcp_distractors_follow_sbibm_recipe():
    perm = torch.load(
        Path(importlib.util.find_spec("sbibm").submodule_search_locations[0])
        / "tasks/slcp/files/permutation_idx.torch",
        weights_only=True,
    )
    assert torch.equal(sbi._distractors()[2], perm)
    data_at = torch.argsort(perm)[:8]  # where the 8 SLCP data went
    for k in (1, 7):
        embedded = sbi.observation("slcp_distractors", k)[0, data_at]
        assert torch.equal(embedded, sbi.observation("slcp", k)[0])


@pytest.mark.parametrize("name", ["sir", "lotka_volterra"])
def test_ode_solution_matches_scipy(name):
    from scipy.integrate import solve_ivp

    torch.manual_seed(0)
    prior = sbi_ode.SIR_PRIOR if name == "sir" else sbi_ode.LV_PRIOR
    theta = torch.cat([prior.sample((4,)), sbi.true_parameters(name, 1)]).double()
    if name == "sir":
        ours = sbi_ode.sir_infected(theta).log()
        times, u0 = sbi_ode.SIR_DAYS.numpy(), [sbi_ode.SIR_N - 1, 1.0]

        def rhs(t, u, b, g):
            return [-b * u[0] * u[1] / sbi_ode.SIR_N, b * u[0] * u[1] / sbi_ode.SIR_N - g * u[1]]
    else:
        ours = sbi_ode.lv_log_populations(theta)
        times, u0 = sbi_ode.LV_TIMES.numpy(), list(sbi_ode.LV_U0)

        def rhs(t, u, a, b, c, d):
            return [a * u[0] - b * u[0] * u[1], -c * u[1] + d * u[0] * u[1]]

    for row, th in zip(ours, theta.tolist(), strict=True):
        sol = solve_ivp(rhs, (0, times[-1]), u0, "DOP853", times, rtol=1e-12, atol=1e-12, args=th)
        ref = np.log(sol.y[1] / sbi_ode.SIR_N) if name == "sir" else np.log(sol.y).reshape(-1)
        np.testing.assert_allclose(row.numpy(), ref, atol=1e-4, rtol=0)


def test_ode_tasks_explain_sbibm_observations():
    """sbibm's stored observations are typical draws of these simulators at their true parameters.

    Deterministic statistics over the 10 observations: Lotka-Volterra ``sum ((log x_o - log u) /
    0.1)^2`` is chi-square with 200 degrees of freedom (222.7 here; an observation grid off by 5%
    gives 7,800); SIR's Pearson statistic over the counts with expectation >= 5 is 47 on 41
    (sampling every 16 instead of 17 days gives 715).
    """
    from scipy.stats import chi2

    lv = 0.0
    for k in range(1, 11):
        loc = sbi_ode.lv_log_populations(sbi.true_parameters("lotka_volterra", k))
        lv += (((sbi.observation("lotka_volterra", k).double().log() - loc) / 0.1) ** 2).sum()
    assert chi2.ppf(0.0005, 200) < lv < chi2.ppf(0.9995, 200)
    pearson, dof = 0.0, 0
    for k in range(1, 11):
        p = sbi_ode.sir_infected(sbi.true_parameters("sir", k))
        mu, keep = 1000 * p, 1000 * p >= 5
        z2 = (sbi.observation("sir", k).double() - mu) ** 2 / (mu * (1 - p))
        pearson, dof = pearson + z2[keep].sum(), dof + int(keep.sum())
    assert pearson < chi2.ppf(0.9995, dof)
    x = sbi.get_task("sir").simulate(sbi.true_parameters("sir", 1).expand(50, 2))
    assert ((x >= 0) & (x <= 1000) & (x == x.round())).all()


def test_c2st_same_and_different():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    assert 0.4 < c2st(x, y) < 0.6
    assert c2st(x, y + 4.0) > 0.95


@pytest.mark.parametrize("sizes", [(1000, 250), (250, 1000)])
def test_c2st_unequal_sizes_of_one_gaussian_score_one_half(sizes):
    """Unbalanced labels would let a classifier that always answers the larger class score
    1000 / 1250 = 0.8 (sbibm's c2st does); balanced by subsampling, one distribution is 0.5."""
    g = torch.Generator().manual_seed(4)
    x, y = (torch.randn(n, 2, generator=g, dtype=torch.float64) for n in sizes)
    score = c2st(x, y)
    assert 0.42 < score < 0.58, score
    assert c2st(x, y + 3.0) > 0.9  # still separates what differs


def test_c2st_matches_sbibm_implementation():
    path = Path(importlib.util.find_spec("sbibm").submodule_search_locations[0]) / "metrics/c2st.py"
    spec = importlib.util.spec_from_file_location("sbibm_c2st", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the file alone: sbibm.metrics needs extra packages
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(150, 3, generator=g), 0.5 + torch.randn(150, 3, generator=g)
    assert c2st(x, y, seed=2) == pytest.approx(float(module.c2st(x, y, seed=2)[0]), abs=1e-6)


def test_c2st_early_stopping_reaches_bayes_accuracy():
    """Two unit Gaussians whose means differ by 0.3 in each of 4 coordinates (|dmu| = 0.6): the
    best classifier is right with probability Phi(|dmu| / 2) = Phi(0.3) = 0.618; the early-stopped
    C2ST gets within 0.01 of it (sbibm's settings: 0.567, overfitted)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    y = 0.3 + torch.randn(2000, 4, generator=g, dtype=torch.float64)
    bayes = 0.5 * (1 + math.erf(0.3 / math.sqrt(2)))
    assert c2st(x, y, early_stopping=True) == pytest.approx(bayes, abs=0.03)
    z = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    assert 0.45 < c2st(x, z, early_stopping=True) < 0.55


def test_c2st_bad_inputs():
    x = torch.randn(20, 2)
    with pytest.raises(ValueError, match="dimension"):
        c2st(x, torch.randn(20, 3))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        c2st(x[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="NaN"):
        c2st(x, torch.full((20, 2), float("nan")))
    with pytest.raises(ValueError, match="n_folds"):
        c2st(x, x[:3])
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        sbi.posterior_c2st("two_moons", 1, torch.randn(100, 3))


def test_c2st_integer_tiny_and_empty_inputs():
    """Integer / boolean samples are scored as floats (torch's mean refused them); too few rows
    for early stopping's validation split and D = 0 are one ValueError each (they were
    scikit-learn's "All the 5 fits failed")."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 3, (40, 2), generator=g), torch.randint(0, 3, (40, 2), generator=g)
    assert 0.0 <= c2st(x, y) <= 1.0 and 0.0 <= c2st(x > 0, y > 0) <= 1.0
    with pytest.raises(ValueError, match="early_stopping needs at least"):
        c2st(torch.randn(5, 2), torch.randn(5, 2), early_stopping=True)
    assert 0.0 <= c2st(torch.randn(8, 2), torch.randn(8, 2), early_stopping=True) <= 1.0
    with pytest.raises(ValueError, match="D >= 1"):
        c2st(torch.zeros(20, 0), torch.zeros(20, 0))


def test_prior_bounds_are_the_supports_box():
    assert sbi.prior_bounds("two_moons")[0].tolist() == [-1.0, -1.0]
    assert sbi.prior_bounds("gaussian_mixture")[1].tolist() == [10.0, 10.0]
    lower, upper = sbi.prior_bounds("lotka_volterra")
    assert lower.tolist() == [0.0] * 4 and torch.isinf(upper).all()
    lower, upper = sbi.prior_bounds("bernoulli_glm")
    assert lower.shape == (10,) and torch.isinf(lower).all() and torch.isinf(upper).all()
    for name in sbi.TASK_NAMES:  # prior samples lie inside the box
        lower, upper = sbi.prior_bounds(name)
        theta = sbi.prior_distribution(name).sample((200,)).reshape(200, -1)
        assert ((theta > lower) & (theta < upper)).all(), name


def test_unconstrained_module_reports_densities_of_theta():
    """With data.unconstrain the flow models T(theta) z-scored; densities, samples and NLLs
    are of theta in the prior's box (change of variables, float64)."""
    from molfff.dense.splits import DenseData
    from molfff.train.config import load_config
    from molfff.train.dense import SbiTask

    config = load_config(
        "sbi/gaussian_mixture", ["data.budget=500", "data.n_test=10", "data.unconstrain=true"]
    )
    task = SbiTask(config.data, 0)
    module = task.new_module(config).double()
    train = task.data.splits["train"]
    theta, x = train.x[:20].double(), train.c[:20].double()
    assert module.unconstrain.upper.tolist() == [10.0, 10.0]
    v = module.to_flow(train.x.double())
    torch.testing.assert_close(v.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(module.from_flow(v), train.x.double())
    s = (theta + 10) / 20  # T(theta) = logit(s), |dT/dtheta| = 1 / (20 s (1 - s))
    log_det = -(20 * s * (1 - s)).log().sum(1)
    for exact in (False, True):
        inner = module.flow.log_prob_estimate(module.to_flow(theta), module.standardize_c(x))
        if exact:
            inner = module.flow.log_prob(module.to_flow(theta), module.standardize_c(x))
        expected = inner - module.log_scale + log_det
        torch.testing.assert_close(module.log_prob(theta, x, exact=exact), expected)
    outside = theta.clone()
    outside[0, 1] = 10.5
    assert module.log_prob(outside, x, exact=False)[0] == -math.inf
    g = torch.Generator().manual_seed(0)
    samples, log_p = module.sample_with_log_prob(50, x[:1], generator=g)
    assert module.unconstrain.contains(samples).all()
    torch.testing.assert_close(log_p, module.log_prob(samples, x[:1]))  # one x_o for all
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("unconstrain.")}
    old = type(module)(**module.hparams).double()
    old.load_state_dict(state)  # checkpoints from before the support: the identity
    assert old.unconstrain.is_identity
    with pytest.raises(UserError, match="only the sbi tasks know their data's support"):
        load_config("toy2d", ["data.unconstrain=true"])
    unknown = SbiTask(config.data, 0, DenseData("sbi", task.data.splits))  # support not given
    with pytest.raises(UserError, match="does not know its data's support"):
        unknown.new_module(config)
