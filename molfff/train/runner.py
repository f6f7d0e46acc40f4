"""Training: the Lightning Trainer with the run's settings, and ``train()`` (fit, test, figures).

Everything task-specific comes from the :class:`~molfff.train.task.Task` (data module, module,
evaluation, figures); run folders and loading runs back are in :mod:`molfff.train.runs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import signal
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from molfff.errors import UserError
from molfff.files import json_safe
from molfff.train.checkpoint import AtomicCheckpointIO, read_checkpoint, upgrade_checkpoint
from molfff.train.config import Config, config_from_dict, save_config
from molfff.train.curves import plot_curves
from molfff.train.ema import ema_callbacks
from molfff.train.runs import make_run_dir
from molfff.train.task import HasCallbacks, Task, supports
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


def build(
    config: Config, task: Task | None = None
) -> tuple[L.LightningModule, L.LightningDataModule, Task]:
    """Model, data module and task for a config (same config and seed: same data and model)."""
    task = build_task(config.data, config.seed) if task is None else task
    dm = task.datamodule(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = task.new_module(config)
    return module, dm, task


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
    monitor: str | None = "val/nll_exact",
) -> L.Trainer:
    """A Lightning Trainer with the run's settings (checkpoints written atomically); ``best.ckpt``
    has the lowest ``monitor`` (None: no best.ckpt callback; :func:`train` copies ``last.ckpt``
    to it at the end)."""
    t = config.trainer
    # the EMA first: callbacks after it see this step's average at the end of a batch
    callbacks = ema_callbacks(config.model.ema_decay) + list(callbacks)
    if checkpoints:
        # separate callbacks: this Lightning's save_last only fires when a new best was saved
        folder = run_dir / "checkpoints"
        if monitor is not None:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=folder,
                    filename="best",
                    monitor=monitor,
                    mode="min",
                    save_top_k=1,
                    enable_version_counter=False,
                )
            )
        callbacks.append(
            ModelCheckpoint(
                dirpath=folder,
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
    return L.Trainer(
        max_epochs=t.max_epochs,
        max_steps=-1 if t.max_steps is None else t.max_steps,
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
        accumulate_grad_batches=t.accumulate_grad_batches,
        enable_model_summary=False,
    )


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
    task: Task | None = None,
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
        ckpt = upgrade_checkpoint(read_checkpoint(ckpt_path), ckpt_path)
        old = config_from_dict(ckpt["hyper_parameters"]["config"])
        # the checkpoint's weights fit the model they were trained as, and no other
        changed = [
            f"model.{f.name}: {getattr(old.model, f.name)!r} -> {getattr(config.model, f.name)!r}"
            for f in dataclasses.fields(old.model)
            if getattr(old.model, f.name) != getattr(config.model, f.name)
        ]
        # the data maps fitted into the weights' buffers (support, z-scoring)
        changed += [
            f"data.{key}: {getattr(old.data, key)!r} -> {getattr(config.data, key)!r}"
            for key in ("standardize", "unconstrain")
            if getattr(old.data, key) != getattr(config.data, key)
        ]
        if changed:
            raise UserError(
                f"{run_dir} holds weights of another model ({'; '.join(changed)}); resume it "
                "with its own model settings, or start a new run"
            )
        # the one-cycle schedule was laid out over the old length: a new one cannot continue it
        for key in ("max_epochs", "max_steps") if old.optim.schedule == "onecycle" else ():
            was = getattr(old.trainer, key)
            if was != getattr(config.trainer, key):
                was = "null" if was is None else was
                raise UserError(
                    f"{run_dir} was laid out for trainer.{key}={was} by its one-cycle "
                    f"schedule; resume it with trainer.{key}={was}, or start a new run"
                )
    else:
        ckpt_path = None
    module, dm, task = build(config, task)
    run_dir = make_run_dir(config) if run_dir is None else run_dir
    if supports(task, HasCallbacks):
        callbacks = [*callbacks, *task.callbacks(config, run_dir)]
    trainer = make_trainer(
        config,
        run_dir,
        callbacks,
        loggers=make_logger(config, run_dir),
        progress=progress,
        # the module names the metric of trainer.select_on (molecules: without the size term)
        monitor=module.checkpoint_monitor,
    )
    if trainer.is_global_zero:
        save_config(config, run_dir / "config.yaml")
    # Lightning's progress bars write to stdout; keep stdout for results (e.g. --json)
    with contextlib.redirect_stdout(sys.stderr):
        fit(trainer, module, datamodule=dm, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return TrainResult(run_dir, {})
    best = run_dir / "checkpoints" / "best.ckpt"
    last = run_dir / "checkpoints" / "last.ckpt"
    if module.checkpoint_monitor is None:  # trainer.select_on=last: the final weights
        shutil.copyfile(last, best)
    elif not best.is_file() and last.is_file():  # stopped (max_steps, max_time) before validating
        print(
            "note: training stopped before its first validation, so nothing was selected; "
            "best.ckpt holds the final weights",
            file=sys.stderr,
        )
        shutil.copyfile(last, best)
    if best.is_file():
        module.load_state_dict(read_checkpoint(best)["state_dict"])
    # evaluate where training ran (one device on rank 0; the CPU when that is where it ran)
    module = module.to(trainer.strategy.root_device)
    metrics = task.evaluate(module, "test", config)
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
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2))
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
