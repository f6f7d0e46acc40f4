"""From the ``data`` config section to a task: the registry of applications.

Dense applications return a :class:`~molfff.dense.splits.DenseTask` (trained by
:class:`~molfff.train.module.FFFModule`). Other applications return an object with
``datamodule(config)``, ``new_module(config)``, ``evaluate(module, split, config) -> dict`` and
``plot(module, run_dir) -> list[Path]`` (e.g. :class:`~molfff.train.molecules.MoleculeTraining`).
"""

from __future__ import annotations

from collections.abc import Callable

from molfff.dense.splits import DenseTask
from molfff.dense.toy2d import toy2d_task
from molfff.errors import UserError
from molfff.train.config import DataConfig


def _toy2d(cfg: DataConfig, seed: int) -> DenseTask:
    return toy2d_task(cfg.density, cfg.n_train, cfg.n_val, cfg.n_test, seed)


def _boltzmann(cfg: DataConfig, seed: int) -> DenseTask:
    from molfff.boltzmann.task import boltzmann_task

    return boltzmann_task(cfg.system, cfg.n_train, cfg.n_val, cfg.n_test, seed, cfg.root)


def _sbi(cfg: DataConfig, seed: int) -> DenseTask:
    try:
        from molfff.dense.sbi_task import sbi_training_task
    except ImportError as err:
        raise UserError(
            f"SBI tasks need the sbi extra ({err}); run scripts/setup.sh or "
            "pip install -e '.[sbi]' && pip install --no-deps sbibm==1.1.0"
        ) from None
    return sbi_training_task(cfg.task, cfg.budget, seed, cfg.n_test, cfg.c2st_observations)


def _miniboone(cfg: DataConfig, seed: int) -> DenseTask:
    from molfff.dense.tabular import miniboone_task

    return miniboone_task(cfg.root, cfg.n_train, cfg.n_val, cfg.n_test, seed)


def _qm9(cfg: DataConfig, seed: int):
    from molfff.train.molecules import MoleculeTraining

    return MoleculeTraining(cfg.n_train, cfg.n_val, cfg.n_test, seed)


TASKS: dict[str, Callable[[DataConfig, int], object]] = {
    "toy2d": _toy2d,
    "boltzmann": _boltzmann,
    "sbi": _sbi,
    "miniboone": _miniboone,
    "qm9": _qm9,
}


def build_task(cfg: DataConfig, seed: int):
    """The task ``data.name`` names; the same (config, seed) always gives the same splits."""
    if cfg.name not in TASKS:
        raise UserError(
            f"config key data.name: unknown task {cfg.name!r}; choose from {', '.join(TASKS)}"
        )
    return TASKS[cfg.name](cfg, seed)
