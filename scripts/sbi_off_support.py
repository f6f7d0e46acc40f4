"""How much of a posterior's mass lies where sbibm's reference posterior has none.

C2ST says that samples differ, not how. A flow that maps a unimodal Gaussian onto a posterior
with separated modes (two_moons' two crescents) must cross the gap between them, and a smooth
decoder leaves a bridge of samples there. This script measures that mass, per kept sample set of
a ``bench_sbi.py`` run (``<out-dir>/samples/``):

- the reference posterior's 10,000 samples are split in two halves, ``A`` and ``B``;
- the radius ``r`` is the 99th percentile of the distance from a ``B`` sample to its nearest
  ``A`` sample (original units of theta, Euclidean), so 1 % of the reference itself lies
  farther than ``r`` from ``A``;
- the **off-support share** of a sample set is the fraction of its samples farther than ``r``
  from every ``A`` sample (about 0.01 for samples of the reference posterior itself); the
  **far-off share**, farther than ``10 r``, leaves out samples that only blur the support's edge
  (on two_moons ``r`` is 0.003-0.005, about half the crescents' radial sd, and ``10 r`` marks
  the bridge).

Prints both shares per task, budget and method (mean over observations, and the largest), and with
``--plot FILE`` draws the first observations' samples over the reference (2-parameter tasks).

    python scripts/sbi_off_support.py DIR [DIR ...] [--plot samples.png]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from rescore_sbi import load_samples, sample_sets  # scripts/rescore_sbi.py
from sbi_results import run_main  # scripts/sbi_results.py
from torch import Tensor

from molfff.dense.sbi import NUM_OBSERVATIONS, reference_posterior_samples
from molfff.errors import UserError

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")

QUANTILE = 0.99


def nearest_distance(x: Tensor, y: Tensor, chunk: int = 2048) -> Tensor:
    """Distance from each row of ``x`` ``(N, D)`` to its nearest row of ``y`` ``(M, D)``, ``(N,)``
    (the units of ``x``)."""
    return torch.cat([torch.cdist(xc, y).min(1).values for xc in x.split(chunk)])


def support_radius(reference: Tensor, quantile: float = QUANTILE) -> tuple[Tensor, float]:
    """Half ``A`` of the reference samples and the radius that holds ``quantile`` of half ``B``."""
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(reference), generator=gen)
    a, b = reference[perm[: len(reference) // 2]], reference[perm[len(reference) // 2 :]]
    return a, torch.quantile(nearest_distance(b, a), quantile).item()


FAR = 10.0


def reference_support(task: str, k: int) -> tuple[Tensor, float]:
    """:func:`support_radius` of observation ``k``'s reference samples."""
    return support_radius(reference_posterior_samples(task, k).double())


def off_support_shares(
    samples: Tensor, support: tuple[Tensor, float], factors: tuple[float, ...] = (1.0, FAR)
) -> list[float]:
    """Fractions of ``samples`` ``(N, D_theta)`` farther than each of ``factors`` times the
    radius of ``support`` (:func:`reference_support`) from it, from one nearest-neighbour
    search."""
    a, radius = support
    distance = nearest_distance(samples.double(), a)
    return [(distance > f * radius).double().mean().item() for f in factors]


def off_support_share(samples: Tensor, task: str, k: int, factor: float = 1.0) -> float:
    """Fraction of ``samples`` farther than ``factor`` times the reference's radius from it."""
    return off_support_shares(samples, reference_support(task, k), (factor,))[0]


def plot(measured: dict[tuple, tuple[Tensor, float]], path: Path, observations: int) -> None:
    """One row per (run, task, budget, method) of a 2-parameter task, one panel per observation;
    ``measured[(run, task, budget, method, k)]`` holds the samples and their off-support share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({key[:4] for key in measured})
    groups = [g for g in groups if reference_posterior_samples(g[1], 1).shape[1] == 2]
    if not groups:
        raise UserError("--plot draws 2-parameter tasks only; none among the samples")
    fig, axes = plt.subplots(
        len(groups), observations, figsize=(3.2 * observations, 3.2 * len(groups)), squeeze=False
    )
    for row, (run, task, budget, method) in zip(axes, groups, strict=True):
        for ax, k in zip(row, range(1, observations + 1), strict=True):
            ref = reference_posterior_samples(task, k)
            ax.scatter(*ref[:3000].T, s=1, c="k", alpha=0.3, label="reference")
            if (found := measured.get((run, task, budget, method, k))) is not None:
                samples, share = found
                ax.scatter(*samples[:3000].T, s=1, c="tab:red", alpha=0.3, label=method.upper())
                name = Path(run).name
                ax.set_title(
                    f"{name}: {method.upper()}, {budget}, obs {k}\noff-support {share:.3f}"
                )
            ax.set(xlabel="theta_1", ylabel="theta_2")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def check_figure_path(path: Path) -> None:
    """Refuse, before any work, a figure path matplotlib could not write."""
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"{path}: a figure needs one of the suffixes {', '.join(FIGURE_SUFFIXES)}")
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dirs", nargs="+", type=Path, help="bench_sbi.py --out-dir folders")
    p.add_argument("--plot", type=Path, default=None, help="draw samples over the reference")
    p.add_argument("--plot-observations", type=int, default=3)
    args = p.parse_args(argv)
    if not 1 <= args.plot_observations <= NUM_OBSERVATIONS:
        p.error(f"--plot-observations must be 1..{NUM_OBSERVATIONS}, got {args.plot_observations}")
    if args.plot is not None:
        check_figure_path(args.plot)
    runs = list(dict.fromkeys(str(d) for d in args.out_dirs))  # each folder once, as given
    sets = [(run, key, path) for run in runs for key, path in sample_sets(Path(run), None)]
    samples = {path: load_samples(path, key[0]) for _, key, path in sets}  # all checked first
    shares, far, measured, supports = defaultdict(list), defaultdict(list), {}, {}
    for run, (task, budget, method, k), path in sets:
        if (task, k) not in supports:  # one radius per observation, shared by the runs
            supports[task, k] = reference_support(task, k)
        share, far_share = off_support_shares(samples[path], supports[task, k])
        shares[(run, task, budget, method)].append(share)
        far[(run, task, budget, method)].append(far_share)
        measured[(run, task, budget, method, k)] = (samples[path], share)
    print(f"off-support share: samples farther from the reference than {QUANTILE:.0%} of its own")
    print(
        f"{'run':<24}{'task':<18}{'budget':>8}  method  off-support: mean  largest"
        f"  far-off ({FAR:g} r): mean  largest  observations"
    )
    for key, s in sorted(shares.items()):
        run, task, budget, method = key
        f = far[key]
        print(
            f"{run:<24}{task:<18}{budget:>8}  {method:<6}  {statistics.fmean(s):>17.3f}  "
            f"{max(s):>7.3f}  {statistics.fmean(f):>24.3f}  {max(f):>7.3f}  {len(s)}"
        )
    print("(sbibm's reference samples themselves: off-support about 0.010)")
    if args.plot is not None:
        plot(measured, args.plot, args.plot_observations)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    run_main(main)
