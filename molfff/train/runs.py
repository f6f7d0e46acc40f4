"""Run folders and checkpoint lookup: where runs live and how to load them back.

A run folder ``runs/<name>/<timestamp>/`` holds ``config.yaml``, ``checkpoints/{last,best}.ckpt``,
``logs/version_k/metrics.csv`` (per-step and per-epoch logs, one version per (re)start),
``metrics.json`` (final test metrics), figures, and ``wandb/`` when W&B is enabled.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from molfff.errors import UserError
from molfff.train.checkpoint import module_from_checkpoint, read_checkpoint, upgrade_checkpoint
from molfff.train.config import Config, config_from_dict, legacy_config, read_yaml


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


def load_model(
    path: Path | None, root: Path = Path("runs")
) -> tuple[Config, L.LightningModule, Path]:
    """Config, trained module (eval mode) and checkpoint path from a checkpoint file or run
    folder (default: the latest run under ``root``).

    Raises:
        UserError: no such checkpoint, an unreadable one, or one this version cannot rebuild.
    """
    ckpt_path = resolve_checkpoint(path, root)
    ckpt = read_checkpoint(ckpt_path)
    try:
        ckpt = upgrade_checkpoint(ckpt, ckpt_path)
        config = config_from_dict(ckpt["hyper_parameters"]["config"])
        module = module_from_checkpoint(ckpt)
    except (KeyError, TypeError, RuntimeError, ValueError, UserError) as err:
        raise UserError(
            f"checkpoint {ckpt_path} does not match this molfff version "
            f"({' '.join(str(err).split())[:240]})"
        ) from None
    return config, module.eval(), ckpt_path


def load_run_config(run_dir: Path) -> Config:
    """The config a run folder was trained with (also one saved by an earlier version)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    return config_from_dict(legacy_config(read_yaml(path)))
