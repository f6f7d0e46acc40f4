"""Checkpoints: atomic writes, safe and checked reads, and the module a checkpoint rebuilds.

A checkpoint names the class of its LightningModule (``class_path``, ``module:qualname``) next to
Lightning's ``hyper_parameters`` (the class's init arguments, from ``save_hyperparameters``), so
:func:`module_from_checkpoint` rebuilds any task's module without knowing the task.
Checkpoints written before class paths (a ``kind`` hyper-parameter instead) are upgraded on
reading by :func:`upgrade_checkpoint`, the one place that knows the old layout.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from molfff.errors import UserError
from molfff.files import atomic_write

REQUIRED_KEYS = ("state_dict", "hyper_parameters")

# checkpoints before class paths: hyper-parameter `kind` -> class, and renamed buffers
LEGACY_CLASS_PATHS = {
    "dense": "molfff.train.module:FFFModule",
    "molecules": "molfff.train.molecules:MoleculeModule",
}
LEGACY_STATE_KEYS = {
    "shift": "standardize_x.shift",
    "scale": "standardize_x.scale",
    "c_shift": "standardize_c.shift",
    "c_scale": "standardize_c.scale",
}


def class_path(cls: type) -> str:
    """``module:qualname`` of a class, as checkpoints store it."""
    return f"{cls.__module__}:{cls.__qualname__}"


class SavesClassPath:
    """Mixin for LightningModules: checkpoints record the module's class path.

    The class must take exactly its saved hyper-parameters as init arguments (call
    ``self.save_hyperparameters()`` first thing in ``__init__``).
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_path"] = class_path(type(self))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, then renames it in place.

    A crash mid-write leaves the previous checkpoint intact instead of a truncated file. Reads
    (e.g. on resume) upgrade checkpoints of earlier molfff versions.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_write(path) as fh:
            torch.save(checkpoint, fh)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return upgrade_checkpoint(read_checkpoint(Path(path)), Path(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a molfff checkpoint with ``weights_only=True``; bad files raise one UserError.

    A file that is not a zip archive (empty, cut short, text, a renamed xyz) is named as such
    before ``torch.load``, whose messages for it (``105``, ``EOFError``) say nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.load's own errors say "105" or "EOFError" here
        raise UserError(
            f"checkpoint {path} cannot be read (not a zip archive as torch.save writes: "
            "an empty, truncated or foreign file)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        text = str(err).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
        raise UserError(f"checkpoint {path} cannot be read ({reason[:160]})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise UserError(
            f"checkpoint {path} is not a molfff training checkpoint "
            f"(missing {', '.join(k for k in REQUIRED_KEYS if k not in ckpt)})"
            if isinstance(ckpt, dict)
            else f"checkpoint {path} is not a molfff training checkpoint"
        )
    return ckpt


def upgrade_checkpoint(ckpt: dict[str, Any], path: Path | str = "checkpoint") -> dict[str, Any]:
    """A checkpoint of an earlier molfff version in today's layout (in place; returned).

    Before class paths, ``hyper_parameters["kind"]`` (``dense``, the default, or ``molecules``)
    named the module, dense modules kept their standardisation as buffers ``shift, scale,
    c_shift, c_scale``, and the config's ``data`` section held every application's keys.

    Raises:
        UserError: the checkpoint names a kind this version does not know.
    """
    from molfff.train.config import legacy_config

    hp = ckpt["hyper_parameters"]
    if "config" in hp and isinstance(hp["config"], dict):
        hp["config"] = legacy_config(hp["config"])
    if "class_path" in ckpt:
        return ckpt
    kind = hp.pop("kind", "dense")
    if kind not in LEGACY_CLASS_PATHS:
        raise UserError(
            f"{path} was written by a molfff version with a module kind {kind!r} that this "
            f"version does not know (known: {', '.join(LEGACY_CLASS_PATHS)})"
        )
    ckpt["class_path"] = LEGACY_CLASS_PATHS[kind]
    ckpt["state_dict"] = {LEGACY_STATE_KEYS.get(k, k): v for k, v in ckpt["state_dict"].items()}
    return ckpt


def import_module_class(path: str) -> type[L.LightningModule]:
    """The LightningModule class ``module:qualname`` names.

    Raises:
        UserError: the module or class does not exist, or is not a LightningModule.
    """
    module_name, _, qualname = str(path).partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"checkpoint class {path!r} cannot be imported ({err})") from None
    if not (isinstance(obj, type) and issubclass(obj, L.LightningModule)):
        raise UserError(f"checkpoint class {path!r} is not a LightningModule")
    return obj


def module_from_checkpoint(ckpt: dict[str, Any]) -> L.LightningModule:
    """Rebuild the module a checkpoint was written by (its class and init arguments) and load
    its weights. The checkpoint must have passed :func:`upgrade_checkpoint`."""
    cls = import_module_class(ckpt["class_path"])
    module = cls(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    return module
