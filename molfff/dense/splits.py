"""Containers for dense data: one split, and a task's splits with what it knows about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class Split:
    """One split: data ``x`` ``(B, D)`` and optional conditioning ``c`` ``(B, C)``."""

    x: Tensor
    c: Tensor | None = None

    def __post_init__(self):
        if self.x.dim() != 2:
            raise ValueError(f"x must be (B, D), got {tuple(self.x.shape)}")
        if self.c is not None and (self.c.dim() != 2 or self.c.shape[0] != self.x.shape[0]):
            raise ValueError(
                f"c must be (B, C) with B={self.x.shape[0]}, got {tuple(self.c.shape)}"
            )
        if not torch.isfinite(self.x).all() or (
            self.c is not None and not torch.isfinite(self.c).all()
        ):
            raise ValueError("data contains NaN or infinite values")

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.x,) if self.c is None else (self.x, self.c)


@dataclass
class DenseData:
    """Splits of a dense data set and what the task knows about them.

    Attributes:
        name: e.g. ``toy2d/ring``.
        splits: ``train``, ``val`` and ``test`` :class:`Split` s.
        true_log_prob: exact reference log-density ``(B, D) -> (B,)``, if known.
        particles: ``(n, d)`` when rows are n particles in d dimensions.
        extra_metrics: task-specific evaluation of a trained model (one with ``sample`` and
            ``log_prob`` in original units), run after training, e.g. posterior C2ST.
        support: ``(lower, upper)`` ``(D,)`` each, where ``x`` is known to lie (``±inf``: no
            bound), e.g. a prior's box; used by ``data.unconstrain``.
    """

    name: str
    splits: dict[str, Split]
    true_log_prob: Callable[[Tensor], Tensor] | None = None
    particles: tuple[int, int] | None = None
    extra_metrics: Callable[[object], dict] | None = None
    support: tuple[Tensor, Tensor] | None = None

    def plot(self, model, out_dir: Path) -> list[Path]:
        """Figures of samples against data (and densities, in 2-D); returns the files written."""
        from molfff.dense.plots import plot_2d

        if self.splits["test"].x.shape[1] != 2 or self.splits["test"].c is not None:
            return []
        return plot_2d(model, self.splits["test"].x, self.true_log_prob, out_dir)
