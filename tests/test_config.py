import pytest

from molfff.errors import UserError
from molfff.train.config import build_config, load_config


def test_repo_config_loads_with_fast_preset():
    cfg = load_config("toy2d", fast=True)
    assert cfg.name == "toy2d"
    assert cfg.trainer.max_epochs == 2 and cfg.data.n_train == 4000
    full = load_config("toy2d")
    assert full.trainer.max_epochs > cfg.trainer.max_epochs


def test_every_repo_config_loads_with_and_without_its_fast_preset():
    from pathlib import Path

    root = Path(__file__).parent.parent / "configs"
    names = [p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")]
    assert "qm9_small" in names and len(names) > 10
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name or name == "sbi/base"
        if "fast:" in (root / f"{name}.yaml").read_text():
            load_config(name, fast=True)


def test_overrides_are_typed():
    cfg = build_config({}, ["loss.beta=20", "optim.grad_clip=null", "trainer.devices=2"])
    assert cfg.loss.beta == 20.0 and isinstance(cfg.loss.beta, float)
    assert cfg.optim.grad_clip is None
    assert cfg.trainer.devices == 2
    cfg = build_config({}, ["trainer.val_check_interval=150", "trainer.max_time=00:01:30:00"])
    assert cfg.trainer.val_check_interval == 150 and isinstance(cfg.trainer.val_check_interval, int)
    assert build_config({}, ["trainer.val_check_interval=0.25"]).trainer.val_check_interval == 0.25


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.bta=1"], "unknown config key loss.bta.*valid keys: beta"),
        (["nope=1"], "unknown config key nope"),
        (["loss.beta=abc"], "loss.beta: expected a number"),
        (["data.batch_size=1.5"], "data.batch_size: expected an integer"),
        (["optim.schedule=cosine"], "optim.schedule: 'cosine' is not one of"),
        (["loss.beta=-1"], "loss.beta must be non-negative"),
        (["data.batch_size=0"], "data.batch_size must be positive"),
        (["model.egnn_normalization_factor=nan"], "egnn_normalization_factor must be positive"),
        (["model.egnn_normalization_factor=inf"], "egnn_normalization_factor must be positive"),
        (["optim.lr=nan"], "optim.lr must be positive and finite"),
        (["model.type_offset=nan"], "model.type_offset must be finite"),
        (["model.egnn_node_index=-1"], "egnn_node_index must be non-negative"),
        (["model.egnn_node_index=4"], "egnn_node_index is for molecules.*toy2d ignores it"),
        (["data.name=qm9", "model.egnn_node_index=30"], "egnn_node_index must be at most 29"),
        (["data.unconstrain=true"], "only the sbi tasks know their data's support"),
        (["loss.noise_std=nan"], "loss.noise_std must be non-negative and finite"),
        (["loss.beta=inf"], "loss.beta must be non-negative and finite"),
        (["logger.wandb=maybe"], "logger.wandb"),
        (["trainer.val_check_interval=0"], "val_check_interval must be positive"),
        (["trainer.max_time=90min"], "max_time: '90min' is not DD:HH:MM:SS"),
        (["loss"], "must look like key=value"),
        (["loss=3"], "section loss must be a mapping"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config({}, overrides)


def test_unknown_config_name_lists_known_ones():
    with pytest.raises(UserError, match="no config 'toy3d'.*toy2d"):
        load_config("toy3d")


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(path))
    path.write_text("- a list\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(str(path))


def test_data_keys_belong_to_their_task():
    assert load_config("toy2d", ["data.density=blobs"]).data.density == "blobs"
    assert load_config("sbi/two_moons", ["data.budget=500"]).data.budget == 500
    with pytest.raises(UserError, match=r"data.density for data.name=qm9; valid keys: batch_size"):
        load_config("qm9", ["data.density=blobs"])
    with pytest.raises(UserError, match="data.budget for data.name=toy2d"):
        load_config("toy2d", ["data.budget=500"])
    with pytest.raises(UserError, match="unknown task 'qm10'; choose from toy2d"):
        build_config({"data": {"name": "qm10"}})


def test_a_task_can_be_named_by_its_class_path():
    cfg = build_config({"data": {"name": "molfff.train.dense:Toy2dTask", "density": "blobs"}})
    assert cfg.data.density == "blobs"
    with pytest.raises(UserError, match="cannot be imported"):
        build_config({"data": {"name": "molfff.train.dense:NoSuchTask"}})


def test_exact_nll_settings_are_checked():
    from molfff.errors import UserError
    from molfff.train.config import load_config

    for bad, msg in (
        ("trainer.select_on=foo", "not one of exact, estimate, last"),
        ("trainer.newton_max_iter=0", "must be positive"),
        ("trainer.newton_restarts=-1", "non-negative"),
        ("model.width=0", "must be positive"),
        ("model.pre_layers=0", "must be positive"),
        ("model.blocks=-1", "non-negative"),
        ("model.activation=foo", "not one of relu, silu, tanh, gelu"),
    ):
        with pytest.raises(UserError, match=msg):
            load_config("toy2d", [bad])
