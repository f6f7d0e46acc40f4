"""Amortised posterior estimation on an sbibm task through the training stack."""

import math

import pytest
import torch

pytest.importorskip("sbibm")
pytest.importorskip("sklearn")

from molfff.dense.sbi import in_prior_support, observation  # noqa: E402
from molfff.dense.sbi_task import c2st_metrics, posterior_samples  # noqa: E402
from molfff.errors import UserError  # noqa: E402
from molfff.train.config import load_config  # noqa: E402
from molfff.train.runner import train  # noqa: E402
from molfff.train.runs import load_model  # noqa: E402
from tests.helpers import QUIET  # noqa: E402

FAST = QUIET + ["data.budget=600", "data.n_test=300", "data.c2st_observations=0"]


def test_configs_extend_the_base():
    cfg = load_config("sbi/slcp")
    assert cfg.data.task == "slcp" and cfg.loss.beta == 25.0
    assert (cfg.model.width, cfg.model.blocks, cfg.model.pre_layers) == (256, 2, 2)  # authors'
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (5e-4, 1e-4)
    assert cfg.name == "sbi/slcp"


def test_two_moons_trains_and_conditions_on_x(tmp_path):
    run = train(load_config("sbi/two_moons", FAST + [f"run.root={tmp_path}"], fast=True))
    assert math.isfinite(run.metrics["nll_exact"]) and run.metrics["n"] == 300
    _, module, _ = load_model(run.run_dir)
    assert (
        module.standardize_c.scale.shape == (2,) and (module.standardize_c.scale != 1).all()
    )  # x was z-scored
    x_o = observation("two_moons", 1)
    theta = module.sample(50, x_o, generator=torch.Generator().manual_seed(0))
    assert theta.shape == (50, 2)
    lp_o = module.log_prob(theta, x_o.expand(50, -1))
    lp_far = module.log_prob(theta, (x_o + 3.0).expand(50, -1))
    assert (lp_o != lp_far).any()


def test_bad_sbi_settings(tmp_path):
    with pytest.raises(UserError, match="unknown"):
        train(load_config("sbi/two_moons", FAST + [f"run.root={tmp_path}", "data.task=nope"]))
    with pytest.raises(UserError, match="c2st_observations"):
        train(
            load_config(
                "sbi/two_moons", FAST + [f"run.root={tmp_path}", "data.c2st_observations=11"]
            )
        )


@pytest.mark.slow
def test_c2st_of_an_untrained_model_is_high(tmp_path):
    """A model trained for one short epoch is far from the posterior: C2ST well above 0.5."""
    run = train(load_config("sbi/two_moons", FAST + [f"run.root={tmp_path}"], fast=True))
    _, module, _ = load_model(run.run_dir)
    scores = c2st_metrics(module, "two_moons", 1, progress=False)
    assert 0.6 < scores["c2st"] <= 1.0


class BoxSampler(torch.nn.Module):
    """Stands in for a trained posterior: theta ~ Uniform(-half, half)^2 whatever x_o is."""

    def __init__(self, half: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(half), requires_grad=False)

    def sample(self, n, x_o, generator=None):
        return (2 * torch.rand(n, 2, generator=generator) - 1) * self.scale


def test_posterior_samples_are_restricted_to_the_prior_support():
    """two_moons has a Uniform(-1, 1)^2 prior: a sampler over (-2, 2)^2 leaks 3/4 of its mass."""
    leaky = BoxSampler(2.0)
    raw = posterior_samples(leaky, "two_moons", 1, 4000, within_prior=False)
    outside = (raw.abs() > 1).any(dim=1).float().mean()
    assert 0.70 < outside < 0.80
    kept = posterior_samples(leaky, "two_moons", 1, 4000)
    assert kept.shape == (4000, 2) and (kept.abs() <= 1).all()
    assert kept[:, 0].min() < -0.95 and kept[:, 0].max() > 0.95  # the whole box, not a corner
    with pytest.raises(UserError, match="prior's support"):
        posterior_samples(BoxSampler(1000.0), "two_moons", 1, 100, max_draws=3)


def test_prior_support_of_bounded_and_positive_priors():
    theta = torch.tensor([[0.5, -0.9], [1.2, 0.0], [0.1, 0.1]])
    assert in_prior_support("two_moons", theta).tolist() == [True, False, True]
    rates = torch.tensor([[0.4, 0.1], [-0.1, 0.1]])
    assert in_prior_support("sir", rates).tolist() == [True, False]
    assert in_prior_support("gaussian_linear", 1e6 * torch.ones(2, 10)).all()  # Gaussian prior
