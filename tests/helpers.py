"""Shared settings for tests that train: small, quiet, no W&B; and scripts loaded as modules."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (scripts are not a package).

    The scripts folder is put on ``sys.path``, as running a script does, so that scripts
    importing a sibling script load here too.
    """
    if str(SCRIPTS) not in sys.path:
        sys.path.append(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUIET = ["logger.wandb=disabled", "trainer.progress_bar=false", "trainer.accelerator=cpu"]


def small(root, epochs: int = 2, n_train: int = 2000) -> list[str]:
    """Overrides for a quick toy2d run writing under ``root``."""
    return QUIET + [
        f"run.root={root}",
        f"trainer.max_epochs={epochs}",
        f"data.n_train={n_train}",
        "data.n_val=500",
        "data.n_test=1000",
        "model.width=32",
        "model.blocks=2",
    ]
