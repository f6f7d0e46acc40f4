"""Atomic checkpoint writes and safe, checked checkpoint reads."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from molfff.errors import UserError
from molfff.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, then renames it in place.

    A crash mid-write leaves the previous checkpoint intact instead of a truncated file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_write(path) as fh:
            torch.save(checkpoint, fh)


REQUIRED_KEYS = ("state_dict", "hyper_parameters")


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
