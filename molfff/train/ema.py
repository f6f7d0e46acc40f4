"""Exponential moving average (EMA) of the weights, as EDM and GeoLDM sample from.

Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` around PyTorch's
:class:`~torch.optim.swa_utils.AveragedModel` with
:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`: after every optimizer step
``w_ema <- decay * w_ema + (1 - decay) * w`` (the first step copies ``w``). Validation runs on
the averaged weights (so the "best" checkpoint is chosen by the metric of the weights that get
used), and a checkpoint's ``state_dict`` holds the averaged weights, the training weights under
``current_model_state`` and the average's step count under ``averaging_state``: loading a
checkpoint for sampling or evaluation gives the EMA weights, and ``--resume`` restores both
exactly.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

#: checkpoint key of the training (non-averaged) weights, written by WeightAveraging
CURRENT_STATE_KEY = "current_model_state"


class EMA(WeightAveraging):
    """EMA of the parameters with ``decay`` in (0, 1), updated after every optimizer step.

    Buffers are not averaged (``use_buffers=False``): molfff's buffers are fixed before training
    (standardisation, log p(n) with ``-inf`` entries that an average would turn into NaN).
    The average lives on the training device (Lightning calls ``setup`` before it moves the
    module there).
    """

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)


def ema_callbacks(decay: float | None) -> list[EMA]:
    """``[EMA(decay)]`` when ``model.ema_decay`` asks for one, else ``[]`` (null or 0: off)."""
    return [EMA(decay)] if decay else []


def ema_note(decay: float | None) -> str | None:
    """The line telling a user that a checkpoint's weights are its EMA (None without EMA)."""
    if not decay:
        return None
    return f"using the checkpoint's EMA weights (model.ema_decay={decay}), not the last step's"
