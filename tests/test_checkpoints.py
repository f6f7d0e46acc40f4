"""Checkpoints name the class of their module; earlier checkpoints (``kind``) still load."""

import pytest
import torch
import yaml

from molfff.cli import main
from molfff.errors import UserError
from molfff.train.checkpoint import AtomicCheckpointIO, read_checkpoint
from molfff.train.config import load_config
from molfff.train.module import FFFModule
from molfff.train.runner import train
from molfff.train.runs import load_model, load_run_config
from tests.helpers import small

# what the `data` section of every config held before per-task schemas
OLD_DATA = {
    "density": "ring",
    "system": "DW4",
    "root": None,
    "task": "two_moons",
    "budget": 10000,
    "c2st_observations": 10,
}
OLD_KEYS = {
    "standardize_x.shift": "shift",
    "standardize_x.scale": "scale",
    "standardize_c.shift": "c_shift",
    "standardize_c.scale": "c_scale",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return train(load_config("toy2d", small(root, epochs=1, n_train=512))).run_dir


def _as_old(ckpt: dict) -> dict:
    """The checkpoint as molfff wrote it before class paths."""
    old = dict(ckpt)
    del old["class_path"]
    hp = dict(ckpt["hyper_parameters"])
    hp["config"] = {**hp["config"], "data": {**OLD_DATA, **hp["config"]["data"]}}
    old["hyper_parameters"] = {**hp, "kind": "dense"}
    old["state_dict"] = {OLD_KEYS.get(k, k): v for k, v in ckpt["state_dict"].items()}
    return old


def test_new_checkpoint_names_its_class(run_dir):
    ckpt = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert ckpt["class_path"] == "molfff.train.module:FFFModule"
    assert "kind" not in ckpt["hyper_parameters"]
    assert set(ckpt["hyper_parameters"]) == {"config", "dim", "cond_dim", "particles"}
    _, module, _ = load_model(run_dir)
    assert type(module) is FFFModule
    assert (module.standardize_x.scale != 1).all()  # trained statistics, not the initial ones


def test_old_checkpoint_and_config_load_as_before(run_dir, tmp_path, monkeypatch, capsys):
    ckpt = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    old_path = tmp_path / "old" / "checkpoints" / "best.ckpt"
    old_path.parent.mkdir(parents=True)
    torch.save(_as_old(ckpt), old_path)
    old_config = yaml.safe_load((run_dir / "config.yaml").read_text())
    old_config["data"] = {**OLD_DATA, **old_config["data"]}
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(old_config))

    config, old, _ = load_model(old_path)
    _, new, _ = load_model(run_dir)
    assert config.data.density == "ring" and not hasattr(config.data, "budget")
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(old.log_prob(x), new.log_prob(x), rtol=0, atol=0)
    assert load_run_config(tmp_path / "old") == config
    upgraded = AtomicCheckpointIO().load_checkpoint(old_path)  # what a resume reads
    assert upgraded["class_path"] == "molfff.train.module:FFFModule"
    assert set(upgraded["state_dict"]) == set(ckpt["state_dict"])

    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(old_path), "--n", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "x0,x1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["hyper_parameters"].update(kind="spline"), "kind 'spline'.*does not know"),
        (lambda c: c.update(class_path="collections:OrderedDict"), "is not a LightningModule"),
        (lambda c: c.update(class_path="molfff.nowhere:Module"), "cannot be imported"),
    ],
)
def test_foreign_checkpoints_are_refused_in_one_line(run_dir, tmp_path, edit, message):
    ckpt = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    if "kind" in message:
        ckpt = _as_old(ckpt)
    edit(ckpt)
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=message):
        load_model(path)
