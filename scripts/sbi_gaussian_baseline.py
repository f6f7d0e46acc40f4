"""A floor for amortised posteriors: theta | x ~ N(A x + b, Sigma) fitted by ridge regression.

On the same simulations as ``scripts/bench_sbi.py`` (``simulate_splits`` at ``--seed``: the
``train`` and ``val`` splits, i.e. the whole budget), both z-scored with the training split's
statistics, fit the posterior mean as a ridge regression of theta on x and one residual
covariance Sigma for all x. It prints, per task:

- the held-out NLL of theta given x in nats, original units of theta (the ``test`` split, the one
  whose NLL ``bench_sbi.py`` prints for FFF), and the prior-only Gaussian's for scale;
- with ``--observations N``, C2ST over observations 1..N of 10,000 samples restricted to the
  prior's support, against sbibm's reference (``--c2st-early-stopping`` as in ``bench_sbi.py``).

A flow that does worse than this on a task has not learnt the posterior's location and scale.

    python scripts/sbi_gaussian_baseline.py --tasks bernoulli_glm bernoulli_glm_raw \\
        --budget 1000 --observations 10 --c2st-early-stopping
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor, nn

from molfff.dense.sbi import TASK_NAMES, posterior_c2st, simulate_splits
from molfff.dense.sbi_task import posterior_samples
from molfff.fff.standardize import Standardize

PRIOR_RIDGE = 1e12  # shrinks A to ~1e-9 of its fit at any budget here: the prior-only Gaussian


class GaussianPosterior(nn.Module):
    """``theta | x ~ N(A x + b, L L^T)`` on standardised theta and x, in original units outside.

    Args:
        theta, x: ``(B, D_theta)``, ``(B, D_x)`` training pairs.
        ridge: L2 penalty on A (not on b), in standardised units.
    """

    def __init__(self, theta: Tensor, x: Tensor, ridge: float = 1.0):
        super().__init__()
        theta, x = theta.double(), x.double()
        self.st, self.sx = Standardize.from_data(theta), Standardize.from_data(x)
        t, design = self.st(theta), self._design(x)
        penalty = ridge * torch.eye(design.shape[1], dtype=t.dtype)
        penalty[-1, -1] = 0.0
        self.weights = torch.linalg.solve(design.T @ design + penalty, design.T @ t)
        resid = t - design @ self.weights
        cov = torch.cov(resid.T).reshape(t.shape[1], t.shape[1])
        # a near-singular residual covariance (collinear theta) gets a jitter of 1e-9 of its scale
        cov = cov + 1e-9 * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
        self.chol = torch.linalg.cholesky(cov)
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # device and dtype

    def _design(self, x: Tensor) -> Tensor:
        """``[standardised x, 1]``, ``(B, D_x + 1)``: the regressors of the mean."""
        u = self.sx(x.double())
        return torch.cat([u, torch.ones(len(u), 1, dtype=u.dtype)], 1)

    def _mean(self, x: Tensor) -> Tensor:
        return self._design(x) @ self.weights

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log q(theta | x)`` in nats, original units of theta, ``(B,)``."""
        dist = torch.distributions.MultivariateNormal(self._mean(x), scale_tril=self.chol)
        return dist.log_prob(self.st(theta.double())) - self.st.log_abs_det

    def sample(self, n: int, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(n, D_theta)`` draws of ``q(theta | x)`` for one ``x`` ``(1, D_x)``."""
        eps = torch.randn(n, self.chol.shape[0], generator=generator, dtype=torch.float64)
        t = self._mean(x.reshape(1, -1)) + eps @ self.chol.T
        return self.st.inverse(t).float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES, metavar="TASK"
    )
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ridge", type=float, default=1.0)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--observations", type=int, default=0, help="C2ST on observations 1..N")
    p.add_argument("--c2st-early-stopping", action="store_true")
    args = p.parse_args()
    if args.budget < 3 or args.ridge < 0 or not 0 <= args.observations <= 10:
        p.error("need --budget >= 3, --ridge >= 0 and 0 <= --observations <= 10")
    classifier = "early-stopped (not sbibm's)" if args.c2st_early_stopping else "sbibm's"
    print(
        f"budget {args.budget}, seed {args.seed}, ridge {args.ridge}; NLL: held-out, nats, "
        f"original units of theta; C2ST: {classifier} classifier, observations 1-"
        f"{args.observations}"
    )
    for task in args.tasks:
        s = simulate_splits(task, args.budget, args.seed, n_test=args.n_test)
        theta = torch.cat([s["train"].x, s["val"].x])
        x = torch.cat([s["train"].c, s["val"].c])
        if len(theta) <= 2 * theta.shape[1]:
            p.error(
                f"{task}: --budget {args.budget} is too small for a {theta.shape[1]}-D "
                f"covariance; use more than {2 * theta.shape[1]} simulations"
            )
        model = GaussianPosterior(theta, x, args.ridge)
        nll = -model.log_prob(s["test"].x, s["test"].c).mean().item()
        # the ridge's limit: A = 0, theta's mean and covariance whatever x is
        prior = GaussianPosterior(theta, x, ridge=PRIOR_RIDGE)
        prior_nll = -prior.log_prob(s["test"].x, s["test"].c).mean().item()
        line = f"{task:<24} Gaussian NLL {nll:8.3f}   prior-only Gaussian {prior_nll:8.3f}"
        if args.observations:
            scores = [
                posterior_c2st(
                    task,
                    k,
                    posterior_samples(model, task, k, seed=args.seed),
                    early_stopping=args.c2st_early_stopping,
                )
                for k in range(1, args.observations + 1)
            ]
            line += f"   C2ST {sum(scores) / len(scores):.3f}"
        print(line if math.isfinite(nll) else line + "  (not finite)", flush=True)


if __name__ == "__main__":
    main()
