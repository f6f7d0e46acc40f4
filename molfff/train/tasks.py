"""The registry of applications: ``data.name`` -> :class:`~molfff.train.task.Task` class.

Adding an application: write one task module (a class with the :class:`Task` methods and a
``data_config`` schema) and one config, and add a line here; or give the class's path as
``data.name: my_package.my_module:MyTask`` without touching molfff.
"""

from __future__ import annotations

import importlib

from molfff.errors import UserError
from molfff.train.config import DataConfig
from molfff.train.task import Task

TASKS: dict[str, str] = {
    "toy2d": "molfff.train.dense:Toy2dTask",
    "sbi": "molfff.train.dense:SbiTask",
    "miniboone": "molfff.train.dense:MiniBooNETask",
    "boltzmann": "molfff.train.boltzmann:BoltzmannTask",
    "qm9": "molfff.train.molecules:QM9Task",
}


def task_class(name: str) -> type[Task]:
    """The task class registered as ``name`` (or named by a ``module:Class`` path).

    Raises:
        UserError: unknown name (the message lists the registered ones) or a path that does not
            import.
    """
    path = TASKS.get(name, name if ":" in name else None)
    if path is None:
        raise UserError(
            f"config key data.name: unknown task {name!r}; choose from {', '.join(TASKS)}"
        )
    module_name, _, qualname = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as err:
        raise UserError(f"config key data.name: task {name!r} cannot be imported ({err})") from None
    if not isinstance(getattr(cls, "data_config", None), type):
        raise UserError(f"config key data.name: {name!r} is not a task (no data_config schema)")
    return cls


def build_task(cfg: DataConfig, seed: int) -> Task:
    """The task ``data.name`` names (data are loaded on first use, see ``Task.prepare``)."""
    return task_class(cfg.name)(cfg, seed)
