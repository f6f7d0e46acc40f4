"""The result files the SBI benchmark scripts share: ``results.csv`` rows, kept posterior
samples, the summary table and plot, and the scripts' error handling.

``scripts/bench_sbi.py`` writes them; ``scripts/rescore_sbi.py``, ``scripts/sbi_off_support.py``
and ``scripts/sbi_latent_view.py`` read them. Not a package module: the scripts import it as a
sibling, as running a script puts ``scripts/`` on the path.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from molfff.dense.sbi_reference import published_npe
from molfff.errors import UserError

FIELDS = (
    "task",
    "budget",
    "method",
    "observation",
    "c2st",
    "c2st_classifier",
    "train_seconds",
    "epochs",
)
METHODS = ("fff", "npe")


def samples_path(out_dir: Path, task: str, budget: int, method: str, k: int) -> Path:
    """Where a run keeps the posterior samples it scored for observation ``k``: a float32 tensor
    ``(10_000, D_theta)`` in the task's original units, written with ``torch.save``."""
    return out_dir / "samples" / f"{task}_{budget}_{method}_obs{k}.pt"


def save_samples(path: Path, samples: torch.Tensor) -> None:
    """``torch.save`` through a temporary file, so an interrupted write leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(samples.detach().float().cpu().clone(), tmp)
    tmp.replace(path)


def read_rows(path: Path) -> list[dict]:
    """Complete rows of a results file with bench_sbi's columns; [] if it does not exist. A row
    cut short (an interrupted write) is left out."""
    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise UserError(f"{path}: not a results file of bench_sbi.py (its columns differ)")
            return [r for r in reader if all(r.get(k) not in (None, "") for k in FIELDS)]
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rewrite ``path`` with ``rows`` through a temporary file (a torn last line goes)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror})") from None


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation of C2ST over observations per (task, budget, method)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["task"], int(r["budget"]), r["method"])].append(r)
    out = []
    for (task, budget, method), rs in groups.items():
        c = [float(r["c2st"]) for r in rs]
        out.append(
            {
                "task": task,
                "budget": budget,
                "method": method,
                "n": len(c),
                "mean": statistics.fmean(c),
                "std": statistics.stdev(c) if len(c) > 1 else 0.0,
                "seconds": float(rs[0]["train_seconds"]),
                "epochs": int(rs[0]["epochs"]),
            }
        )
    return out


def print_table(summary: list[dict]) -> None:
    by_key = {(s["task"], s["budget"], s["method"]): s for s in summary}
    keys = sorted({(s["task"], s["budget"]) for s in summary})
    head = (
        f"{'task':<24}{'budget':>8}  {'FFF C2ST':>14}  {'NPE C2ST':>14}  "
        f"{'FFF s (ep)':>12}  {'NPE s (ep)':>12}  {'NPE sbibm':>10}"
    )
    print(head)
    print("-" * len(head))
    for task, budget in keys:
        cells, times = [], []
        for method in METHODS:
            s = by_key.get((task, budget, method))
            cells.append("-" if s is None else f"{s['mean']:.3f}±{s['std']:.3f}")
            times.append("-" if s is None else f"{s['seconds']:.0f} ({s['epochs']})")
        ref = published_npe(task, budget)
        ref_cell = "-" if ref is None else f"{ref:.3f}"
        print(
            f"{task:<24}{budget:>8}  {cells[0]:>14}  {cells[1]:>14}  {times[0]:>12}  {times[1]:>12}"
            f"  {ref_cell:>10}"
        )
    n_obs = {s["n"] for s in summary}
    print(f"C2ST: mean ± sd over {'/'.join(map(str, sorted(n_obs)))} observation(s); 0.5 is best.")
    print(
        "NPE sbibm: sbibm's published NPE mean over its 10 observations, sbibm's C2ST classifier "
        "(Lueckmann et al. 2021)."
    )


def plot(summary: list[dict], path: Path, classifier: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({s["task"] for s in summary})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for method, marker in zip(METHODS, ("o", "s"), strict=True):
            pts = sorted(
                (s["budget"], s["mean"], s["std"])
                for s in summary
                if s["task"] == task and s["method"] == method
            )
            if pts:
                b, m, sd = zip(*pts, strict=True)
                ax.errorbar(b, m, yerr=sd, marker=marker, capsize=3, label=method.upper())
        budgets = sorted({s["budget"] for s in summary if s["task"] == task})
        ref = [(b, m) for b in budgets if (m := published_npe(task, b)) is not None]
        if ref:
            b, m = zip(*ref, strict=True)
            ax.plot(b, m, "k^:", label="NPE, sbibm paper (sbibm C2ST)")
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set(xscale="log", ylim=(0.45, 1.02), title=task, xlabel="simulation budget")
        ax.set_ylabel(f"C2ST, {classifier} classifier (mean over observations)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s code; a :class:`UserError` is one ``error:`` line and code 2."""
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
