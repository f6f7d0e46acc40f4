"""From the ``data`` config section to a task (the registry of dense applications)."""

from __future__ import annotations

from collections.abc import Callable

from molfff.dense.splits import DenseTask
from molfff.dense.toy2d import toy2d_task
from molfff.errors import UserError
from molfff.train.config import DataConfig


def _toy2d(cfg: DataConfig, seed: int) -> DenseTask:
    return toy2d_task(cfg.density, cfg.n_train, cfg.n_val, cfg.n_test, seed)


TASKS: dict[str, Callable[[DataConfig, int], DenseTask]] = {"toy2d": _toy2d}


def build_task(cfg: DataConfig, seed: int) -> DenseTask:
    """The task ``data.name`` names; the same (config, seed) always gives the same splits."""
    if cfg.name not in TASKS:
        raise UserError(
            f"config key data.name: unknown task {cfg.name!r}; choose from {', '.join(TASKS)}"
        )
    return TASKS[cfg.name](cfg, seed)
