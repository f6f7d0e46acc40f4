"""Simulation-based inference tasks of sbibm, as conditional density estimation data.

A flow learns the posterior ``p(theta | x)`` from simulated pairs ``theta ~ p(theta)``,
``x ~ p(x | theta)``: here a :class:`Split` holds ``x = theta`` ``(B, D_theta)`` (what the flow
models) and ``c = x`` ``(B, D_x)`` (the conditioning). Tasks, observations and reference posteriors
are those of sbibm (Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021):
10 observations per task, 10,000 reference posterior samples each, scored by C2ST
(:func:`posterior_c2st`). Priors and simulators come from sbibm's task objects, except

- ``slcp_distractors``: sbibm's simulator unpickles a pyro mixture, which ``torch.load`` refuses
  since torch 2.6; the mixture (20 multivariate Student-t, df 2, in 92 dimensions) and the
  permutation are regenerated here from sbibm's recipe (numpy seed 42), and the 8 SLCP data
  come from sbibm's ``slcp`` simulator;
- ``sir`` and ``lotka_volterra``: sbibm solves their ODEs in Julia; see :mod:`molfff.dense.sbi_ode`.

Randomness: sbibm draws from torch's global generator, so every draw here runs under
``torch.random.fork_rng`` with a seed derived from (task, seed, stream); the caller's global
random state is left as it was.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molfff.dense.c2st import c2st
from molfff.dense.splits import Split
from molfff.errors import UserError

TASK_NAMES = (
    "two_moons",
    "slcp",
    "slcp_distractors",
    "gaussian_linear",
    "gaussian_linear_uniform",
    "gaussian_mixture",
    "bernoulli_glm",
    "bernoulli_glm_raw",
    "sir",
    "lotka_volterra",
)
NUM_OBSERVATIONS = 10
_OWN_SIMULATORS = ("sir", "lotka_volterra")
_TRAIN_VAL, _TEST = 0, 1  # random streams
_CHUNK = 100_000  # simulations per simulator call


def _sbibm():
    try:
        import sbibm
    except ImportError:
        raise UserError(
            "the SBI tasks need sbibm: pip install --no-deps sbibm && pip install pyro-ppl "
            "scikit-learn pandas (or pip install 'molfff[sbi]' followed by the sbibm line)"
        ) from None
    return sbibm


@functools.cache
def _sbibm_task(name: str):
    return _sbibm().get_task(name)


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _check_name(name: str) -> None:
    if name not in TASK_NAMES:
        raise UserError(f"unknown SBI task {name!r}; choose from {', '.join(TASK_NAMES)}")


@dataclass(frozen=True)
class SBITask:
    """A prior and a simulator.

    Attributes:
        name: sbibm task name.
        dim_theta: parameter dimension ``D_theta``.
        dim_x: data dimension ``D_x``.
        prior: ``n -> (n, D_theta)`` samples from torch's global generator.
        simulator: ``(B, D_theta) -> (B, D_x)``, one simulation per row.
    """

    name: str
    dim_theta: int
    dim_x: int
    prior: Callable[[int], Tensor]
    simulator: Callable[[Tensor], Tensor]

    def sample_prior(self, n: int) -> Tensor:
        """``(n, D_theta)`` float32 prior samples."""
        if not _is_int(n) or n < 1:
            raise ValueError(f"{self.name}: number of prior samples must be an int >= 1, got {n!r}")
        return self.prior(n).float()

    def simulate(self, theta: Tensor) -> Tensor:
        """``(B, D_theta) -> (B, D_x)`` float32 data, one simulation per parameter row."""
        if not isinstance(theta, Tensor) or theta.dim() != 2 or theta.shape[1] != self.dim_theta:
            got = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
            raise ValueError(f"{self.name}: theta must be (B, {self.dim_theta}), got {got}")
        if not torch.isfinite(theta).all():
            raise ValueError(f"{self.name}: theta contains NaN or infinite values")
        x = self.simulator(theta.float()).float().reshape(len(theta), self.dim_x)
        if not torch.isfinite(x).all():
            raise RuntimeError(f"{self.name}: the simulator returned NaN or infinite data")
        return x


@functools.lru_cache(maxsize=1)
def _distractors() -> tuple[Tensor, Tensor, Tensor]:
    """sbibm's SLCP distractor mixture: locations ``(20, 92)``, scales ``(20, 92, 92)``, order."""
    rng = np.random.RandomState(42)  # the stream of sbibm's np.random.seed(42), in sbibm's order
    loc = np.array([15 * rng.normal(size=92) for _ in range(20)])
    tril = [
        np.tril(rng.normal(size=(92, 92))) + np.diag(np.exp(rng.normal(size=92))) for _ in range(20)
    ]
    perm = rng.permutation(100)
    return torch.from_numpy(loc), torch.from_numpy(3 * np.array(tril)), torch.from_numpy(perm)


def _distractor_noise(n: int) -> Tensor:
    """``(n, 92)`` draws of the equal-weight mixture of ``t_2(loc_j, L_j L_j^T)``:
    ``loc_j + L_j z sqrt(2 / w)``, ``z ~ N(0, I)``, ``w ~ chi2(2)``."""
    loc, tril, _ = _distractors()
    comp = torch.randint(len(loc), (n,))
    w = torch.distributions.Chi2(torch.tensor(2.0, dtype=torch.float64)).sample((n,))
    t = torch.randn(n, loc.shape[1], dtype=torch.float64) * (2.0 / w).sqrt()[:, None]
    noise = torch.empty_like(t)
    for j in range(len(loc)):  # per component: avoids an (n, 92, 92) gather
        rows = comp == j
        noise[rows] = loc[j] + t[rows] @ tril[j].T
    return noise


@functools.cache
def get_task(name: str) -> SBITask:
    """The prior and simulator of an sbibm task (see ``TASK_NAMES``)."""
    _check_name(name)
    if name == "sir":
        from molfff.dense.sbi_ode import SIR_PRIOR, sir_simulate

        return SBITask(name, 2, 10, lambda n: SIR_PRIOR.sample((n,)), sir_simulate)
    if name == "lotka_volterra":
        from molfff.dense.sbi_ode import LV_PRIOR, lv_simulate

        return SBITask(name, 4, 20, lambda n: LV_PRIOR.sample((n,)), lv_simulate)
    task = _sbibm_task("slcp" if name == "slcp_distractors" else name)
    prior, simulator = task.get_prior(), task.get_simulator()
    if name == "slcp_distractors":
        perm = _distractors()[2]

        def with_distractors(theta: Tensor) -> Tensor:
            x = torch.cat([simulator(theta), _distractor_noise(len(theta)).float()], dim=1)
            return x[:, perm]

        return SBITask(name, 5, 100, lambda n: prior(num_samples=n), with_distractors)
    return SBITask(
        name, task.dim_parameters, task.dim_data, lambda n: prior(num_samples=n), simulator
    )


@functools.cache
def prior_distribution(name: str) -> torch.distributions.Distribution:
    """The task's prior as a torch distribution over ``(D_theta,)`` rows (for its support)."""
    _check_name(name)
    if name in ("sir", "lotka_volterra"):
        from molfff.dense.sbi_ode import LV_PRIOR, SIR_PRIOR

        return SIR_PRIOR if name == "sir" else LV_PRIOR
    return _sbibm_task(name.removesuffix("_distractors")).get_prior_dist()


def prior_bounds(name: str) -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` ``(D_theta,)`` float32: the box holding the prior's support, ``±inf``
    where it is unbounded (Uniform: its box; LogNormal: ``(0, inf)``; Normal: none).

    Raises:
        UserError: the prior's support is not a box (no such sbibm task today).
    """
    prior = prior_distribution(name)
    support = prior.support
    while isinstance(support, torch.distributions.constraints.independent):
        support = support.base_constraint
    c = torch.distributions.constraints
    if support is c.real:
        lower, upper = -torch.inf, torch.inf
    elif support is c.positive:
        lower, upper = 0.0, torch.inf
    elif isinstance(support, c.interval | c.half_open_interval):
        lower, upper = support.lower_bound, support.upper_bound
    else:
        raise UserError(f"{name}: the prior's support {support} is not a box")
    shape = prior.batch_shape + prior.event_shape

    def full(bound) -> Tensor:
        return torch.as_tensor(bound, dtype=torch.float32).expand(shape).reshape(-1).clone()

    return full(lower), full(upper)


def in_prior_support(name: str, theta: Tensor) -> Tensor:
    """``(B,)`` bool: which rows of ``theta`` ``(B, D_theta)`` lie in the prior's support."""
    inside = prior_distribution(name).support.check(theta)
    return inside if inside.dim() == 1 else inside.all(dim=-1)


# --- observations and reference posteriors ---------------------------------------------------


def _files(name: str, num_observation: int) -> Path:
    _check_name(name)
    if not _is_int(num_observation) or not 1 <= num_observation <= NUM_OBSERVATIONS:
        raise UserError(
            f"{name}: observation number must be 1..{NUM_OBSERVATIONS}, got {num_observation!r}"
        )
    root = Path(_sbibm().__file__).parent / "tasks" / name.removesuffix("_distractors")
    return root / "files" / f"num_observation_{num_observation}"


def _read(name: str, num_observation: int, method: str, file: str) -> Tensor:
    """Through sbibm's task object where it imports; from its files for the Julia tasks."""
    folder = _files(name, num_observation)
    if name in _OWN_SIMULATORS:
        from sbibm.utils.io import get_tensor_from_csv

        return get_tensor_from_csv(folder / file).float()
    return getattr(_sbibm_task(name), method)(num_observation=num_observation).float()


def observation(name: str, num_observation: int) -> Tensor:
    """Observed data ``x_o``, ``(1, D_x)``."""
    return _read(name, num_observation, "get_observation", "observation.csv")


def reference_posterior_samples(name: str, num_observation: int) -> Tensor:
    """sbibm's 10,000 reference samples of ``p(theta | x_o)``, ``(10000, D_theta)``."""
    return _read(
        name,
        num_observation,
        "get_reference_posterior_samples",
        "reference_posterior_samples.csv.bz2",
    )


def true_parameters(name: str, num_observation: int) -> Tensor:
    """The parameters that generated observation ``num_observation``, ``(1, D_theta)``."""
    return _read(name, num_observation, "get_true_parameters", "true_parameters.csv")


def posterior_c2st(
    name: str,
    num_observation: int,
    samples: Tensor,
    seed: int = 1,
    n_jobs: int | None = None,
    early_stopping: bool = False,
) -> float:
    """C2ST accuracy of posterior ``samples`` ``(B, D_theta)`` against the reference (sbibm's
    metric: the reference is the z-scoring sample; use B = 10,000 for comparable numbers).
    ``n_jobs`` and ``early_stopping`` are passed to :func:`molfff.dense.c2st.c2st`."""
    reference = reference_posterior_samples(name, num_observation)
    if samples.dim() != 2 or samples.shape[1] != reference.shape[1]:
        raise ValueError(
            f"{name}: posterior samples must be (B, {reference.shape[1]}), "
            f"got {tuple(samples.shape)}"
        )
    return c2st(
        reference,
        samples.detach().float().cpu(),
        seed=seed,
        n_jobs=n_jobs,
        early_stopping=early_stopping,
    )


# --- training data -----------------------------------------------------------------------------


def _stream_seed(name: str, seed: int, stream: int) -> int:
    if not _is_int(seed) or seed < 0:
        raise UserError(f"{name}: seed must be an int >= 0, got {seed!r}")
    state = np.random.SeedSequence([seed, stream, zlib.crc32(name.encode())]).generate_state(1)
    return int(state[0])


def simulate(name: str, n: int, seed: int, stream: int = _TRAIN_VAL) -> Split:
    """``n`` pairs ``theta ~ p(theta), x ~ p(x | theta)`` as ``Split(x=theta, c=x)``,
    reproducible from ``(name, seed, stream)``."""
    task = get_task(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_stream_seed(name, seed, stream))
        theta = task.sample_prior(n)
        x = torch.cat([task.simulate(t) for t in theta.split(_CHUNK)])  # bounded memory
        return Split(x=theta, c=x)


def simulate_splits(
    task_name: str,
    budget: int,
    seed: int,
    val_fraction: float = 0.1,
    n_test: int = 10_000,
) -> dict[str, Split]:
    """Training, validation and test simulations of a task.

    The simulation budget is split as sbi trains its estimators: ``round(val_fraction * budget)``
    (at least 1) simulations are held out for validation, the rest train. The test split is
    ``n_test`` further simulations from an independent random stream, the same for every budget
    at a given seed; it is for held-out NLL only (the benchmark score is :func:`posterior_c2st`).

    Returns:
        ``{"train", "val", "test"}`` -> ``Split(x=theta (B, D_theta), c=x (B, D_x))``.
    """
    _check_name(task_name)
    if not _is_int(budget) or budget < 2:
        raise UserError(f"{task_name}: simulation budget must be an int >= 2, got {budget!r}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"{task_name}: val_fraction must be in (0, 1), got {val_fraction!r}")
    if not _is_int(n_test) or n_test < 1:
        raise UserError(f"{task_name}: n_test must be a positive int, got {n_test!r}")
    n_val = min(max(1, round(val_fraction * budget)), budget - 1)
    both = simulate(task_name, budget, seed, _TRAIN_VAL)
    train = Split(both.x[n_val:], both.c[n_val:])
    val = Split(both.x[:n_val], both.c[:n_val])
    return {"train": train, "val": val, "test": simulate(task_name, n_test, seed, _TEST)}
