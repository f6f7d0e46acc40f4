"""Training curves of a run folder, read back from Lightning's CSV logs.

Every (re)start of a run writes ``logs/version_k/metrics.csv``; a resumed run continues the global
step, so the versions are merged by step (a later version wins where two logged the same step).
The figure ``curves.png`` has one panel per quantity: the training loss and surrogate NLL, and the
exact validation NLL (the quantity a user compares with papers), against optimizer steps.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

PANELS = (
    ("loss", ("train/loss",)),
    ("surrogate NLL (train)", ("train/nll_surrogate",)),
    (
        "NLL (validation)",
        (
            "val/nll_exact",
            "val/nll_estimate",
            "val/nll_given_n_exact",
            "val/nll_given_n_estimate",
            "val/nll",  # runs made before the exact NLL existed
            "val/nll_given_n",
        ),
    ),
    ("reconstruction", ("train/reconstruction", "val/reconstruction")),
)


def _versions(run_dir: Path) -> list[Path]:
    def number(p: Path) -> int:
        suffix = p.parent.name.removeprefix("version_")
        return int(suffix) if suffix.isdigit() else -1

    return sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=number)


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` sorted by step, from all CSV log versions of a run.

    Args:
        run_dir: a run folder (with ``logs/version_k/metrics.csv``).

    Returns:
        Finite values only; empty if the run logged nothing yet.
    """
    merged: dict[str, dict[int, float]] = {}
    for path in _versions(run_dir):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step", "")
                if not step.strip():
                    continue
                for key, value in row.items():
                    if key in ("step", "epoch") or value is None or not value.strip():
                        continue
                    try:
                        v = float(value)
                    except ValueError:
                        continue
                    if math.isfinite(v):
                        merged.setdefault(key, {})[int(float(step))] = v
    return {k: sorted(d.items()) for k, d in merged.items()}


def plot_curves(run_dir: Path, out: Path | None = None) -> Path | None:
    """Write ``curves.png`` (training and validation curves against steps) into the run folder.

    Args:
        run_dir: the run folder.
        out: figure path (default ``run_dir / "curves.png"``).

    Returns:
        The figure's path, or None when the run has no logged metrics to draw.
    """
    curves = read_curves(run_dir)
    panels = [(t, [k for k in keys if curves.get(k)]) for t, keys in PANELS]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            steps, values = zip(*curves[key], strict=True)
            marker = "o" if len(steps) < 50 else None
            ax.plot(steps, values, marker=marker, ms=3, lw=1, label=key)
        values = [v for key in keys for _, v in curves[key]]
        if title == "reconstruction" and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    out = run_dir / "curves.png" if out is None else out
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
