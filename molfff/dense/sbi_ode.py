"""The two ODE tasks of sbibm, SIR and Lotka-Volterra, simulated in Python (sbibm needs Julia).

Both follow sbibm 1.1.0 (Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021):
same priors, initial states, observation times and noise models. sbibm solves the ODEs with
``Tsit5`` (reltol = abstol = 1e-8); here they are solved in log coordinates with a batched
Dormand-Prince 5(4) integrator with a per-sample step size, to the same accuracy. Log coordinates
keep populations positive, and a tolerance on them is a tolerance on relative error, which is
what the observation models (binomial in ``I/N``, log-normal in the populations) see.

- SIR: ``S' = -b S I / N, I' = b S I / N - g I, R' = g I`` with ``N = 1e6``, ``(S, I, R)(0) =
  (N - 1, 1, 0)``, ``(b, g) ~ LogNormal((log 0.4, log 0.125), (0.5, 0.2))``; data: ``I`` on days
  0, 17, ..., 153, observed as ``Binomial(1000, I / N)``.
- Lotka-Volterra: ``x' = a x - b x y, y' = -c y + d x y`` with ``(x, y)(0) = (30, 1)``,
  ``(a, b, c, d) ~ LogNormal((-0.125, -3, -0.125, -3), 0.5)``; data: ``x`` then ``y`` at
  ``t = 0, 2.1, ..., 18.9``, observed as ``LogNormal(log clamp(u, 1e-10, 1e4), 0.1)``.

Randomness comes from torch's global generator (as in sbibm); callers seed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

# Dormand & Prince (1980), RK5(4)7M: stage coefficients, 5th-order weights and error weights.
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = _A[6] + (0.0,)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


def solve_autonomous(
    f: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y0: np.ndarray,
    p: np.ndarray,
    times: np.ndarray,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    h0: float = 1e-2,
    max_steps: int = 100_000,
) -> np.ndarray:
    """Solve ``y' = f(y, p)`` for a batch, each sample with its own adaptive step.

    Steps are clipped so that every time in ``times`` is hit exactly (no interpolation); finished
    samples leave the working set, so the cost follows each sample's own number of steps.

    Args:
        f: right-hand side ``(n, S), (n, P) -> (n, S)``.
        y0: ``(B, S)`` initial states at ``t = 0``.
        p: ``(B, P)`` parameters.
        times: ``(K,)`` increasing, non-negative output times.
        rtol, atol: error tolerance per component, ``|err| <= atol + rtol * |y|``.

    Returns:
        ``(B, K, S)`` states at ``times``.

    Raises:
        RuntimeError: a sample needed more than ``max_steps`` steps (the problem is too stiff).
    """
    b, k_out = len(y0), len(times)
    out = np.empty((b, k_out, y0.shape[1]))
    rows, y, t, h = np.arange(b), y0.copy(), np.zeros(b), np.full(b, h0)
    nxt = np.zeros(b, dtype=np.int64)
    if times[0] <= 0:
        out[:, 0] = y0
        nxt += 1
    k1 = f(y, p)
    for _ in range(max_steps):
        if len(rows) == 0:
            return out
        gap = times[np.minimum(nxt, k_out - 1)] - t
        hit = h >= gap
        hi = np.where(hit, gap, h)[:, None]  # (n, 1)
        k = [k1]
        for a in _A[1:]:
            k.append(f(y + hi * sum(aj * kj for aj, kj in zip(a, k, strict=True) if aj), p))
        y5 = y + hi * sum(bj * kj for bj, kj in zip(_B5, k, strict=True) if bj)
        err = hi * sum(ej * kj for ej, kj in zip(_E, k, strict=True) if ej)
        ratio = np.abs(err / (atol + rtol * np.maximum(np.abs(y), np.abs(y5)))).max(axis=1)
        ratio = np.where(np.isfinite(ratio), ratio, np.inf)  # (n,)
        ok = ratio <= 1.0
        y, k1 = np.where(ok[:, None], y5, y), np.where(ok[:, None], k[6], k1)  # FSAL
        saved = ok & hit
        t = np.where(saved, times[np.minimum(nxt, k_out - 1)], np.where(ok, t + hi[:, 0], t))
        out[rows[saved], nxt[saved]] = y5[saved]
        nxt = nxt + saved
        factor = np.clip(0.9 * np.maximum(ratio, 1e-10) ** -0.2, 0.2, 5.0)
        h = np.where(saved, np.maximum(h, hi[:, 0] * factor), hi[:, 0] * factor)
        keep = nxt < k_out
        if not keep.all():
            rows, y, p, t, h, nxt, k1 = (a[keep] for a in (rows, y, p, t, h, nxt, k1))
    raise RuntimeError(f"ODE solver: {len(rows)} samples exceeded {max_steps} steps")


def _solve(f, u0: tuple[float, ...], theta: Tensor, times: Tensor, h0: float) -> np.ndarray:
    """Check ``theta`` and solve from the same initial state for every row: ``(B, K, S)``."""
    y0 = np.tile(np.asarray(u0, dtype=np.float64), (len(theta), 1))
    with np.errstate(over="ignore", invalid="ignore"):  # rejected trial steps may overflow
        return solve_autonomous(f, y0, theta.double().numpy(), times.numpy(), h0=h0)


# --- SIR ---------------------------------------------------------------------------------------

SIR_N = 1e6
SIR_COUNT = 1000
SIR_DAYS = torch.arange(0.0, 160.0, 17.0, dtype=torch.float64)  # (10,): 0, 17, ..., 153
SIR_PRIOR = torch.distributions.LogNormal(
    torch.tensor([math.log(0.4), math.log(0.125)]), torch.tensor([0.5, 0.2])
)


def _sir_rhs(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``u = (log S/N, log I/N)``: ``(log s)' = -b i``, ``(log i)' = b s - g``."""
    return np.stack([-p[:, 0] * np.exp(u[:, 1]), p[:, 0] * np.exp(u[:, 0]) - p[:, 1]], axis=1)


def sir_infected(theta: Tensor) -> Tensor:
    """Noise-free infected fraction ``I/N`` on the observation days, ``(B, 2) -> (B, 10)``."""
    u0 = (math.log((SIR_N - 1) / SIR_N), math.log(1 / SIR_N))
    u = _solve(_sir_rhs, u0, theta, SIR_DAYS, h0=0.1)
    return torch.from_numpy(np.exp(u[:, :, 1]))  # (B, 10)


def sir_simulate(theta: Tensor) -> Tensor:
    """SIR data: counts out of 1000, ``(B, 2) -> (B, 10)`` float32."""
    probs = sir_infected(theta).clamp(0.0, 1.0)
    return torch.distributions.Binomial(SIR_COUNT, probs=probs).sample().float()


# --- Lotka-Volterra ----------------------------------------------------------------------------

LV_U0 = (30.0, 1.0)
LV_TIMES = torch.arange(10, dtype=torch.float64) * 2.1  # (10,): every 21st point of a 0.1 grid
LV_NOISE = 0.1
LV_PRIOR = torch.distributions.LogNormal(
    torch.tensor([-0.125, -3.0, -0.125, -3.0]), torch.full((4,), 0.5)
)


def _lv_rhs(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``u = (log x, log y)``: ``(log x)' = a - b y``, ``(log y)' = -c + d x``."""
    return np.stack(
        [p[:, 0] - p[:, 1] * np.exp(u[:, 1]), p[:, 3] * np.exp(u[:, 0]) - p[:, 2]], axis=1
    )


def lv_log_populations(theta: Tensor) -> Tensor:
    """Noise-free ``(log x(t_1..10), log y(t_1..10))``, clamped as sbibm, ``(B, 4) -> (B, 20)``."""
    u = _solve(_lv_rhs, tuple(math.log(v) for v in LV_U0), theta, LV_TIMES, h0=0.01)
    u = torch.from_numpy(u).transpose(1, 2).reshape(len(theta), 20)  # prey, then predators
    return u.clamp(math.log(1e-10), math.log(1e4))


def lv_simulate(theta: Tensor) -> Tensor:
    """Lotka-Volterra data: log-normally observed populations, ``(B, 4) -> (B, 20)`` float32."""
    loc = lv_log_populations(theta)
    return (loc + LV_NOISE * torch.randn(loc.shape, dtype=loc.dtype)).exp().float()
