"""Choosing beta, the reconstruction weight (Draxler et al. 2024, appendix B.4).

Too small a beta lets encoder and decoder drift apart: the reconstruction error grows and the
exact NLL becomes unstable (it can even look deceptively good while g is no inverse of f). Too
large a beta slows likelihood learning. The procedure: short runs over beta on a grid of factors
of ten, watching the *exact* validation NLL and the reconstruction error (never the surrogate's
value), then keep the best NLL among the stable runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from molfff.errors import UserError
from molfff.train.config import Config
from molfff.train.runner import EpochHistory, build, fit, make_trainer, quiet_lightning
from molfff.train.task import BetaSearchable, Task, supports
from molfff.train.tasks import build_task


@dataclass
class BetaTrial:
    """One short run: its validation history and verdict."""

    beta: float
    nll: list[float]
    reconstruction: list[float]
    stable: bool
    reason: str

    @property
    def final_nll(self) -> float:
        return self.nll[-1] if self.nll else math.inf


def candidate_betas(config: Config) -> list[float]:
    """``beta_search.betas``, or ``loss.beta · 10^k`` for ``|k| <= beta_search.factors``."""
    if config.beta_search.betas:
        return sorted(config.beta_search.betas)
    k = config.beta_search.factors
    return [config.loss.beta * 10.0**i for i in range(-k, k + 1)]


def judge(
    nll: list[float], recon: list[float], dim: int, nll_jump: float, recon_tol: float
) -> tuple[bool, str]:
    """Stable: finite NLL that never rises ``nll_jump`` above its best, small final recon/dim."""
    if not nll or not all(math.isfinite(v) for v in nll + recon):
        return False, "non-finite NLL or reconstruction"
    rise = max(v - min(nll[: i + 1]) for i, v in enumerate(nll))
    if rise > nll_jump:
        return False, f"NLL rose {rise:.2f} nats above its best"
    if recon[-1] / dim > recon_tol:
        return False, f"reconstruction {recon[-1] / dim:.3g}/dim > {recon_tol:g}"
    return True, "stable"


def run_trial(config: Config, beta: float, task: Task | None = None) -> BetaTrial:
    """Train ``beta_search.epochs`` epochs at ``beta`` without checkpoints or loggers."""
    cfg = dataclasses.replace(
        config,
        loss=dataclasses.replace(config.loss, beta=beta),
        # trials are short and run on one device, also when the main run is distributed
        trainer=dataclasses.replace(
            config.trainer,
            max_epochs=config.beta_search.epochs,
            check_val_every_n_epoch=1,
            devices=1,
            num_nodes=1,
            strategy="auto",
        ),
    )
    task = searchable_task(config, task)
    module, dm, task = build(cfg, task)
    history = EpochHistory()
    trainer = make_trainer(cfg, None, [history], checkpoints=False, loggers=False, progress=False)
    try:
        fit(trainer, module, datamodule=dm)
    except (RuntimeError, ValueError) as err:  # e.g. NaN in a linear algebra routine
        return BetaTrial(beta, [], [], False, f"training failed: {str(err)[:80]}")
    # trainer.select_on=last monitors nothing: judge on the estimate, which validation always logs
    key = module.checkpoint_monitor or "val/nll_estimate"
    nll = [row.get(key, math.nan) for row in history.rows]
    recon = [row.get("val/reconstruction", math.nan) for row in history.rows]
    stable, reason = judge(
        nll, recon, task.data_dim(), config.beta_search.nll_jump, config.beta_search.recon_tol
    )
    return BetaTrial(beta, nll, recon, stable, reason)


def searchable_task(config: Config, task: Task | None = None) -> Task:
    """The config's task, checked to support the search before any data are loaded.

    Raises:
        UserError: the task has no beta search (e.g. molecules).
    """
    task = build_task(config.data, config.seed) if task is None else task
    if not supports(task, BetaSearchable):
        raise UserError(
            f"the beta search is implemented for dense and particle tasks; for "
            f"{config.data.name}, compare runs at several loss.beta by hand"
        )
    return task


def search_beta(
    config: Config, report=print, task: Task | None = None
) -> tuple[float, list[BetaTrial]]:
    """Run the trials and pick a beta: the best final NLL among stable ones.

    If none is stable, the largest beta tried is returned (and the report says so): instability
    at small beta is the usual failure, and a larger one is the safe direction.
    """
    quiet_lightning()
    task = searchable_task(config, task)
    trials = []
    for beta in candidate_betas(config):
        trial = run_trial(config, beta, task)
        trials.append(trial)
        recon = f"{trial.reconstruction[-1]:.4g}" if trial.reconstruction else "-"
        report(f"beta {beta:<10g} val NLL {trial.final_nll:9.4f}  recon {recon:>9}  {trial.reason}")
    stable = [t for t in trials if t.stable]
    if stable:
        best = min(stable, key=lambda t: t.final_nll)
        report(f"picked beta = {best.beta:g} (lowest validation NLL among stable runs)")
    else:
        best = max(trials, key=lambda t: t.beta)
        report(
            f"no beta was stable; using the largest, {best.beta:g}: try larger values "
            f"(beta_search.betas) or a longer search (beta_search.epochs)"
        )
    return best.beta, trials
