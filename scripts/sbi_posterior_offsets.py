"""Where a trained SBI posterior sits, in units of sbibm's reference posterior.

For each observation ``x_o``, prints the offset of the model's posterior mean from the reference
posterior's mean and the ratio of standard deviations, per parameter, in reference sds:

- ``samples``: the mean and sd of 10,000 samples ``g(z, x_o)`` (the model that samples, any
  dimension);
- for tasks with at most two parameters, also the mean of the two densities on a regular grid
  of +-``--half-width`` reference sds around the reference mean: ``estimate``, the encoder's
  density at ``z = f(theta)`` (the paper's eq. 135), and ``exact``, at the decoder's preimage
  (Newton; grid points without a converged preimage are left out, their share printed).

Each density also gets its ``mass``: its integral over the grid (the Riemann sum). A normalised
density whose mass lies on the grid gives 1; the paper's estimate is a density only where f is
injective, and a folding encoder (several theta with the same z) gives more than 1.

Telling the three apart says whether a misplaced posterior comes from the likelihood fit (the
encoder's density is off too) or from sampling through an imprecise inverse (only the samples
are off).

Over all observations, a last line summarises the samples (:func:`location_summary`): one
least-squares slope through the origin of their means on the reference means, pooled over all
parameters and observations (1 means no shrinkage toward the origin, 0.9 means means pulled 10 %
toward it; meaningful only where the reference means lie away from the origin, not for
posteriors centred on it such as two_moons'), the median absolute offset in reference sds and the
median sd ratio. ``--kept METHOD`` reads the samples that ``scripts/bench_sbi.py`` kept for
``METHOD`` (``fff`` or ``npe``) instead of drawing them from a model, so NPE's posteriors get the
same numbers.

    python scripts/sbi_posterior_offsets.py RUN --task sir --observations 3
    python scripts/sbi_posterior_offsets.py BENCH_DIR --kept npe --task gaussian_linear_uniform \
        --budget 10000 --observations 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor


def grid(center: Tensor, sd: Tensor, half_width: float, points: int) -> Tensor:
    """A regular grid of ``points ** D`` rows around ``center``, +-``half_width`` sds per axis.

    Raises:
        ValueError: for more than two dimensions (the grid grows as ``points ** D``).
    """
    dim = center.numel()
    if dim > 2:
        raise ValueError(f"a density grid needs at most 2 parameters, got {dim}")
    axis = torch.linspace(-half_width, half_width, points, dtype=center.dtype)
    mesh = torch.meshgrid(*[axis] * dim, indexing="ij")
    return center + torch.stack([m.flatten() for m in mesh], -1) * sd


def density_mean(theta: Tensor, log_prob: Tensor) -> tuple[Tensor, float]:
    """Mean of the density ``exp(log_prob)`` normalised over the grid rows ``theta``, and the
    share of rows with a finite value (the others are left out)."""
    finite = torch.isfinite(log_prob)
    weights = torch.softmax(log_prob[finite], 0)
    return (weights[:, None] * theta[finite]).sum(0), finite.double().mean().item()


def grid_mass(log_prob: Tensor, sd: Tensor, half_width: float, points: int) -> float:
    """Integral of ``exp(log_prob)`` over the rows of :func:`grid` (a Riemann sum; rows with
    a non-finite value add nothing): 1 for a normalised density whose mass lies on the grid."""
    cell = (2 * half_width / (points - 1) * sd).prod()
    finite = log_prob[torch.isfinite(log_prob)]
    return (torch.logsumexp(finite, 0) + cell.log()).exp().item()


def in_reference_sds(mean: Tensor, ref: Tensor) -> Tensor:
    """``(mean - ref.mean) / ref.sd`` per parameter."""
    return (mean - ref.mean(0)) / ref.std(0)


def location_summary(means: Tensor, ref_means: Tensor, sds: Tensor, ref_sds: Tensor) -> dict:
    """How posterior samples sit against the reference over several observations, each argument
    ``(K, D)`` (one row per observation): ``slope``, the least-squares slope through the origin
    of ``means`` on ``ref_means`` over all K * D entries; ``offset``, the median of
    ``|means - ref_means| / ref_sds``; ``sd_ratio``, the median of ``sds / ref_sds`` (medians
    of an even count average the two middle values)."""
    slope = (ref_means * means).sum() / (ref_means * ref_means).sum()
    return {
        "slope": slope.item(),
        "offset": ((means - ref_means).abs() / ref_sds).flatten().quantile(0.5).item(),
        "sd_ratio": (sds / ref_sds).flatten().quantile(0.5).item(),
    }


def _fmt(t: Tensor, sign: str = "+") -> str:
    return " / ".join(f"{v:{sign}.2f}" for v in t.tolist())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="checkpoint file or run folder")
    p.add_argument("--task", help="sbibm task (default: the run's data.task)")
    p.add_argument(
        "--kept",
        choices=["fff", "npe"],
        help="read RUN (a bench_sbi.py --out-dir) for this method's kept samples (needs --task "
        "and --budget)",
    )
    p.add_argument("--budget", type=int, help="simulation budget of the kept samples")
    p.add_argument("--observations", type=int, default=3, help="observations 1..N")
    p.add_argument("--half-width", type=float, default=12.0, help="grid half-width, ref sds")
    p.add_argument("--points", type=int, default=121, help="grid points per axis")
    args = p.parse_args(argv)
    from molfff.dense.sbi import NUM_OBSERVATIONS, TASK_NAMES

    if not 1 <= args.observations <= NUM_OBSERVATIONS:
        p.error(
            f"--observations must be 1..{NUM_OBSERVATIONS} (sbibm's observations), "
            f"got {args.observations}"
        )
    if args.budget is not None and args.budget < 1:
        p.error(f"--budget must be positive, got {args.budget}")
    if args.points < 2:
        p.error(f"--points must be at least 2, got {args.points}")
    if not args.half_width > 0:
        p.error(f"--half-width must be positive, got {args.half_width}")
    if args.task is not None and args.task not in TASK_NAMES:
        p.error(f"unknown --task {args.task!r}; choose from {', '.join(TASK_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from rescore_sbi import load_samples  # scripts/rescore_sbi.py
    from sbi_results import samples_path  # scripts/sbi_results.py

    from molfff.dense.sbi import observation, reference_posterior_samples
    from molfff.dense.sbi_task import posterior_samples
    from molfff.errors import UserError
    from molfff.train.runs import load_model

    args = parse_args(argv)
    if args.kept and (args.task is None or args.budget is None):
        print("error: --kept needs --task and --budget", file=sys.stderr)
        return 2
    try:
        if args.kept:
            task, module, path = args.task, None, args.run
            kept = [
                samples_path(args.run, task, args.budget, args.kept, k)
                for k in range(1, args.observations + 1)
            ]
            missing = [f for f in kept if not f.is_file()]
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise UserError(
                    f"no kept samples at {missing[0]}{more} (bench_sbi.py --out-dir RUN keeps "
                    "them for each task, budget, method and observation it scored)"
                )
            # every file read and checked (scripts/rescore_sbi.py) before any output
            kept = [load_samples(f, task).double() for f in kept]
        else:
            config, module, path = load_model(args.run)
            trained_on = getattr(config.data, "task", None)
            if args.task is not None and trained_on is not None and args.task != trained_on:
                raise UserError(f"{path} was trained on {trained_on}, not --task {args.task}")
            task = args.task or trained_on
            if task is None or not hasattr(module, "standardize_x"):
                raise UserError(f"{path} is not an SBI run (no data.task); pass --task")
        print(f"{path}: {task}; offsets of the mean from the reference mean, in reference sds")
        rows = []
        for k in range(1, args.observations + 1):
            ref = reference_posterior_samples(task, k).double()
            samples = kept[k - 1] if args.kept else posterior_samples(module, task, k).double()
            rows.append((samples.mean(0), ref.mean(0), samples.std(0), ref.std(0)))
            line = (
                f"observation {k}: samples {_fmt(in_reference_sds(samples.mean(0), ref))} "
                f"(sd ratio {_fmt(samples.std(0) / ref.std(0), '')})"
            )
            if module is not None and ref.shape[1] <= 2:
                theta = grid(ref.mean(0), ref.std(0), args.half_width, args.points)
                x_o = observation(task, k).double().expand(len(theta), -1)
                param = next(module.parameters())
                theta_m, x_m = theta.to(param), x_o.to(param)
                for name, exact in (("estimate", False), ("exact", True)):
                    lp = module.log_prob(theta_m, x_m, exact=exact).detach().double().cpu()
                    mean, share = density_mean(theta, lp)
                    mass = grid_mass(lp, ref.std(0), args.half_width, args.points)
                    line += f"; {name} density {_fmt(in_reference_sds(mean, ref))}"
                    line += f" (mass on the grid {mass:.2f})"
                    line += f" ({100 * share:.0f} % of the grid)" if exact else ""
            print(line)
        summary = location_summary(*(torch.stack(t) for t in zip(*rows, strict=True)))
        print(
            f"samples over observations 1-{args.observations}: slope of their mean on the "
            f"reference mean {summary['slope']:.3f} (1: no shrinkage), median absolute offset "
            f"{summary['offset']:.2f} reference sds, median sd ratio {summary['sd_ratio']:.2f}"
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
