"""The command line: the main job end to end, and one clear error for every bad input."""

import json
import subprocess
import sys

import pytest
import torch

from molfff.cli import main
from tests.helpers import QUIET, small


def run_cli(args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "molfff.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short CLI training run, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli")
    # the progress bar and offline W&B stay on: their output must go to stderr, leaving stdout
    # to the results
    keep = ("trainer.progress_bar=false", "logger.wandb=disabled")
    quiet = [a for a in QUIET if a not in keep] + ["logger.wandb=offline"]
    proc = run_cli(["train", "toy2d", "--fast", *quiet], cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, proc


def test_train_prints_metrics_and_run_folder(trained):
    cwd, proc = trained
    assert "test NLL, exact (the density of the model that samples" in proc.stdout
    assert "test NLL, paper estimate (eq. 135, at z = f(x))" in proc.stdout
    assert "KL(p||q) from the exact NLL" in proc.stdout
    assert "integral of q over the plot grid" in proc.stdout
    assert "run folder: runs/toy2d/" in proc.stderr
    assert "Epoch 0" in proc.stderr and "Epoch" not in proc.stdout
    assert "wandb sync" in proc.stderr and "wandb" not in proc.stdout
    runs = list((cwd / "runs" / "toy2d").iterdir())
    assert len(runs) == 1
    for name in (
        "config.yaml",
        "metrics.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "samples.png",
        "density.png",
    ):
        assert (runs[0] / name).exists(), name
    (wandb_run,) = (runs[0] / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"test/nll" in wandb_run.read_bytes()  # the test metrics reach the W&B run


def test_sample_writes_csv_to_stdout_from_latest_run(trained):
    cwd, _ = trained
    proc = run_cli(["sample", "--n", "25"], cwd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "x0,x1" and len(lines) == 26
    assert all(len(line.split(",")) == 2 for line in lines[1:])


def test_sample_to_npy_and_evaluate_json(trained, monkeypatch, capsys):
    cwd, _ = trained
    monkeypatch.chdir(cwd)
    assert main(["sample", "--n", "12", "--out", "s.npy"]) == 0
    import numpy as np

    assert np.load(cwd / "s.npy").shape == (12, 2)
    capsys.readouterr()
    assert main(["evaluate", "--json", "--split", "val"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["n"] == 1000 and "kl_exact" in out and "kl_estimate" in out


def _expect_error(argv, message, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _expect_error(["sample"], "no runs under runs/", capsys)
    _expect_error(["sample", "missing.ckpt"], "missing.ckpt does not exist", capsys)
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a checkpoint" * 10)
    _expect_error(["sample", "garbage.ckpt"], "cannot be read", capsys)
    for name, data in [("empty.ckpt", b""), ("text.ckpt", b"hi\n")]:  # said "(105)", "(EOFError)"
        (tmp_path / name).write_bytes(data)
        _expect_error(["sample", name], "not a zip archive", capsys)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    _expect_error(["evaluate", "foreign.ckpt"], "not a molfff training checkpoint", capsys)
    (tmp_path / "empty_run").mkdir()
    _expect_error(["sample", "empty_run"], "holds no checkpoints", capsys)


def test_bad_configs_and_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _expect_error(["train", "toy3d"], "no config 'toy3d'", capsys)
    _expect_error(["train", "toy2d", "loss.bta=3"], "unknown config key loss.bta", capsys)
    _expect_error(["train", "toy2d", "--set", "optim.lr=fast"], "optim.lr", capsys)
    _expect_error(["train", "toy2d", "data.density=spiral"], "unknown 2-D density", capsys)
    _expect_error(["train", "toy2d", "model.loc_scale=true"], "needs conditioning data", capsys)
    _expect_error(["train", "nowhere", "--resume"], "--resume needs a run folder", capsys)
    _expect_error(["sample", "--n", "0"], "--n must be positive", capsys)
    _expect_error(["sample", "--batch-size", "0"], "--batch-size must be positive", capsys)
    _expect_error(["sample", "--max-draws", "500"], "applies with --stable-only", capsys)
    assert not (tmp_path / "runs").exists()  # nothing was written by the failed commands


def test_corrupt_last_checkpoint_is_not_overwritten(tmp_path, capsys):
    """Resuming from a damaged checkpoint stops with a message and leaves the file alone."""
    from molfff.train.config import load_config
    from molfff.train.runner import train

    run = train(load_config("toy2d", small(tmp_path, epochs=1))).run_dir
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = last.read_bytes()
    _expect_error(["train", str(run), "--resume"], "cannot be read", capsys)
    assert last.read_bytes() == before


def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning's DDP (gloo) with 2 processes on CPU: one run folder, world size 2."""
    proc = run_cli(
        [
            "train",
            "toy2d",
            "--fast",
            "--json",
            *QUIET,
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "trainer.max_epochs=1",
        ],
        tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)
    assert metrics["world_size"] == 2
    runs = list((tmp_path / "runs" / "toy2d").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "checkpoints" / "last.ckpt").exists()
