"""An sbibm task as a training task: amortised posterior estimation q(theta | x) with C2ST.

The flow models ``theta`` (the dense data) conditioned on the simulation ``x`` (the
conditioning ``c``). After training, each of the first ``c2st_observations`` observations x_o is
scored by the classifier two-sample test between 10,000 samples of ``q(theta | x_o)`` and
sbibm's 10,000 reference posterior samples (0.5: indistinguishable; 1: disjoint).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from molfff.dense.sbi import (
    NUM_OBSERVATIONS,
    in_prior_support,
    observation,
    posterior_c2st,
    prior_bounds,
    reference_posterior_samples,
    simulate_splits,
)
from molfff.dense.splits import DenseData
from molfff.errors import UserError


def posterior_samples(
    model,
    task_name: str,
    num_observation: int,
    n: int = 10_000,
    seed: int = 0,
    within_prior: bool = True,
    max_draws: int = 100,
) -> torch.Tensor:
    """``n`` samples of the trained ``q(theta | x_o)``, ``(n, D_theta)`` in original units.

    With ``within_prior`` (default), samples outside the prior's support are rejected and drawn
    again, which is the posterior restricted to where the true one has mass. sbi's NPE posterior
    does the same, and so does sbibm; a flow's samples otherwise leak beyond hard prior bounds.

    Raises:
        UserError: fewer than ``n`` of ``max_draws * n`` draws fell inside the support.
    """
    param = next(model.parameters())
    x_o = observation(task_name, num_observation).to(param)
    g = torch.Generator(device=param.device).manual_seed(seed * 100 + num_observation)
    kept, have, drawn = [], 0, 0
    with torch.no_grad():
        while have < n:
            if drawn >= max_draws * n:
                raise UserError(
                    f"{task_name}, observation {num_observation}: only {have} of {drawn} "
                    "posterior samples fell inside the prior's support; the model is far off"
                )
            batch = model.sample(n, x_o, generator=g).cpu()
            drawn += n
            if within_prior:
                batch = batch[in_prior_support(task_name, batch)]
            kept.append(batch)
            have += len(batch)
    return torch.cat(kept)[:n]


def c2st_metrics(
    model,
    task_name: str,
    observations: int,
    progress: bool = True,
    n_jobs: int | None = None,
    early_stopping: bool = False,
    on_samples: Callable[[int, torch.Tensor], None] | None = None,
) -> dict:
    """C2ST per observation and its mean, as sbibm reports it (``n_jobs`` and
    ``early_stopping``: see :func:`molfff.dense.c2st.c2st`). ``on_samples(k, samples)``, if
    given, receives each observation's posterior samples ``(n_ref, D_theta)`` before they are
    scored (e.g. to keep them for another classifier)."""
    from tqdm import tqdm

    scores = {}
    for k in tqdm(
        range(1, observations + 1), desc="C2ST", disable=not progress, file=__import__("sys").stderr
    ):
        n_ref = reference_posterior_samples(task_name, k).shape[0]
        samples = posterior_samples(model, task_name, k, n_ref)
        if on_samples is not None:
            on_samples(k, samples)
        scores[f"c2st/obs{k}"] = float(
            posterior_c2st(task_name, k, samples, n_jobs=n_jobs, early_stopping=early_stopping)
        )
    if scores:
        scores["c2st"] = sum(scores.values()) / len(scores)
    return scores


def sbi_training_task(
    task_name: str, budget: int, seed: int, n_test: int, c2st_observations: int
) -> DenseData:
    """Simulations for training (``budget``, 10% held out for validation) and a test set."""
    if not 0 <= c2st_observations <= NUM_OBSERVATIONS:
        raise UserError(
            f"config key data.c2st_observations must be 0..{NUM_OBSERVATIONS}, "
            f"got {c2st_observations}"
        )
    splits = simulate_splits(task_name, budget, seed, n_test=n_test)
    return DenseData(
        f"sbi/{task_name}/{budget}",
        splits,
        extra_metrics=lambda model: c2st_metrics(model, task_name, c2st_observations),
        support=prior_bounds(task_name),
    )
