"""scripts/gpu_qm9.py: argument checks, and a CPU dry run."""

import importlib.util
import sys

import pytest
import torch

from tests.helpers import load_script

gpu_qm9 = load_script("gpu_qm9")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_refuses_without_cuda(capsys):
    with pytest.raises(SystemExit) as err:
        gpu_qm9.parse_args([])
    assert err.value.code == 2 and "--device cpu" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--device", "cpu", "--minutes", "0"], ["--device", "tpu"]])
def test_bad_arguments(argv):
    with pytest.raises((SystemExit, RuntimeError)):
        gpu_qm9.parse_args(argv)


def test_duration():
    assert gpu_qm9._duration(0.2) == "00:00:00:12"
    assert gpu_qm9._duration(90) == "00:01:30:00"


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="needs qm9pack")
def test_cpu_dry_run(tmp_path, capsys):
    argv = ["--device", "cpu", "--minutes", "0.2", "--samples", "20", "--fast", "--skip-tests",
            "--root", str(tmp_path), "--set", "model.blocks=1", "--set", "model.width=16",
            "--set", "data.n_train=64", "--set", "trainer.val_check_interval=2"]  # fmt: skip
    assert gpu_qm9.main(argv) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and "molecules/s" in out and "validation NLL curve" in out
    assert "best.ckpt by val/nll_given_n_" in out
    assert "molecule_stability" in out
    assert sys.modules.get("molfff") is not None
