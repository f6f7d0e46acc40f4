"""Sample metrics during training: a learning curve of what the samples look like.

For generative models of molecules the validation NLL says little about whether samples are
chemically right, so :class:`SampleCurve` scores samples every ``evaluation.curve_every_n_steps``
optimizer steps: of the training weights ("raw") and, when ``model.ema_decay`` is set, of the
exponential moving average ("ema", the weights EDM and GeoLDM sample from). Each point is one
JSON line in ``RUN/sample_curve.jsonl`` (step, wall-clock minutes since training started,
validation and earlier points included, and the scores),
is logged to the run's loggers as ``samples_raw/*`` and ``samples_ema/*``, and redrawn into
``RUN/sample_curve.png``. The same seed draws every point, so points differ by the weights only.

Scoring runs on global rank 0 at the end of a training batch, where the module holds the training
weights and the EMA callback's copy holds the average (Lightning swaps them only during
validation). A resumed run appends to the same file; its minutes continue from the last point
(the time between the last checkpoint and the interruption is counted twice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging

from molfff.files import json_safe

#: the scores drawn in sample_curve.png, with their panel titles
PANELS = (
    ("atom_stability", "atom stability"),
    ("molecule_stability", "molecule stability"),
    ("validity", "validity (RDKit)"),
    ("valid_unique", "valid and unique"),
)


def read_sample_curve(path: Path) -> list[dict]:
    """The points of a ``sample_curve.jsonl`` (empty if there is none); later points of a step
    replace earlier ones (a resumed run can repeat steps after its last checkpoint)."""
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def plot_sample_curve(path: Path, title: str = "") -> Path | None:
    """Draw ``sample_curve.png`` next to ``path`` (the jsonl); None if it has no points."""
    rows = read_sample_curve(path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, (key, label) in zip(axes[0], PANELS, strict=True):
        for which, style in (("raw", "o-"), ("ema", "s--")):
            ys = [r.get(which, {}).get(key) for r in rows]
            if any(y is not None for y in ys):
                pts = [(s, y) for s, y in zip(steps, ys, strict=True) if y is not None]
                ax.plot(*zip(*pts, strict=True), style, label=which, ms=4)
        ax.set_title(label)
        ax.set_xlabel("optimizer step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(title="weights")
    n = rows[-1].get("samples")
    minutes = rows[-1].get("minutes")
    fig.suptitle(
        f"{title}{n} samples per point; last point after {minutes} min of training", fontsize=10
    )
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def ema_weights(trainer: L.Trainer) -> torch.nn.Module | None:
    """The EMA copy of the module (outside validation: the averaged weights), or None."""
    for cb in trainer.callbacks:
        if isinstance(cb, WeightAveraging) and cb._average_model is not None:
            return cb._average_model.module
    return None


class SampleCurve(Callback):
    """Score samples every ``every_n_steps`` optimizer steps (see the module docstring).

    Args:
        score: ``score(module) -> dict`` of metrics of the module's samples (the module in eval
            mode, gradients off); keys of :data:`PANELS` are drawn.
        every_n_steps: steps between points (positive).
        path: the ``sample_curve.jsonl`` to append to.
        samples: number of samples each point uses (recorded with the point).
        title: figure title prefix.

    Raises:
        ValueError: if ``every_n_steps`` is not positive.
    """

    def __init__(
        self,
        score: Callable[[L.LightningModule], dict],
        every_n_steps: int,
        path: Path,
        samples: int,
        title: str = "",
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.score, self.every, self.path = score, every_n_steps, Path(path)
        self.samples, self.title = samples, title
        self._start = 0.0
        self._offset = 0.0
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        rows = read_sample_curve(self.path)
        self._offset = float(rows[-1]["minutes"]) if rows else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # step 0: micro-batches (trainer.accumulate_grad_batches) before the first optimizer
        # step end batches too; without them no batch ends at step 0
        if step in (0, self._last_step) or step % self.every or not trainer.is_global_zero:
            return
        self._last_step = step
        minutes = self._offset + (time.perf_counter() - self._start) / 60
        row: dict = {"step": step, "minutes": round(minutes, 2), "samples": self.samples}
        candidates = {"raw": pl_module}
        ema = ema_weights(trainer)
        if ema is not None:
            candidates["ema"] = ema
        for which, module in candidates.items():
            was_training = module.training
            module.eval()
            try:
                with torch.no_grad():
                    row[which] = self.score(module)
            finally:
                module.train(was_training)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(json_safe(row)) + "\n")
        flat = {
            f"samples_{which}/{k}": float(v)
            for which in candidates
            for k, v in row[which].items()
            if isinstance(v, int | float)
        }
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=step)
        plot_sample_curve(self.path, self.title)
