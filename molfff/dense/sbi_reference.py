"""Published reference figures of the sbibm benchmark, to print and plot next to a run's own.

sbibm's NPE (NSF) C2ST, mean over the task's 10 observations, at 10^3 / 10^4 / 10^5 simulations
(Lueckmann et al. 2021, "Benchmarking Simulation-Based Inference", AISTATS, Fig. 2 and the sbibm
results table), scored with sbibm's own C2ST classifier: compare them only with numbers scored
the same way (not with the early-stopped classifier of :mod:`molfff.dense.c2st`).
"""

from __future__ import annotations

PUBLISHED_NPE = {
    "two_moons": (0.725, 0.606, 0.542),
    "gaussian_linear": (0.694, 0.552, 0.506),
    "gaussian_linear_uniform": (0.696, 0.553, 0.509),
    "gaussian_mixture": (0.731, 0.661, 0.555),
    "bernoulli_glm": (0.863, 0.678, 0.559),
    "bernoulli_glm_raw": (0.900, 0.765, 0.607),
    "slcp": (0.975, 0.901, 0.831),
    "slcp_distractors": (0.982, 0.970, 0.863),
    "sir": (0.815, 0.680, 0.585),
    "lotka_volterra": (0.999, 0.997, 0.981),
}
PUBLISHED_BUDGETS = (1000, 10000, 100000)


def published_npe(task: str, budget: int) -> float | None:
    """sbibm's published NPE mean C2ST for (task, budget), or None where it has none."""
    if task not in PUBLISHED_NPE or budget not in PUBLISHED_BUDGETS:
        return None
    return PUBLISHED_NPE[task][PUBLISHED_BUDGETS.index(budget)]
