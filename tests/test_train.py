"""The training stack: learning a known 2-D density, exact resume, beta search."""

import json
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from molfff.errors import UserError
from molfff.train.beta_search import judge, search_beta
from molfff.train.checkpoint import read_checkpoint
from molfff.train.config import load_config
from molfff.train.runner import train
from molfff.train.runs import load_model
from tests.helpers import QUIET, small


def test_toy2d_reaches_true_entropy(tmp_path):
    """A few epochs on the 8-mode ring: exact test NLL within 0.1 nats of the true entropy."""
    cfg = load_config(
        "toy2d", QUIET + [f"run.root={tmp_path}", "trainer.max_epochs=4", "data.n_test=5000"]
    )
    result = train(cfg)
    m = result.metrics
    assert abs(m["nll_exact"] - m["true_nll"]) < 0.1, m
    assert m["kl_exact"] > -3 * m["kl_exact_stderr"]  # KL(p||q) >= 0 up to noise
    assert m["reconstruction"] < 0.05
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["nll_exact"] == m["nll_exact"]
    assert [p.split("/")[-1] for p in m["figures"]] == ["samples.png", "density.png", "curves.png"]
    assert (result.run_dir / "samples.png").stat().st_size > 10_000


class StopAfter(Callback):
    """Simulates an interruption: stops training after ``epochs`` epochs."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


@pytest.mark.parametrize("ema_decay", ["null", "0.9"])
def test_resume_matches_uninterrupted_run(tmp_path, ema_decay):
    """A 4-epoch run interrupted after 2 and resumed == 4 epochs straight: same weights (with
    EMA: the same average, training weights and averaging state)."""
    cfg = load_config("toy2d", small(tmp_path, epochs=4) + [f"model.ema_decay={ema_decay}"])
    straight = train(cfg)
    first = train(cfg, callbacks=[StopAfter(2)])
    assert first.metrics["epochs"] == 2
    resumed = train(cfg, run_dir=first.run_dir, resume=True)
    assert resumed.metrics["epochs"] == 4
    a = read_checkpoint(straight.run_dir / "checkpoints" / "last.ckpt")
    b = read_checkpoint(resumed.run_dir / "checkpoints" / "last.ckpt")
    ema = ema_decay != "null"
    parts = ["state_dict"] + (["current_model_state", "averaging_state"] if ema else [])
    assert ("current_model_state" in b) == ema
    for part in parts:
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0, msg=key)
    assert straight.metrics["nll_exact"] == resumed.metrics["nll_exact"]
    logs = sorted((first.run_dir / "logs").glob("version_*/metrics.csv"))
    assert len(logs) == 2  # one log per (re)start, the first one kept
    same_model = [f"model.ema_decay={ema_decay}"]
    longer = load_config("toy2d", small(tmp_path, epochs=6) + same_model)
    with pytest.raises(UserError, match="one-cycle"):
        train(longer, run_dir=first.run_dir, resume=True)
    capped = load_config("toy2d", small(tmp_path, epochs=4) + ["trainer.max_steps=5"] + same_model)
    with pytest.raises(UserError, match="trainer.max_steps=null"):
        train(capped, run_dir=first.run_dir, resume=True)
    # another architecture cannot load these weights: refused before the folder is touched
    wider = load_config("toy2d", small(tmp_path, epochs=4) + ["model.width=17"] + same_model)
    saved = (first.run_dir / "config.yaml").read_text()
    with pytest.raises(UserError, match=r"another model \(model.width: \d+ -> 17\)"):
        train(wider, run_dir=first.run_dir, resume=True)
    assert (first.run_dir / "config.yaml").read_text() == saved
    # nor can another data map (the z-scoring fitted into the weights' buffers)
    raw = load_config("toy2d", small(tmp_path, epochs=4) + ["data.standardize=false"] + same_model)
    with pytest.raises(UserError, match=r"another model \(data.standardize: True -> False\)"):
        train(raw, run_dir=first.run_dir, resume=True)


def test_max_steps_caps_training_and_the_one_cycle_schedule(tmp_path):
    """50 epochs of 8 batches, capped at 11 steps: training stops at step 11, and the one-cycle
    schedule is laid out over those 11 steps, not over 50 epochs' 400."""
    cfg = load_config(
        "toy2d", small(tmp_path, epochs=50) + ["trainer.max_steps=11", "data.batch_size=256"]
    )
    run = train(cfg)
    ckpt = read_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 11
    (sched,) = ckpt["lr_schedulers"]
    assert sched["total_steps"] == 11


def test_stopping_before_the_first_validation_keeps_the_final_weights(tmp_path, capsys):
    cfg = load_config("toy2d", small(tmp_path, epochs=3) + ["trainer.max_steps=3"])
    run = train(cfg)
    best = read_checkpoint(run.run_dir / "checkpoints" / "best.ckpt")
    assert best["global_step"] == 3
    assert "before its first validation" in capsys.readouterr().err


def test_checkpoint_round_trip(tmp_path):
    run = train(load_config("toy2d", small(tmp_path, epochs=1)))
    config, module, ckpt = load_model(run.run_dir)
    assert ckpt.name == "best.ckpt" and config.name == "toy2d"
    x = module.sample(7, generator=torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and torch.isfinite(module.log_prob(x)).all()


def test_judge_flags_unstable_and_poor_reconstruction():
    assert judge([3.0, 2.5, 2.4], [0.01, 0.005, 0.004], 2, 1.0, 0.01) == (True, "stable")
    assert not judge([3.0, 2.0, 5.0], [0.01] * 3, 2, 1.0, 0.01)[0]
    assert not judge([3.0, float("nan")], [0.01] * 2, 2, 1.0, 0.01)[0]
    assert not judge([3.0, 2.9], [0.5, 0.4], 2, 1.0, 0.01)[0]


def test_beta_search_rejects_too_small_beta(tmp_path):
    """Appendix B.4: at tiny beta g stops inverting f (reconstruction error); the search
    must reject it and pick a beta whose run is stable."""
    cfg = load_config(
        "toy2d",
        small(tmp_path, n_train=4000)
        + ["beta_search.betas=[0.0001, 100.0]", "beta_search.epochs=3", "optim.lr=0.005"],
    )
    lines = []
    beta, trials = search_beta(cfg, report=lines.append)
    assert [t.beta for t in trials] == [0.0001, 100.0]
    assert all(len(t.nll) == 3 for t in trials)
    assert not trials[0].stable and "reconstruction" in trials[0].reason
    assert trials[1].stable
    assert beta == 100.0 and "picked beta = 100" in lines[-1]


def test_beta_search_with_select_on_last_judges_the_estimate(tmp_path):
    """``trainer.select_on=last`` monitors nothing; the search must still see an NLL (it saw
    none and called every beta unstable)."""
    cfg = load_config(
        "toy2d",
        small(tmp_path, n_train=1000)
        + ["beta_search.betas=[10.0]", "beta_search.epochs=1", "trainer.select_on=last"],
    )
    _, (trial,) = search_beta(cfg, report=lambda line: None)
    assert len(trial.nll) == 1 and math.isfinite(trial.nll[0])
    assert trial.stable, trial.reason


@pytest.mark.parametrize("schedule", ["exponential", "constant"])
def test_other_schedules_run(tmp_path, schedule):
    cfg = load_config("toy2d", small(tmp_path, epochs=2) + [f"optim.schedule={schedule}"])
    m = train(cfg).metrics
    assert m["epochs"] == 2 and math.isfinite(m["nll_exact"])


def test_ctrl_c_reaches_the_caller_and_leaves_the_checkpoint_intact(tmp_path):
    """Lightning turns Ctrl+C into sys.exit(1) and ignores SIGINT afterwards; the CLI then exited
    with status 1 and no message. The interrupt must reach the caller (the CLI prints the resume
    hint and exits 130), with the SIGINT handler restored and the last checkpoint unchanged."""
    import signal

    class CtrlC(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(load_config("toy2d", small(tmp_path, epochs=2, n_train=500)), callbacks=[CtrlC()])
    assert signal.getsignal(signal.SIGINT) is handler
    (last,) = tmp_path.glob("toy2d/*/checkpoints/last.ckpt")
    assert read_checkpoint(last)["epoch"] == 0


@pytest.mark.parametrize("select_on", ["exact", "estimate"])
def test_select_on_names_the_validation_nll_of_best_ckpt(tmp_path, select_on):
    """``trainer.select_on`` picks the monitored NLL; validation skips the Newton solve when the
    estimate selects, and the test split reports both either way."""
    cfg = load_config("toy2d", small(tmp_path, epochs=2) + [f"trainer.select_on={select_on}"])
    result = train(cfg)
    best = read_checkpoint(result.run_dir / "checkpoints" / "best.ckpt")
    assert any(f"'monitor': 'val/nll_{select_on}'" in k for k in best["callbacks"])
    header = next((result.run_dir / "logs").glob("version_*/metrics.csv")).read_text()
    header = header.splitlines()[0].split(",")
    assert "val/nll_estimate" in header
    assert ("val/nll_exact" in header) == (select_on == "exact")
    assert math.isfinite(result.metrics["nll_exact"]) and "nll_estimate" in result.metrics


def test_select_on_last_keeps_the_final_weights(tmp_path):
    """``trainer.select_on=last``: no selection; best.ckpt (which evaluation, sampling and the
    commands read) holds the weights of the last epoch, also when an earlier one validated
    better."""
    cfg = load_config("toy2d", small(tmp_path, epochs=3) + ["trainer.select_on=last"])
    result = train(cfg)
    ckpts = result.run_dir / "checkpoints"
    best, last = (read_checkpoint(ckpts / f"{n}.ckpt") for n in ("best", "last"))
    assert best["epoch"] == last["epoch"] == 2
    for key, value in last["state_dict"].items():
        assert torch.equal(best["state_dict"][key], value), key
    header = next((result.run_dir / "logs").glob("version_*/metrics.csv")).read_text()
    assert "val/nll_exact" not in header.splitlines()[0].split(",")
    assert math.isfinite(result.metrics["nll_exact"])


@pytest.mark.slow
def test_exact_density_of_a_trained_toy_model_integrates_to_one(tmp_path):
    """A toy model trained with a weak reconstruction weight (beta = 2): g(f(x)) misses x, and
    the paper's estimate no longer integrates to 1 over [-5, 5]^2; the exact density does
    (measured: 0.99999 against 0.917)."""
    cfg = load_config(
        "toy2d", QUIET + [f"run.root={tmp_path}", "loss.beta=2", "trainer.max_epochs=10"]
    )
    m = train(cfg).metrics
    assert m["density_integral_exact_converged"] == 1.0
    assert abs(m["density_integral_exact"] - 1) < 5e-3
    assert abs(m["density_integral_estimate"] - 1) > 0.02
    assert m["kl_exact"] < m["kl_estimate"]


def test_metrics_json_is_standard_json():
    """inf and nan (e.g. no preimage found at all) are written as null, not Infinity/NaN."""
    from molfff.files import json_safe

    text = json.dumps(json_safe({"a": math.inf, "b": [math.nan, 1.5], "c": {"d": -math.inf}}))
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
    }


def test_accumulated_micro_batches_make_one_step_with_their_own_noise(tmp_path):
    """trainer.accumulate_grad_batches=2: one optimizer step per two batches, and the two
    micro-batches of a step draw different noise (seeds differ only by the micro index)."""
    from molfff.train.module import step_generator

    cfg = load_config(
        "toy2d", small(tmp_path, epochs=1, n_train=1024) + ["trainer.accumulate_grad_batches=2"]
    )
    steps = []

    class Steps(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append(trainer.global_step)

    train(cfg, callbacks=[Steps()])
    assert steps == [0, 1, 1, 2]  # 1024 / 256 = 4 batches, 2 optimizer steps
    cpu = torch.device("cpu")
    draw = [torch.randn(3, generator=step_generator(0, 5, 0, cpu, micro)) for micro in (0, 1)]
    assert not torch.equal(*draw)
    old = torch.Generator().manual_seed((0 * 1_000_003 + 5) * 1009 + 0)  # seeds before micro
    torch.testing.assert_close(draw[0], torch.randn(3, generator=old))
