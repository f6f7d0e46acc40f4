"""Value checks on a built :class:`~molfff.train.config.Config` that types cannot express.

The tables name keys as ``section.key``; a key the task's ``data`` schema lacks is skipped.
Every failure is one :class:`molfff.errors.UserError` that names the key and the value given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from molfff.errors import UserError
from molfff.molecules.qm9 import MAX_ATOMS as QM9_MAX_ATOMS
from molfff.nn.resnet import ACTIVATIONS

if TYPE_CHECKING:
    from molfff.train.config import Config

CHOICES = {
    "optim.schedule": ("onecycle", "exponential", "constant"),
    "logger.wandb": ("offline", "online", "disabled"),
    "loss.decoder_jvp": ("forward", "reverse"),
    "loss.reconstruction_frame": ("data", "loc_scale"),
    "trainer.select_on": ("exact", "estimate", "last"),
    "model.activation": tuple(ACTIVATIONS),
}
POSITIVE = (
    "data.batch_size",
    "data.n_train",
    "data.n_val",
    "data.n_test",
    "data.budget",
    "optim.lr",
    "trainer.max_epochs",
    "trainer.max_steps",
    "loss.hutchinson_samples",
    "trainer.newton_max_iter",
    "beta_search.epochs",
    "trainer.eval_batch_size",
    "trainer.jacobian_chunk",
    "evaluation.curve_samples",
    "model.egnn_normalization_factor",
    "trainer.accumulate_grad_batches",
    "trainer.limit_val_batches",
    "model.loc_scale_width",
    "model.width",
    "model.pre_layers",
)
NON_NEGATIVE = (
    "loss.beta",
    "loss.noise_std",
    "optim.weight_decay",
    "trainer.newton_restarts",
    "evaluation.samples",
    "evaluation.curve_every_n_steps",
    "model.blocks",
    "model.egnn_node_index",
)
FINITE = ("model.type_offset",)  # any sign


def validate(config: Config) -> None:
    """Value checks that types cannot express; raises UserError naming the key."""
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise UserError(f"config key {key}: {value!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:  # finite: nan passes `value <= 0`, and inf is no setting either
        value = _get(config, key)
        if value is not None and not 0 < value < math.inf:
            raise UserError(f"config key {key} must be positive and finite, got {value}")
    for key in NON_NEGATIVE:
        value = _get(config, key)
        if not 0 <= value < math.inf:
            raise UserError(f"config key {key} must be non-negative and finite, got {value}")
    for key in FINITE:
        value = _get(config, key)
        if not math.isfinite(value):
            raise UserError(f"config key {key} must be finite, got {value}")
    interval = config.trainer.val_check_interval
    if interval is not None and interval <= 0:
        raise UserError(f"config key trainer.val_check_interval must be positive, got {interval}")
    if config.trainer.max_time is not None and not _is_duration(config.trainer.max_time):
        raise UserError(
            f"config key trainer.max_time: {config.trainer.max_time!r} is not DD:HH:MM:SS"
        )
    if config.loss.reconstruction_frame == "loc_scale" and not config.model.loc_scale:
        raise UserError(
            "config key loss.reconstruction_frame=loc_scale needs model.loc_scale: true"
        )
    index = config.model.egnn_node_index
    if index and config.data.name != "qm9":
        raise UserError(
            f"config key model.egnn_node_index is for molecules (data.name=qm9); "
            f"{config.data.name} ignores it: leave it at 0"
        )
    if index > QM9_MAX_ATOMS:
        raise UserError(
            f"config key model.egnn_node_index must be at most {QM9_MAX_ATOMS} (QM9's largest "
            f"molecule), got {index}"
        )
    if config.data.unconstrain and config.data.name != "sbi":
        raise UserError(
            f"config key data.unconstrain: only the sbi tasks know their data's support; "
            f"{config.data.name} does not: leave it false"
        )
    decay = config.model.ema_decay
    if decay is not None and not 0 <= decay < 1:
        raise UserError(f"config key model.ema_decay must be in [0, 1) or null, got {decay}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise UserError(
            f"config key optim.grad_clip must be positive or null, got {config.optim.grad_clip}"
        )


def _get(config: Config, key: str) -> Any:
    """``config.a.b`` for ``"a.b"``; None where the task's schema has no such key."""
    section, name = key.split(".")
    return getattr(getattr(config, section), name, None)


def _is_duration(value) -> bool:
    """Whether ``value`` is Lightning's ``DD:HH:MM:SS`` duration."""
    parts = str(value).split(":")
    return len(parts) == 4 and all(p.isdigit() for p in parts)
