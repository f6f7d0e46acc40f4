"""Training an equivariant FFF on DW4 through the standard stack (reference data needed)."""

import math

import pytest
import torch

from molfff.boltzmann.data import REFERENCE_DIR
from molfff.errors import UserError
from molfff.testing import random_orthogonal
from molfff.train.config import load_config
from molfff.train.runner import train
from molfff.train.runs import load_model
from tests.helpers import QUIET

pytestmark = pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason="no reference DW4 data")

FAST = QUIET + ["data.n_train=512", "data.n_val=64", "data.n_test=128", "model.blocks=1"]


def test_dw4_trains_and_density_is_invariant(tmp_path):
    run = train(load_config("dw4", FAST + [f"run.root={tmp_path}"], fast=True))
    m = run.metrics
    assert math.isfinite(m["nll_exact"]) and m["n"] == 128
    # (m/2) log 2π with m = (4 - 1)·2 = 6 degrees of freedom
    constant = m["nll_exact"] - m["nll_exact_without_latent_constant"]
    assert constant == pytest.approx(3 * math.log(2 * math.pi))
    _, module, _ = load_model(run.run_dir)
    x = module.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.reshape(16, 4, 2).mean(1).abs().max() < 1e-5  # zero centre of mass
    q = random_orthogonal(2, reflection=True, generator=torch.Generator().manual_seed(1)).float()
    perm = torch.tensor([2, 0, 3, 1])
    moved = (x.reshape(16, 4, 2) @ q.T)[:, perm].reshape(16, 8)
    torch.testing.assert_close(module.log_prob(moved), module.log_prob(x), atol=1e-4, rtol=1e-4)


def test_particles_refuse_standardization(tmp_path):
    cfg = load_config("dw4", FAST + [f"run.root={tmp_path}", "data.standardize=true"], fast=True)
    with pytest.raises(UserError, match="data.standardize"):
        train(cfg)


def test_reweight_command(tmp_path, capsys, monkeypatch):
    """`molfff reweight` on a (barely trained) DW4 model: weights, ESS, estimates, figure; an
    observable from a module in the working folder; the low-ESS flag on stderr and in JSON."""
    import json
    import sys

    from molfff.cli import main

    train(load_config("dw4", FAST + [f"run.root={tmp_path}"], fast=True))
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    (tmp_path / "molfff_test_cli_obs.py").write_text("def x0(x, energy):\n    return x[:, 0]\n")
    code = main(
        [
            "reweight",
            str(tmp_path / "dw4"),
            "--n",
            "300",
            "--json",
            "--observable",
            "energy",
            "--observable",
            "mean_distance",
            "--observable",
            "molfff_test_cli_obs:x0",
        ]
    )
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 0
    assert 1 / 300 <= out["ess"] <= 1
    for key in ("energy/raw", "energy/reweighted", "energy/reference", "mean_distance/raw"):
        assert math.isfinite(out[key]), key
    assert out["energy/reference"] == pytest.approx(-22.45, abs=0.3)  # MCMC test split
    assert math.isfinite(out["molfff_test_cli_obs:x0/raw"])
    assert len(list((tmp_path / "dw4").glob("*/reweight.png"))) == 1
    assert out["ess_too_low"] == (out["ess_samples"] < 50)  # 300 samples: 1 % is 3
    if out["ess_too_low"]:  # likely for a one-epoch model, but not asserted
        assert "warning: effective sample size" in captured.err
        assert out["energy/reweighted_stderr"] is None and out["ess_warning"]
    else:
        assert out["energy/reweighted_stderr"] > 0 and out["ess_warning"] is None


def test_reweight_refuses_other_models(tmp_path, capsys):
    from molfff.cli import main

    train(
        load_config(
            "toy2d",
            QUIET
            + [
                f"run.root={tmp_path}",
                "trainer.max_epochs=1",
                "data.n_train=500",
                "data.n_val=100",
                "data.n_test=100",
            ],
        )
    )
    capsys.readouterr()
    assert main(["reweight", str(tmp_path / "toy2d"), "--n", "10"]) == 2
    assert "needs a Boltzmann generator" in capsys.readouterr().err


def test_data_generate_command(tmp_path, capsys):
    """`molfff data generate` writes a loadable split; it refuses to overwrite by default."""
    from molfff.boltzmann.data import load_samples
    from molfff.cli import main

    out = tmp_path / "train_split_DW4.npy"
    args = [
        "data",
        "generate",
        "dw4",
        "--n",
        "200",
        "--chains",
        "50",
        "--burn-in",
        "200",
        "--thin",
        "5",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    x = load_samples(out, "DW4")
    assert x.shape == (200, 8)
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["data", "generate", "argon", "--n", "5"]) == 2
