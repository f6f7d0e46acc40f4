"""Amortised posterior estimation on an sbibm task through the training stack."""

import math

import pytest
import torch

pytest.importorskip("sbibm")
pytest.importorskip("sklearn")

from molfff.dense.sbi import observation  # noqa: E402
from molfff.dense.sbi_task import c2st_metrics  # noqa: E402
from molfff.errors import UserError  # noqa: E402
from molfff.train.config import load_config  # noqa: E402
from molfff.train.runner import load_model, train  # noqa: E402
from tests.helpers import QUIET  # noqa: E402

FAST = QUIET + ["data.budget=600", "data.n_test=300", "data.c2st_observations=0"]


def test_configs_extend_the_base():
    cfg = load_config("sbi/slcp")
    assert cfg.data.task == "slcp" and cfg.model.preset == "S" and cfg.loss.beta == 25.0
    assert cfg.name == "sbi/slcp"


def test_two_moons_trains_and_conditions_on_x(tmp_path):
    run = train(load_config("sbi/two_moons", FAST + [f"run.root={tmp_path}"], fast=True))
    assert math.isfinite(run.metrics["nll"]) and run.metrics["n"] == 300
    _, module, _ = load_model(run.run_dir)
    assert module.c_scale.shape == (2,) and (module.c_scale != 1).all()  # x was z-scored
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
