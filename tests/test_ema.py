"""EMA of the weights: the average of the steps, used by validation and by loaded checkpoints."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from molfff.cli import main
from molfff.errors import UserError
from molfff.train.checkpoint import read_checkpoint
from molfff.train.config import load_config
from molfff.train.runner import train
from molfff.train.runs import load_model
from molfff.train.sample_curve import SampleCurve, read_sample_curve
from molfff.train.tasks import build_task
from tests.helpers import small

DECAY = 0.8


class RecordWeights(Callback):
    """The training weights after every optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: p.detach().clone() for k, p in pl_module.named_parameters()})


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    cfg = load_config("toy2d", small(root, epochs=2, n_train=1024) + [f"model.ema_decay={DECAY}"])
    record = RecordWeights()
    curve = SampleCurve(first_weight, 4, root / "curve.jsonl", samples=0)
    return cfg, train(cfg, callbacks=[record, curve]), record.steps


def first_weight(module) -> dict:
    """A 'score' that reads the weights it was given (checks which weights a curve scores)."""
    assert not module.training and not torch.is_grad_enabled()
    return {"w": float(module.flow.encoder.pre[0].weight[0, 0])}


def test_checkpoint_holds_the_ema_of_the_steps(ema_run):
    _, run, steps = ema_run
    assert len(steps) == 8  # 2 epochs x 1024 / 256
    ema = dict(steps[0])  # the first update copies the weights
    for w in steps[1:]:
        ema = {k: torch.lerp(ema[k], w[k], 1 - DECAY) for k in ema}
    ckpt = read_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
    for key, value in ema.items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, msg=key)
        torch.testing.assert_close(ckpt["current_model_state"][key], steps[-1][key], msg=key)
    assert not torch.equal(ema["flow.encoder.pre.0.weight"], steps[-1]["flow.encoder.pre.0.weight"])
    _, module, _ = load_model(run.run_dir / "checkpoints" / "last.ckpt")
    for key, p in module.named_parameters():  # what `molfff sample` gets
        torch.testing.assert_close(p.detach(), ema[key], msg=key)


def test_sample_curve_scores_training_weights_and_their_ema(ema_run):
    cfg, run, steps = ema_run
    rows = read_sample_curve(Path(cfg.run.root) / "curve.jsonl")
    assert [r["step"] for r in rows] == [4, 8]
    key = "flow.encoder.pre.0.weight"
    ema = steps[0][key]
    for k, w in enumerate(steps[1:], start=2):
        ema = torch.lerp(ema, w[key], 1 - DECAY)
        if k in (4, 8):
            row = rows[k // 4 - 1]
            assert row["raw"]["w"] == pytest.approx(float(steps[k - 1][key][0, 0]), abs=1e-7)
            assert row["ema"]["w"] == pytest.approx(float(ema[0, 0]), abs=1e-7)
    assert rows[0]["raw"]["w"] != pytest.approx(rows[0]["ema"]["w"], abs=1e-5)
    assert rows[1]["minutes"] >= rows[0]["minutes"] >= 0


def test_validation_and_best_checkpoint_use_the_ema(ema_run):
    cfg, run, _ = ema_run
    best = read_checkpoint(run.run_dir / "checkpoints" / "best.ckpt")
    key = next(k for k in best["callbacks"] if "'monitor': 'val/nll_exact'" in k)
    score = float(best["callbacks"][key]["best_model_score"])
    task = build_task(cfg.data, cfg.seed)
    _, module, _ = load_model(run.run_dir / "checkpoints" / "best.ckpt")
    ema_nll = task.evaluate(module, "val", cfg)["nll_exact"]
    module.load_state_dict(best["current_model_state"])
    raw_nll = task.evaluate(module, "val", cfg)["nll_exact"]
    assert score == pytest.approx(ema_nll, abs=1e-5)
    assert abs(raw_nll - ema_nll) > 1e-4  # 10x the tolerance: the test tells them apart


def test_sample_notes_the_ema(ema_run, capsys):
    _, run, _ = ema_run
    assert main(["sample", str(run.run_dir), "--n", "3"]) == 0
    assert "EMA weights (model.ema_decay=0.8)" in capsys.readouterr().err


@pytest.mark.parametrize("decay", ["-0.1", "1.0", "2"])
def test_bad_decay_is_one_error(decay, tmp_path):
    with pytest.raises(UserError, match="model.ema_decay must be in"):
        load_config("toy2d", small(tmp_path) + [f"model.ema_decay={decay}"])
