"""Local Boltzmann samples of DW4, LJ13 and LJ55 by Metropolis-adjusted Langevin (MALA).

Many independent chains run in one batch on the zero-centre-of-mass subspace
``{x : sum_i x_i = 0}``, where the benchmark densities ``p(x) ∝ exp(-u(x))`` are proper (the
energies are translation invariant). One MALA step with step size h (one per chain) proposes

    y = x - h ∇u(x) + sqrt(2h) P ξ,    ξ ~ N(0, I),

with P the projection onto the subspace (``∇u`` already lies in it), and accepts with probability

    α = min(1, exp(-u(y) + u(x) + log q(x|y) - log q(y|x))),
    log q(y|x) = -||y - x + h ∇u(x)||^2 / (4h) + const(h)

(Roberts & Tweedie 1996). During burn-in only, each chain adapts its own step size by
Robbins-Monro on the acceptance probability, ``log h <- log h + γ_t (α - α*)`` with
``γ_t = γ_0 (t+1)^(-0.6)`` and the MALA-optimal ``α* = 0.574`` (Roberts & Rosenthal 1998); after
burn-in the kernels are fixed, so each chain is a homogeneous Markov chain leaving p invariant.

DW4 is multimodal (each pair distance sits in one of two wells, ~4.4 kT apart at the barrier):
plain MALA chains change mode only every few thousand steps, so DW4 runs with replica exchange
(parallel tempering) over a short temperature ladder by default, which brings the mode weights
to equilibrium within a few hundred steps. LJ13 at kT = 1 is liquid-like; there replica exchange
did not shorten the energy autocorrelation (~400 MALA steps) enough to pay for its extra replicas.

Convergence is checked on the energy: a drift between the first and second half of the draws
across chains (:func:`stationarity_z`, a too-short burn-in), the acceptance rate, and the
split-R-hat across chains (Gelman et al. 2013; Vehtari et al. 2021), reported always and enforced
on request. No such check sees modes that no chain visits, or weights that relax more slowly than
the run. The returned samples get an independent uniformly
random rotation/reflection (Haar on O(d)) and particle permutation each: p is invariant under
both, so this leaves the distribution unchanged and removes the orientation memory of slow
chains.

References:
    Roberts, Tweedie, "Exponential convergence of Langevin distributions and their discrete
    approximations", Bernoulli 2, 341 (1996).
    Roberts, Rosenthal, "Optimal scaling of discrete approximations to Langevin diffusions",
    JRSS B 60, 255 (1998).
    Swendsen, Wang, "Replica Monte Carlo simulation of spin glasses", PRL 57, 2607 (1986).
    Syed, Bouchard-Côté, Deligiannidis, Doucet, "Non-reversible parallel tempering: a scalable
    highly parallel MCMC scheme", JRSS B 84, 321 (2022).
    Gelman et al., "Bayesian Data Analysis", 3rd ed. (2013), sec. 11.4 (split R-hat).
    Vehtari, Gelman, Simpson, Carpenter, Bürkner, "Rank-normalization, folding, and localization:
    an improved R-hat", Bayesian Analysis 16, 667 (2021).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from molfff.boltzmann.data import recentre, save_samples
from molfff.boltzmann.diagnostics import split_rhat, stationarity_z
from molfff.boltzmann.energies import LennardJones, MultiDoubleWell, ParticleEnergy, get_energy

__all__ = [
    "SYSTEM_DEFAULTS",
    "ConvergenceWarning",
    "SamplerDefaults",
    "energy_and_grad",
    "generate",
    "initial_positions",
    "mala",
    "random_symmetry",
    "save_samples",
    "split_rhat",
    "stationarity_z",
]

TARGET_ACCEPT = 0.574


@dataclass(frozen=True)
class SamplerDefaults:
    """Per-system settings of :func:`generate` (measured for DW4 and LJ13; LJ55 untested guesses).

    Attributes:
        spacing: lattice spacing of the initial positions (the pair potential's preferred distance).
        noise: standard deviation of the Gaussian perturbation of the lattice.
        step_size: initial MALA step size h, before burn-in adaptation.
        temperatures: replica-exchange ladder, ``(1.0,)`` for plain MALA.
        burn_in: steps before the first kept draw.
        thin: steps between kept draws (about the energy autocorrelation time).
    """

    spacing: float
    noise: float
    step_size: float
    temperatures: tuple[float, ...]
    burn_in: int
    thin: int


SYSTEM_DEFAULTS = {
    "DW4": SamplerDefaults(4.0, 0.5, 1e-2, (1.0, 1.6, 2.5, 4.0), 1000, 20),
    "LJ13": SamplerDefaults(1.0, 0.05, 1e-3, (1.0,), 3000, 100),
    "LJ55": SamplerDefaults(1.0, 0.05, 1e-3, (1.0,), 5000, 200),
}


class ConvergenceWarning(UserWarning):
    """The chains did not pass the convergence check (split-R-hat or acceptance)."""


def initial_positions(
    energy: ParticleEnergy,
    n_chains: int,
    generator: torch.Generator | None = None,
    spacing: float | None = None,
    noise: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Perturbed lattice start: ``(n_chains, n·d)``, zero centre of mass.

    The n points of the cubic lattice ``spacing · Z^d`` nearest its centre, plus independent
    Gaussian noise of standard deviation ``noise`` per coordinate. The default spacing is the
    potential's preferred distance (d0 = 4 for DW4, rm = 1 for LJ), so no two particles overlap.
    """
    if n_chains < 1:
        raise ValueError(f"n_chains must be positive, got {n_chains}")
    n, d = energy.n_particles, energy.spatial_dim
    defaults = SYSTEM_DEFAULTS.get(energy.name, SYSTEM_DEFAULTS["LJ13"])
    spacing = defaults.spacing if spacing is None else spacing
    noise = defaults.noise if noise is None else noise
    side = math.ceil(n ** (1 / d)) + 2
    axis = torch.arange(side, dtype=dtype, device=device) - (side - 1) / 2
    grid = torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)
    # ties broken by lattice order, which keeps the choice deterministic
    order = torch.argsort((grid**2).sum(1) + 1e-9 * torch.arange(len(grid), device=device))
    lattice = spacing * grid[order[:n]]  # (n, d)
    eps = torch.randn(n_chains, n, d, generator=generator, dtype=dtype, device=device)
    return recentre((lattice + noise * eps).reshape(n_chains, n * d), n, d)


def random_symmetry(
    x: Tensor, n_particles: int, spatial_dim: int, generator: torch.Generator | None = None
) -> Tensor:
    """Apply an independent Haar-random element of O(d) and particle permutation to each sample.

    The orthogonal matrix is ``Q·diag(sign(diag R))`` from the QR decomposition of a Gaussian
    matrix, which is Haar distributed on O(d) (Mezzadri 2007). ``(B, n·d) -> (B, n·d)``.
    """
    b, n, d = x.shape[0], n_particles, spatial_dim
    g = torch.randn(b, d, d, generator=generator, dtype=x.dtype, device=x.device)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # (B, d, d)
    perm = torch.argsort(torch.rand(b, n, generator=generator, device=x.device), dim=1)
    p = x.reshape(b, n, d) @ q.transpose(1, 2)
    p = torch.gather(p, 1, perm.unsqueeze(2).expand(b, n, d))
    return p.reshape(b, n * d)


def energy_and_grad(energy: ParticleEnergy, x: Tensor) -> tuple[Tensor, Tensor]:
    """Reduced energy ``u(x)`` ``(B,)`` and its gradient ``∇u(x)`` ``(B, n·d)``.

    For the exact classes :class:`MultiDoubleWell` and :class:`LennardJones` in closed form from
    the Gram matrix of the centred positions (``r_ij^2 = G_ii + G_jj - 2 G_ij``), which avoids
    autograd and per-pair gathers: with ``w_ij = dv/d(r^2)`` at ``r_ij``,

        ∇_{x_i} u = (1/kT) [2m sum_j w_ij (x_i - x_j) + ∇_{x_i} U_1],

    ``dv/d(r^2) = (2a t + b)(r - d0)/r``, ``t = (r - d0)^2`` for the double well and
    ``-6 eps (s^6 - s^3) s / rm^2``, ``s = rm^2/r^2`` for Lennard-Jones. Any other energy (a
    subclass included) goes through autograd.
    """
    kind = type(energy)
    if kind not in (MultiDoubleWell, LennardJones):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            u = energy(xg)
            (g,) = torch.autograd.grad(u.sum(), xg)
        return u.detach(), g
    b, n, dim = x.shape[0], energy.n_particles, energy.spatial_dim
    p = x.detach().reshape(b, n, dim)
    c = p - p.mean(dim=1, keepdim=True)  # (B, n, d)
    gram = c @ c.transpose(1, 2)  # (B, n, n)
    sq = torch.diagonal(gram, dim1=1, dim2=2)  # (B, n)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    r2 = (sq.unsqueeze(1) + sq.unsqueeze(2) - 2 * gram).clamp(min=0) + eye  # 1 on the diagonal
    off = 1 - eye
    if kind is LennardJones:
        s = energy.rm**2 / r2
        s3 = s * s * s
        v = energy.eps * (s3 * s3 - 2 * s3) * off
        w = (-6 * energy.eps / energy.rm**2) * (s3 * s3 - s3) * s * off
        one_body = 0.5 * energy.oscillator_scale * sq.sum(1)
        one_body_grad = energy.oscillator_scale * c
    else:
        r = torch.sqrt(r2)
        t = (r - energy.d0) ** 2
        v = (energy.a * t * t + energy.b * t) * off
        w = (2 * energy.a * t + energy.b) * (r - energy.d0) / r * off
        one_body, one_body_grad = 0.0, 0.0
    m = energy.multiplicity
    u = (0.5 * m * v.sum(dim=(1, 2)) + one_body) / energy.kT
    grad = 2 * m * (w.sum(dim=2, keepdim=True) * c - w @ c) + one_body_grad
    return u, (grad / energy.kT).reshape(b, n * dim)


def mala(
    energy: ParticleEnergy,
    x0: Tensor,
    n_draws: int,
    burn_in: int = 1000,
    thin: int = 10,
    step_size: float = 1e-3,
    temperatures: Sequence[float] = (1.0,),
    target_accept: float = TARGET_ACCEPT,
    adapt_rate: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, dict]:
    """MALA chains on the zero-centre-of-mass subspace, optionally with replica exchange.

    Every chain c has one replica per temperature ``T_k`` (``T_0 = 1``), which targets
    ``exp(-u/T_k)`` with its own MALA step size (module docstring). After every MALA step,
    neighbouring replicas ``(k, k+1)`` with k even (even steps) or odd (odd steps) exchange
    states with probability ``min(1, exp((β_k - β_{k+1}) (u_k - u_{k+1})))``, ``β = 1/T``,
    which leaves the product of the replica densities invariant (Swendsen & Wang 1986; the
    deterministic even/odd schedule of Syed et al. 2022). Only the ``T_0 = 1`` replicas are
    recorded.

    Args:
        energy: reduced energy ``u``, ``(B, n·d) -> (B,)``, translation invariant.
        x0: ``(K·C, n·d)`` start, replica-major (the C chains of ``T_0``, then of ``T_1``, ...).
        n_draws: draws kept per chain after burn-in.
        burn_in: steps before the first kept draw; step sizes adapt only here.
        thin: steps between kept draws.
        step_size: initial h of every replica.
        temperatures: ``T_0 = 1 < T_1 < ...``; one value for plain MALA.
        target_accept: acceptance probability the burn-in adaptation aims at.
        adapt_rate: γ_0 of the Robbins-Monro schedule ``γ_t = γ_0 (t+1)^(-0.6)``.
        generator: source of randomness (the run is deterministic given its state).
        progress: show a tqdm bar on stderr.

    Returns:
        ``(n_draws, C, n·d)`` draws at T = 1, ``(n_draws, C)`` their energies, and a dict with
        ``acceptance`` ``(K, C)`` (MALA acceptance rate after burn-in), ``step_size`` ``(K, C)``
        (final h) and ``swap_acceptance`` ``(K-1,)`` (exchange rate of each neighbouring pair
        after burn-in).
    """
    n, d = energy.n_particles, energy.spatial_dim
    temps = torch.as_tensor(temperatures, dtype=x0.dtype, device=x0.device)
    k_reps = temps.numel()
    if temps.dim() != 1 or k_reps < 1 or temps[0] != 1 or (temps[1:] <= temps[:-1]).any():
        raise ValueError(f"temperatures must increase from 1, got {list(temperatures)}")
    if x0.dim() != 2 or x0.shape[1] != n * d or x0.shape[0] % k_reps:
        raise ValueError(
            f"x0 must be (K·C, {n * d}) for {energy.name} with K={k_reps} temperatures, "
            f"got {tuple(x0.shape)}"
        )
    if n_draws < 1 or burn_in < 0 or thin < 1:
        raise ValueError(
            f"need n_draws >= 1, burn_in >= 0, thin >= 1, got {n_draws}, {burn_in}, {thin}"
        )
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    c = x0.shape[0] // k_reps
    opts = {"dtype": x0.dtype, "device": x0.device}
    beta = (1 / temps).repeat_interleave(c)  # (K·C,)
    x = recentre(x0.detach(), n, d)
    log_h = torch.full((k_reps * c,), math.log(step_size), **opts)
    u, g = energy_and_grad(energy, x)
    if not torch.isfinite(u).all():
        raise ValueError(f"energy of the initial positions is not finite in {energy.name}")
    draws = x.new_empty(n_draws, c, n * d)
    energies = x.new_empty(n_draws, c)
    accepted = torch.zeros(k_reps * c, **opts)
    swaps = torch.zeros(max(k_reps - 1, 0), **opts)
    swap_tries = torch.zeros(max(k_reps - 1, 0), **opts)
    total = burn_in + n_draws * thin
    with tqdm(
        total=total, desc=f"MALA {energy.name}", file=sys.stderr, disable=not progress
    ) as bar:
        for step in range(total):
            h = log_h.exp().unsqueeze(1)  # (K·C, 1)
            drift = h * beta.unsqueeze(1) * g
            xi = torch.randn(x.shape, generator=generator, **opts)
            y = x - drift + torch.sqrt(2 * h) * recentre(xi, n, d)
            u_y, g_y = energy_and_grad(energy, y)
            fwd = ((y - x + drift) ** 2).sum(1)  # ||y - x + hβ∇u(x)||^2
            bwd = ((x - y + h * beta.unsqueeze(1) * g_y) ** 2).sum(1)
            log_alpha = -beta * (u_y - u) + (fwd - bwd) / (4 * h.squeeze(1))
            ok = torch.isfinite(log_alpha) & torch.isfinite(g_y).all(1)
            log_alpha = torch.where(ok, log_alpha, torch.full_like(log_alpha, -math.inf))
            log_unif = torch.rand(k_reps * c, generator=generator, **opts).log()
            accept = log_unif < log_alpha  # (K·C,)
            x = torch.where(accept.unsqueeze(1), y, x)
            u = torch.where(accept, u_y, u)
            g = torch.where(accept.unsqueeze(1), g_y, g)
            sampling = step >= burn_in
            if k_reps > 1:
                x, u, g, swapped, lower = _exchange(x, u, g, temps, c, step % 2, generator)
                if sampling:
                    swaps[lower] += swapped.to(x.dtype).mean(1)
                    swap_tries[lower] += 1
            if not sampling:
                alpha = log_alpha.clamp(max=0).exp()
                log_h = log_h + adapt_rate * (step + 1) ** -0.6 * (alpha - target_accept)
            else:
                accepted += accept.to(x.dtype)
                k, r = divmod(step - burn_in + 1, thin)
                if r == 0:
                    draws[k - 1] = x[:c]
                    energies[k - 1] = u[:c]
            bar.update()
    stats = {
        "acceptance": (accepted / (n_draws * thin)).reshape(k_reps, c),
        "step_size": log_h.exp().reshape(k_reps, c),
        "swap_acceptance": swaps / swap_tries.clamp(min=1),
    }
    return draws, energies, stats


def _exchange(
    x: Tensor,
    u: Tensor,
    g: Tensor,
    temps: Tensor,
    c: int,
    parity: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One round of replica exchanges between levels ``(k, k+1)``, k ≡ parity (mod 2)."""
    k_reps = temps.numel()
    lower = torch.arange(parity, k_reps - 1, 2, device=x.device)  # (P,)
    if lower.numel() == 0:
        return x, u, g, torch.zeros(0, c, dtype=torch.bool, device=x.device), lower
    uk = u.reshape(k_reps, c)
    dbeta = (1 / temps[lower] - 1 / temps[lower + 1]).unsqueeze(1)  # (P, 1)
    log_r = dbeta * (uk[lower] - uk[lower + 1])  # (P, C)
    rand = torch.rand(log_r.shape, generator=generator, dtype=x.dtype, device=x.device)
    swapped = rand.log() < log_r  # (P, C)
    src = torch.arange(k_reps, device=x.device).unsqueeze(1).expand(k_reps, c).clone()
    src[lower] = torch.where(swapped, lower.unsqueeze(1) + 1, lower.unsqueeze(1))
    src[lower + 1] = torch.where(swapped, lower.unsqueeze(1), lower.unsqueeze(1) + 1)
    rows = (src * c + torch.arange(c, device=x.device)).reshape(-1)  # (K·C,)
    return x[rows], u[rows], g[rows], swapped, lower


def generate(
    system: str,
    n_samples: int,
    n_chains: int = 1000,
    burn_in: int | None = None,
    thin: int | None = None,
    seed: int = 0,
    progress: bool = False,
    step_size: float | None = None,
    temperatures: Sequence[float] | None = None,
    symmetrise: bool = True,
    rhat_threshold: float | None = None,
    z_threshold: float = 4.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict]:
    """Boltzmann samples of a benchmark by MALA, re-centred to zero centre of mass.

    ``ceil(n_samples / n_chains)`` draws are kept per chain, every ``thin``-th step after
    ``burn_in`` steps from a perturbed lattice (:func:`initial_positions`); they are returned in
    time-major order (all chains' first draw, then their second, ...) and truncated to
    ``n_samples``, so every prefix spreads over all chains. Settings left at ``None`` take the
    system's :data:`SYSTEM_DEFAULTS`.

    Args:
        system: ``"DW4"``, ``"LJ13"`` or ``"LJ55"`` (the reference pair-sum conventions).
        n_samples: number of samples N.
        n_chains: chains run in parallel (each with ``len(temperatures)`` replicas).
        burn_in: steps per chain before the first kept draw (step sizes adapt only here).
        thin: steps between kept draws.
        seed: seed of the generator used when ``generator`` is not given.
        progress: show a progress bar on stderr.
        step_size: initial MALA step size h.
        temperatures: replica-exchange ladder ``1 = T_0 < T_1 < ...``, ``(1,)`` for plain MALA.
        symmetrise: give each sample an independent random O(d) element and permutation.
        rhat_threshold: if given, the split-R-hat of the energy must also stay below it for
            ``converged``. Off by default: with many short chains R-hat mostly measures the
            autocorrelation left between a chain's few draws (``R-hat^2 ≈ 1 + τ/m`` for m draws
            per half-chain with autocorrelation time τ in draws), which does not bias the
            samples; a too-short burn-in is what :func:`stationarity_z` detects.
        z_threshold: largest ``|z|`` of :func:`stationarity_z` on the energy for ``converged``.
        dtype: dtype of the chains and the result.
        device: where the chains run.
        generator: random source; overrides ``seed``.

    Returns:
        ``(N, n·d)`` samples and a diagnostics dict of plain Python values: ``system``,
        ``n_samples``, ``n_chains``, ``burn_in``, ``thin``, ``draws_per_chain``,
        ``temperatures``, ``rhat_energy`` (split-R-hat, :func:`split_rhat`), ``drift_z``
        (:func:`stationarity_z` of the energy), ``acceptance`` (mean MALA acceptance
        after burn-in at T = 1), ``acceptance_min``, ``step_size_median``/``_min``/``_max``
        (T = 1), ``swap_acceptance`` (one rate per neighbouring pair of temperatures),
        ``energy_mean``, ``energy_std``, ``converged`` (``|drift_z| < z_threshold``, mean
        acceptance in [0.2, 0.95], and R-hat below ``rhat_threshold`` if given; None when
        each chain gave a single draw, so nothing can be checked) and ``seconds``. A
        :class:`ConvergenceWarning` is issued when ``converged`` is not true.

    Raises:
        UnknownEnergyError: (a ``UserError``) for an unknown system.
        ValueError: for non-positive counts or a bad temperature ladder.
    """
    energy = get_energy(system)
    defaults = SYSTEM_DEFAULTS[energy.name]
    burn_in = defaults.burn_in if burn_in is None else burn_in
    thin = defaults.thin if thin is None else thin
    step_size = defaults.step_size if step_size is None else step_size
    temps = defaults.temperatures if temperatures is None else tuple(temperatures)
    if n_samples < 1 or n_chains < 1 or burn_in < 0 or thin < 1:
        raise ValueError(
            "need n_samples >= 1, n_chains >= 1, burn_in >= 0, thin >= 1, got "
            f"{n_samples}, {n_chains}, {burn_in}, {thin}"
        )
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    energy = energy.to(device)
    n, d = energy.n_particles, energy.spatial_dim
    start = time.perf_counter()
    x0 = initial_positions(energy, len(temps) * n_chains, generator, dtype=dtype, device=device)
    n_draws = math.ceil(n_samples / n_chains)
    draws, energies, stats = mala(
        energy,
        x0,
        n_draws,
        burn_in,
        thin,
        step_size,
        temps,
        generator=generator,
        progress=progress,
    )
    x = draws.reshape(-1, n * d)[:n_samples]
    if symmetrise:
        x = random_symmetry(x, n, d, generator)
    x = recentre(x, n, d)
    rhat, drift = split_rhat(energies), stationarity_z(energies)
    acc, h = stats["acceptance"][0], stats["step_size"][0]
    kept = energies.reshape(-1)[:n_samples]
    diagnostics = {
        "system": energy.name,
        "n_samples": n_samples,
        "n_chains": n_chains,
        "burn_in": burn_in,
        "thin": thin,
        "draws_per_chain": n_draws,
        "temperatures": [float(t) for t in temps],
        "rhat_energy": rhat,
        "drift_z": drift,
        "acceptance": float(acc.mean()),
        "acceptance_min": float(acc.min()),
        "step_size_median": float(h.median()),
        "step_size_min": float(h.min()),
        "step_size_max": float(h.max()),
        "swap_acceptance": [float(a) for a in stats["swap_acceptance"]],
        "energy_mean": float(kept.mean()),
        "energy_std": float(kept.std()) if kept.numel() > 1 else float("nan"),
        "seconds": time.perf_counter() - start,
    }
    problems = []
    if n_draws < 2:
        # one draw per chain: no halves to compare, so the chains' convergence cannot be judged
        diagnostics["converged"] = None
        warnings.warn(
            f"MALA on {energy.name}: convergence not checked, each of the {n_chains} chains "
            "gave a single draw (the drift and R-hat checks need several per chain); "
            "use fewer --chains for the same --n",
            ConvergenceWarning,
            stacklevel=2,
        )
        return x, diagnostics
    if not abs(drift) < z_threshold:
        problems.append(f"energy drift between the halves of the draws, z = {drift:.2f}")
    if not 0.2 <= diagnostics["acceptance"] <= 0.95:
        problems.append(f"mean acceptance {diagnostics['acceptance']:.2f}")
    if rhat_threshold is not None and not rhat < rhat_threshold:
        problems.append(f"split-R-hat of the energy {rhat:.3f} >= {rhat_threshold}")
    diagnostics["converged"] = not problems
    if problems:
        warnings.warn(
            f"MALA on {energy.name} may not have converged: {'; '.join(problems)}; "
            "run longer (burn_in, n_samples per chain) or adjust step_size",
            ConvergenceWarning,
            stacklevel=2,
        )
    return x, diagnostics
