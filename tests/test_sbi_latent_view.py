"""scripts/sbi_latent_view.py: the latent picture of a trained two_moons model."""

import pytest

pytest.importorskip("sbibm")
pytest.importorskip("matplotlib")

from molfff.errors import UserError  # noqa: E402
from molfff.train.config import load_config  # noqa: E402
from molfff.train.runner import train  # noqa: E402
from tests.helpers import QUIET, load_script  # noqa: E402

view = load_script("sbi_latent_view")
FAST = QUIET + ["data.budget=600", "data.n_test=300", "data.c2st_observations=0"]


def test_draws_the_three_panels_and_refuses_bad_input(tmp_path, capsys):
    run = train(load_config("sbi/two_moons", FAST + [f"run.root={tmp_path}"], fast=True))
    out = tmp_path / "latent.png"
    assert view.main([str(run.run_dir), "--n", "500", "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    share = float(capsys.readouterr().out.split(":")[1].split()[0])
    assert 0.0 <= share <= 1.0
    with pytest.raises(UserError, match="suffixes"):
        view.main([str(run.run_dir), "--out", str(tmp_path / "latent.xyz")])
    with pytest.raises(UserError, match="does not exist"):
        view.main([str(run.run_dir), "--out", str(tmp_path / "no" / "latent.png")])
    slcp = train(load_config("sbi/slcp", FAST + [f"run.root={tmp_path}"], fast=True))
    with pytest.raises(UserError, match="5 parameters"):
        view.main([str(slcp.run_dir), "--out", str(out)])
