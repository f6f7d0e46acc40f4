"""Reduced energies ``u(x) = U(x) / kT`` of the particle benchmarks DW4, LJ13 and LJ55.

Every energy maps flattened positions ``(B, n·d)`` in particle-major order
``(x_1, ..., x_n)`` to per-sample reduced energies ``(B,)``, so that the Boltzmann density is
``p(x) ∝ exp(-u(x))``. All are invariant to translations, rotations, reflections and
permutations of the particles.

Pair-sum convention. The literature writes the pair term either as a sum over unique pairs
``sum_{i<j} v(d_ij)`` (``convention="unique"``) or as a sum over ordered pairs
``sum_{i≠j} v(d_ij) = 2 sum_{i<j} v(d_ij)`` (``convention="ordered"``); the two define different
Boltzmann distributions. The default of each benchmark is the one its reference MCMC data
(Klein, Krämer, Noé 2023) follow, decided by the configurational temperature
``E[|∇u|^2] / E[Δu]``, which must be 1 for the right reduced energy
(:func:`molfff.boltzmann.diagnostics.configurational_temperature`; 10,000 samples per split,
the first 10,000 of DW4 train; delta-method standard errors):

==================  ===============  ===============
data                ``unique``       ``ordered``
==================  ===============  ===============
DW4 train           0.999 ± 0.008    1.998 ± 0.016
DW4 val             1.007 ± 0.008    2.015 ± 0.016
DW4 test            1.007 ± 0.008    2.014 ± 0.016
LJ13-1000 val       0.506 ± 0.003    1.004 ± 0.006
LJ13-1000 test      0.499 ± 0.003    0.992 ± 0.006
==================  ===============  ===============

So DW4 follows ``unique`` and LJ13 follows ``ordered`` (the full double sum without 1/2) with the
harmonic trap *not* doubled: fitting ``u = alpha · sum_{i<j} v_LJ + beta · H`` to the LJ13 data by
the same identity (``E[∇u·∇V] = E[ΔV]`` for V the pair sum and the trap H) gives
alpha = 2.02 ± 0.01, beta = 0.99 ± 0.04 on test and 1.99 ± 0.01, 0.97 ± 0.04 on val (bootstrap
errors). No LJ55 data are available here; LJ55 defaults to ``ordered`` like LJ13, on the
assumption that both reference data sets come from the same Lennard-Jones implementation.

References:
    Köhler, Klein, Noé, "Equivariant Flows: Exact Likelihood Generative Learning for Symmetric
    Densities", ICML 2020 (DW4, LJ13 definitions).
    Klein, Krämer, Noé, "Equivariant flow matching", NeurIPS 2023 (the reference MCMC data, LJ55).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molfff.errors import UserError

CONVENTIONS = ("unique", "ordered")
REFERENCE_CONVENTIONS = {"DW4": "unique", "LJ13": "ordered", "LJ55": "ordered"}


class UnknownEnergyError(UserError, ValueError):
    """An energy name or pair-sum convention that does not exist."""


def _check_convention(convention: str) -> float:
    """Multiplicity of each unordered pair in the pair sum."""
    if convention not in CONVENTIONS:
        raise UnknownEnergyError(
            f"unknown pair-sum convention {convention!r}; choose from {', '.join(CONVENTIONS)}"
        )
    return 1.0 if convention == "unique" else 2.0


class ParticleEnergy(nn.Module):
    """Base class: ``u(x) = [m · sum_{i<j} v(d_ij) + U_1(x)] / kT`` on ``(B, n·d)`` positions.

    ``d_ij = ||x_i - x_j||``, ``v`` the pair potential, ``U_1`` an optional one-body term and
    ``m`` the pair multiplicity (1 for ``"unique"``, 2 for ``"ordered"``).

    Attributes:
        name: benchmark name, e.g. ``"DW4"``.
        n_particles: n.
        spatial_dim: d.
        convention: ``"unique"`` or ``"ordered"``.
        kT: temperature in energy units; the module returns ``U / kT``.
    """

    def __init__(self, name: str, n_particles: int, spatial_dim: int, convention: str, kT: float):
        super().__init__()
        if n_particles < 2 or spatial_dim < 1:
            raise ValueError(
                f"need n_particles >= 2 and spatial_dim >= 1, got {n_particles}, {spatial_dim}"
            )
        if not kT > 0:
            raise ValueError(f"kT must be positive, got {kT}")
        self.name = name
        self.n_particles = n_particles
        self.spatial_dim = spatial_dim
        self.convention = convention
        self.multiplicity = _check_convention(convention)
        self.kT = float(kT)
        i, j = torch.triu_indices(n_particles, n_particles, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)

    @property
    def dim(self) -> int:
        """Flattened dimension ``n·d``."""
        return self.n_particles * self.spatial_dim

    def _particles(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{self.name} expects positions of shape (B, {self.dim}) "
                f"(n={self.n_particles}, d={self.spatial_dim}), got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.n_particles, self.spatial_dim)

    def pair_distances(self, x: Tensor) -> Tensor:
        """Distances of the unique pairs ``i<j``: ``(B, n·d) -> (B, n(n-1)/2)``."""
        p = self._particles(x)
        diff = p[:, self.pair_i] - p[:, self.pair_j]  # (B, P, d)
        return torch.sqrt((diff**2).sum(dim=-1))

    def pair_potential(self, d: Tensor) -> Tensor:
        """``v(d)`` elementwise, in energy units."""
        raise NotImplementedError

    def one_body(self, x: Tensor) -> Tensor:
        """Term outside the pair sum, ``(B, n·d) -> (B,)``, in energy units (zero here)."""
        return x.new_zeros(x.shape[0])

    def potential(self, x: Tensor) -> Tensor:
        """``U(x)`` in energy units, ``(B, n·d) -> (B,)``."""
        pairs = self.pair_potential(self.pair_distances(x)).sum(dim=1)
        return self.multiplicity * pairs + self.one_body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Reduced energy ``u(x) = U(x) / kT``, ``(B, n·d) -> (B,)``."""
        return self.potential(x) / self.kT

    def grad(self, x: Tensor) -> Tensor:
        """``∇_x u(x)``, ``(B, n·d)`` (forces in units of kT are its negative).

        Differentiable (the graph is kept) when ``x`` already requires grad.
        """
        self._particles(x)
        create = x.requires_grad
        x = x if create else x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self(x).sum(), x, create_graph=create)
        return g

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, n_particles={self.n_particles}, "
            f"spatial_dim={self.spatial_dim}, convention={self.convention!r}, kT={self.kT}"
        )


class MultiDoubleWell(ParticleEnergy):
    """Double-well pair potential ``v(d) = a (d - d0)^4 + b (d - d0)^2`` (DW4: n=4, d=2).

    ``U(x) = m · sum_{i<j} v(d_ij)``, no one-body term (Köhler, Klein, Noé 2020, eq. for DW4 with
    a=0.9, b=-4, d0=4, tau=1). For ``b < 0`` the minima of ``v`` lie at
    ``d = d0 ± sqrt(-b / (2a))`` with value ``-b^2 / (4a)``; the local maximum at ``d = d0`` is 0.

    Args:
        n_particles: n (4 for DW4).
        spatial_dim: d (2 for DW4).
        a: quartic coefficient, must be positive.
        b: quadratic coefficient.
        d0: centre of the double well.
        kT: temperature tau.
        convention: ``"unique"`` (default, what the DW4 reference data follow) or ``"ordered"``.
    """

    def __init__(
        self,
        n_particles: int = 4,
        spatial_dim: int = 2,
        a: float = 0.9,
        b: float = -4.0,
        d0: float = 4.0,
        kT: float = 1.0,
        convention: str = "unique",
        name: str = "DW4",
    ):
        super().__init__(name, n_particles, spatial_dim, convention, kT)
        if not a > 0:
            raise ValueError(f"a must be positive for a bounded-below double well, got {a}")
        self.a, self.b, self.d0 = float(a), float(b), float(d0)

    def pair_potential(self, d: Tensor) -> Tensor:
        s = (d - self.d0) ** 2
        return self.a * s**2 + self.b * s


class LennardJones(ParticleEnergy):
    """Lennard-Jones clusters with a harmonic trap (LJ13: n=13, LJ55: n=55, d=3).

    ``U(x) = m · sum_{i<j} eps [(rm/d_ij)^12 - 2 (rm/d_ij)^6] + (k/2) sum_i ||x_i - x̄||^2``
    with ``x̄`` the centre of mass, eps = rm = 1, k = 1, tau = 1 (Köhler, Klein, Noé 2020). The pair
    potential has its minimum ``-eps`` at ``d = rm``. The harmonic term around the centre of mass
    keeps the cluster together and, like the pair term, is invariant to translations; it is not
    multiplied by the pair multiplicity ``m``.

    Args:
        n_particles: n.
        spatial_dim: d.
        eps: well depth.
        rm: distance of the minimum.
        oscillator_scale: spring constant k of the harmonic term (0 switches it off).
        kT: temperature tau.
        convention: ``"ordered"`` (default, what the LJ13 reference data follow) or ``"unique"``.
    """

    def __init__(
        self,
        n_particles: int = 13,
        spatial_dim: int = 3,
        eps: float = 1.0,
        rm: float = 1.0,
        oscillator_scale: float = 1.0,
        kT: float = 1.0,
        convention: str = "ordered",
        name: str | None = None,
    ):
        super().__init__(name or f"LJ{n_particles}", n_particles, spatial_dim, convention, kT)
        if not (eps > 0 and rm > 0 and oscillator_scale >= 0):
            raise ValueError(
                f"need eps > 0, rm > 0, oscillator_scale >= 0, got {eps}, {rm}, {oscillator_scale}"
            )
        self.eps, self.rm, self.oscillator_scale = float(eps), float(rm), float(oscillator_scale)

    def pair_potential(self, d: Tensor) -> Tensor:
        s6 = (self.rm / d) ** 6
        return self.eps * (s6**2 - 2 * s6)

    def one_body(self, x: Tensor) -> Tensor:
        p = self._particles(x)
        centred = p - p.mean(dim=1, keepdim=True)
        return 0.5 * self.oscillator_scale * (centred**2).sum(dim=(1, 2))


ENERGIES = {
    "DW4": lambda convention: MultiDoubleWell(4, 2, convention=convention, name="DW4"),
    "LJ13": lambda convention: LennardJones(13, 3, convention=convention, name="LJ13"),
    "LJ55": lambda convention: LennardJones(55, 3, convention=convention, name="LJ55"),
}


def get_energy(name: str, convention: str | None = None) -> ParticleEnergy:
    """The reduced energy ``u(x) = U(x)/kT`` of a named benchmark, ``(B, n·d) -> (B,)``.

    ``DW4``: 4 particles in 2-D, ``v(d) = a (d-d0)^4 + b (d-d0)^2`` with a=0.9, b=-4, d0=4.
    ``LJ13``/``LJ55``: 13/55 particles in 3-D, Lennard-Jones ``eps [(rm/d)^12 - 2 (rm/d)^6]``
    with eps=rm=1 plus the harmonic trap ``0.5 sum_i ||x_i - x̄||^2``. tau = kT = 1 throughout
    (Köhler, Klein, Noé 2020; Klein, Krämer, Noé 2023).

    Args:
        name: ``"DW4"``, ``"LJ13"`` or ``"LJ55"`` (case-insensitive).
        convention: ``"unique"`` sums each pair once (``i<j``); ``"ordered"`` sums ordered pairs
            (``i≠j``, twice the pair term; one-body terms unchanged). ``None`` (default) takes the
            convention of the benchmark's reference data, :data:`REFERENCE_CONVENTIONS`:
            ``unique`` for DW4, ``ordered`` for LJ13 and LJ55 (measurements in the module
            docstring).

    Returns:
        A :class:`ParticleEnergy` module with attributes ``name``, ``n_particles``,
        ``spatial_dim``, ``convention``, ``kT`` and a ``grad`` method.

    Raises:
        UnknownEnergyError: (a ``ValueError`` and a ``UserError``) for an unknown name or
            convention.
    """
    key = name.upper() if isinstance(name, str) else None
    if key not in ENERGIES:
        raise UnknownEnergyError(f"unknown energy {name!r}; choose from {', '.join(ENERGIES)}")
    return ENERGIES[key](REFERENCE_CONVENTIONS[key] if convention is None else convention)
