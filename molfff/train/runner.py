"""Training runs: run folders, the Lightning Trainer, evaluation, loading runs back.

A run folder ``runs/<name>/<timestamp>/`` holds ``config.yaml``, ``checkpoints/{last,best}.ckpt``,
``logs/version_k/metrics.csv`` (per-step and per-epoch logs, one version per (re)start),
``metrics.json`` (final test metrics), figures, and ``wandb/`` when W&B is enabled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from molfff.dense.splits import DenseTask
from molfff.errors import UserError
from molfff.train.checkpoint import AtomicCheckpointIO, read_checkpoint
from molfff.train.config import Config, from_dict, read_yaml, save_config, validate
from molfff.train.curves import plot_curves
from molfff.train.data import ArrayDataModule
from molfff.train.module import FFFModule
from molfff.train.tasks import build_task

log = logging.getLogger("molfff")


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (device summaries, tips) off the terminal."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def make_run_dir(config: Config) -> Path:
    """A fresh folder ``root/name/YYYY-mm-dd_HH-MM-SS[-k]``."""
    base = Path(config.run.root) / (config.run.name or config.name)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for k in range(1000):
        run_dir = base / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"cannot create a new run folder under {base}")


def build(config: Config, task=None) -> tuple[L.LightningModule, L.LightningDataModule, object]:
    """Model, data module and task for a config (same config and seed: same data)."""
    task = build_task(config.data, config.seed) if task is None else task
    if isinstance(task, DenseTask):
        module, dm = build_dense(config, task)
    else:
        dm = task.datamodule(config)
        L.seed_everything(config.seed, workers=True, verbose=False)
        module = task.new_module(config)
    return module, dm, task


def build_dense(config: Config, task: DenseTask) -> tuple[FFFModule, ArrayDataModule]:
    """FFFModule (standardised with training statistics) and ArrayDataModule of a dense task."""
    dm = ArrayDataModule(
        task.splits,
        config.data.batch_size,
        config.trainer.eval_batch_size,
        seed=config.seed,
        num_workers=config.data.num_workers,
    )
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = FFFModule(config.to_dict(), dm.dim, dm.cond_dim, task.particles)
    if config.data.standardize and task.particles is not None:
        raise UserError(
            "config key data.standardize: particle systems keep their units "
            "(per-coordinate scaling would break equivariance); set it to false"
        )
    if config.data.standardize:
        module.set_standardization(task.splits["train"].x, task.splits["train"].c)
    return module, dm


class EpochHistory(Callback):
    """Collects validation metrics after every validation run (for the beta search)."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.rows.append(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        )


def make_logger(config: Config, run_dir: Path):
    """CSV logs always; W&B as ``logger.wandb`` says (a clear error if it is not installed)."""
    loggers = [CSVLogger(save_dir=str(run_dir), name="logs")]  # logs/version_k per (re)start
    if config.logger.wandb != "disabled":
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:
            raise UserError(
                "W&B logging is on but wandb is not installed: "
                "pip install wandb, or set logger.wandb=disabled"
            ) from None
        loggers.append(
            WandbLogger(
                project=config.logger.project,
                save_dir=str(run_dir),
                offline=config.logger.wandb == "offline",
                name=run_dir.name,
                config=config.to_dict(),
            )
        )
    return loggers


def make_trainer(
    config: Config,
    run_dir: Path | None,
    callbacks: list[Callback] = (),
    *,
    checkpoints: bool = True,
    loggers=None,
    progress: bool | None = None,
) -> L.Trainer:
    """A Lightning Trainer with the run's settings (checkpoints written atomically)."""
    t = config.trainer
    callbacks = list(callbacks)
    if checkpoints:
        # two callbacks: this Lightning's save_last only fires when a new best was saved
        callbacks += [
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best",
                monitor="val/nll",
                mode="min",
                save_top_k=1,
                enable_version_counter=False,
            ),
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            ),
        ]
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=config.optim.grad_clip,
        enable_progress_bar=t.progress_bar if progress is None else progress,
        enable_checkpointing=checkpoints,
        logger=loggers if loggers is not None else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
        inference_mode=False,
        num_sanity_val_steps=0,
        limit_val_batches=t.limit_val_batches,
        val_check_interval=t.val_check_interval,
        max_time=t.max_time,
        enable_model_summary=False,
    )


def evaluate(module, task, split: str, config: Config) -> dict:
    """The task's metrics of a trained module on ``split`` (exact NLL first)."""
    if not isinstance(task, DenseTask):
        return task.evaluate(module, split, config)
    metrics = evaluate_dense(module, task, split, config.trainer.eval_batch_size)
    if task.extra_metrics is not None and split == "test":
        metrics.update(task.extra_metrics(module))
    return metrics


@torch.no_grad()
def evaluate_dense(
    module: FFFModule, task: DenseTask, split: str = "test", batch_size: int = 2048
) -> dict[str, float]:
    """Exact test NLL, reconstruction error and, where the task knows p, true NLL and KL."""
    data = task.splits[split]
    module.eval()
    param = next(module.parameters())
    nll, recon = [], []
    for i in range(0, data.x.shape[0], batch_size):
        batch = [data.x[i : i + batch_size].to(param)]
        if data.c is not None:
            batch.append(data.c[i : i + batch_size].to(param))
        out = module.evaluate(batch)
        nll.append(out["nll"].double().cpu())
        recon.append(out["reconstruction"].double().cpu())
    nll_t, recon_t = torch.cat(nll), torch.cat(recon)
    n = nll_t.numel()
    metrics = {
        "split": split,
        "n": n,
        "nll": nll_t.mean().item(),
        "nll_stderr": (nll_t.std() / math.sqrt(n)).item(),
        "reconstruction": recon_t.mean().item(),
    }
    if task.particles is not None:
        # flow-matching papers and the FFF paper's Table 1 leave out the latent's constant
        dims = module.flow.layout.dims(data.x[:1]).item()
        metrics["nll_without_latent_constant"] = metrics["nll"] - 0.5 * dims * math.log(2 * math.pi)
    if task.true_log_prob is not None:
        true_nll = -task.true_log_prob(data.x.double()).double()
        gap = nll_t - true_nll  # per-point log p - log q: mean is KL(p || q)
        metrics.update(
            {
                "true_nll": true_nll.mean().item(),
                "kl": gap.mean().item(),
                "kl_stderr": (gap.std() / math.sqrt(n)).item(),
            }
        )
    return metrics


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict


def fit(trainer: L.Trainer, module, **kwargs) -> None:
    """``trainer.fit(module, **kwargs)``, with Ctrl+C (SIGINT) raised as ``KeyboardInterrupt``.

    Lightning turns a ``KeyboardInterrupt`` during fitting into ``sys.exit(1)`` after its own
    teardown and leaves SIGINT ignored; the command line then exited with status 1 and no message.
    Here the interrupt reaches the caller (the CLI prints that the last checkpoint is intact and
    exits with 130) and the SIGINT handler is restored.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


def train(
    config: Config,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: list[Callback] = (),
    task=None,
) -> TrainResult:
    """Fit, then evaluate the best checkpoint on the test split and write figures.

    Args:
        config: the run configuration.
        run_dir: folder to use (a new one under ``run.root`` if omitted).
        resume: continue from ``run_dir/checkpoints/last.ckpt`` (optimizer, schedule, epoch).
        progress: override ``trainer.progress_bar``.
        callbacks: extra Lightning callbacks.
        task: the task's data, if already built from ``config.data``.
    """
    quiet_lightning()
    if resume:
        if run_dir is None:
            raise UserError("resume needs a run folder")
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        # a missing or corrupt file is reported before any work is done
        old = from_dict(Config, read_checkpoint(ckpt_path)["hyper_parameters"]["config"])
        if old.optim.schedule == "onecycle" and old.trainer.max_epochs != config.trainer.max_epochs:
            raise UserError(
                f"{run_dir} was laid out for {old.trainer.max_epochs} epochs by its "
                f"one-cycle schedule; resume it with trainer.max_epochs="
                f"{old.trainer.max_epochs}, or start a new run"
            )
    else:
        ckpt_path = None
    module, dm, task = build(config, task)
    run_dir = make_run_dir(config) if run_dir is None else run_dir
    trainer = make_trainer(
        config, run_dir, callbacks, loggers=make_logger(config, run_dir), progress=progress
    )
    if trainer.is_global_zero:
        save_config(config, run_dir / "config.yaml")
    # Lightning's progress bars write to stdout; keep stdout for results (e.g. --json)
    with contextlib.redirect_stdout(sys.stderr):
        fit(trainer, module, datamodule=dm, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return TrainResult(run_dir, {})
    best = run_dir / "checkpoints" / "best.ckpt"
    if best.is_file():
        module.load_state_dict(read_checkpoint(best)["state_dict"])
    module = module.cpu()
    metrics = evaluate(module, task, "test", config)
    metrics.update(
        {
            "epochs": trainer.current_epoch,
            "world_size": trainer.world_size,
            "parameters": sum(p.numel() for p in module.flow.parameters()),
        }
    )
    figures = task.plot(module, run_dir)
    curves = plot_curves(run_dir)
    metrics["figures"] = [str(p) for p in [*figures, *([curves] if curves else [])]]
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    finish_wandb(trainer, metrics)
    return TrainResult(run_dir, metrics)


def finish_wandb(trainer: L.Trainer, metrics: dict) -> None:
    """Log the test metrics to W&B as ``test/*`` and close the run, with W&B's closing lines
    ("You can sync this run ...") on stderr, so stdout keeps only results (``--json``)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            numbers = {
                f"test/{k}": v
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            with contextlib.redirect_stdout(sys.stderr):
                logger.log_metrics(numbers)
                logger.experiment.finish()


def find_latest_run(root: Path = Path("runs")) -> Path:
    """The most recently started run folder under ``root`` (one holding a config.yaml)."""
    runs = [
        p.parent for p in Path(root).glob("**/config.yaml") if (p.parent / "checkpoints").is_dir()
    ]
    if not runs:
        raise UserError(
            f"no runs under {root}/; train one first (molfff train toy2d) or pass a checkpoint"
        )
    return max(runs, key=lambda p: (p / "config.yaml").stat().st_mtime)


def resolve_checkpoint(path: Path | None, root: Path = Path("runs")) -> Path:
    """A checkpoint file from a file, a run folder (best, else last), a folder of runs (its
    latest run, e.g. ``runs/dw4``) or, with no path, the latest run under ``root``."""
    path = find_latest_run(root) if path is None else Path(path)
    runs_inside = path.is_dir() and any(path.glob("*/config.yaml"))
    if runs_inside and not (path / "checkpoints").is_dir():
        path = find_latest_run(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise UserError(f"{path} holds no checkpoints/best.ckpt or checkpoints/last.ckpt")
    if not path.exists():
        raise UserError(f"{path} does not exist (expected a checkpoint or a run folder)")
    return path


def module_from_checkpoint(ckpt: dict) -> L.LightningModule:
    """Rebuild the module a checkpoint was written by and load its weights."""
    hp = dict(ckpt["hyper_parameters"])
    kind = hp.pop("kind", "dense")
    if kind == "molecules":
        from molfff.train.molecules import MoleculeModule

        module = MoleculeModule(hp["config"], hp["node_distribution"])
    elif kind == "dense":
        module = FFFModule(hp["config"], hp["dim"], hp.get("cond_dim", 0), hp.get("particles"))
    else:
        raise KeyError(f"unknown module kind {kind!r}")
    module.load_state_dict(ckpt["state_dict"])
    return module


def load_model(path: Path | None, root: Path = Path("runs")):
    """Config and trained module from a checkpoint file or run folder (default: latest run)."""
    ckpt_path = resolve_checkpoint(path, root)
    ckpt = read_checkpoint(ckpt_path)
    try:
        config = from_dict(Config, ckpt["hyper_parameters"]["config"])
        validate(config)
        module = module_from_checkpoint(ckpt)
    except (KeyError, TypeError, RuntimeError, ValueError, UserError) as err:
        raise UserError(
            f"checkpoint {ckpt_path} does not match this molfff version "
            f"({' '.join(str(err).split())[:240]})"
        ) from None
    return config, module.eval(), ckpt_path


def load_run_config(run_dir: Path) -> Config:
    """The config a run folder was trained with."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    config = from_dict(Config, read_yaml(path))
    validate(config)
    return config
