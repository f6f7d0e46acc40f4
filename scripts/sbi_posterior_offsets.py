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

    python scripts/sbi_posterior_offsets.py RUN --task sir --observations 3
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


def _fmt(t: Tensor, sign: str = "+") -> str:
    return " / ".join(f"{v:{sign}.2f}" for v in t.tolist())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="checkpoint file or run folder")
    p.add_argument("--task", help="sbibm task (default: the run's data.task)")
    p.add_argument("--observations", type=int, default=3, help="observations 1..N")
    p.add_argument("--half-width", type=float, default=12.0, help="grid half-width, ref sds")
    p.add_argument("--points", type=int, default=121, help="grid points per axis")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from molfff.dense.sbi import observation, reference_posterior_samples
    from molfff.dense.sbi_task import posterior_samples
    from molfff.errors import UserError
    from molfff.train.runs import load_model

    args = parse_args(argv)
    try:
        config, module, path = load_model(args.run)
        task = args.task or getattr(config.data, "task", None)
        if task is None or not hasattr(module, "standardize_x"):
            raise UserError(f"{path} is not an SBI run (no data.task); pass --task")
        print(f"{path}: {task}; offsets of the mean from the reference mean, in reference sds")
        for k in range(1, args.observations + 1):
            ref = reference_posterior_samples(task, k).double()
            samples = posterior_samples(module, task, k).double()
            line = (
                f"observation {k}: samples {_fmt(in_reference_sds(samples.mean(0), ref))} "
                f"(sd ratio {_fmt(samples.std(0) / ref.std(0), '')})"
            )
            if ref.shape[1] <= 2:
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
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
