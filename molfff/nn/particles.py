"""An EGNN on flattened particle systems ``(B, n·d)``, for Boltzmann generators.

Particle systems (DW4, LJ13, LJ55) are dense rows ``(x_1, ..., x_n)`` of n particles in d
dimensions, with no per-particle features. :class:`ParticleEGNN` views each row as a fully
connected graph of n nodes (:meth:`molfff.fff.ParticleLayout.graph`) and applies
:class:`~molfff.nn.egnn_flow.EGNNFlowNet`, so the map is E(d)-equivariant and
permutation-equivariant (unless the particles are made ``distinguishable``), and keeps the
zero-centre-of-mass subspace that :class:`~molfff.fff.ParticleLayout` describes. Particles of
several species (the atoms of one molecule, a binary mixture) carry their species as a fixed
one-hot attribute, so the map is permutation-equivariant among particles of one species only.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from molfff.fff.layout import Layout, ParticleLayout
from molfff.nn.egnn_flow import EGNNFlowNet


class ParticleEGNN(nn.Module):
    """``(B, n·d) -> (B, n·d)`` through an equivariant GNN over the n particles of each row.

    ``forward(x, c, layout)`` follows :class:`molfff.fff.FlowNetwork`; ``layout`` is the flow's
    :class:`~molfff.fff.ParticleLayout` (one of the same ``n, d`` is made when omitted), whose
    graph view gives the per-call graph structure.

    Args:
        n_particles: n.
        spatial_dim: d.
        distinguishable: give particle i the fixed one-hot attribute e_i (read, not transformed;
            :class:`~molfff.nn.egnn_flow.EGNNFlowNet`'s ``node_index``). The map stays
            E(d)-equivariant but is no longer permutation-equivariant, so the density can tell
            labellings of one configuration apart (not those a rotation or reflection realises;
            with n = 2 a swap is the inversion, so the flag changes nothing): each particle is
            its own species. False (the default) is right for identical particles (DW4, LJ13,
            LJ55).
        species: one label per particle (any ints, e.g. atomic numbers): particle i reads the
            one-hot of its species as a fixed attribute (EGNNFlowNet's ``attr_dim``). The map
            stays E(d)-equivariant and is permutation-equivariant among particles of equal
            species, as for the atoms of one molecule whose element is known (the density gives
            relabellings within an element equal mass, not swaps across elements). The species
            are not part of the ``state_dict``: load weights into a model built with the same
            species. None (the default): one species.
        **egnn_kwargs: passed to :class:`~molfff.nn.egnn.EGNN` (``hidden``, ``blocks``, ...).
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        distinguishable: bool = False,
        species: Sequence[int] | None = None,
        **egnn_kwargs,
    ):
        super().__init__()
        if n_particles < 2 or spatial_dim < 1:
            raise ValueError(
                f"need n_particles >= 2 and spatial_dim >= 1, got {n_particles}, {spatial_dim}"
            )
        self.n_particles, self.spatial_dim = n_particles, spatial_dim
        self.distinguishable = distinguishable
        self.species = None if species is None else _species_tuple(species, n_particles)
        attr_dim = 0
        if self.species is not None:
            if distinguishable:
                raise ValueError("give either distinguishable=True or species, not both")
            labels = sorted(set(self.species))
            codes = torch.tensor([labels.index(s) for s in self.species])
            attr_dim = len(labels)
            self.register_buffer(
                "species_one_hot", nn.functional.one_hot(codes, attr_dim).float(), persistent=False
            )
        index = n_particles if distinguishable else 0
        self.net = EGNNFlowNet(
            features=0, pos_dim=spatial_dim, node_index=index, attr_dim=attr_dim, **egnn_kwargs
        )

    def forward(self, x: Tensor, c: Tensor | None = None, layout: Layout | None = None) -> Tensor:
        n, d = self.n_particles, self.spatial_dim
        if x.dim() != 2 or x.shape[1] != n * d:
            raise ValueError(f"ParticleEGNN expects (B, {n * d}) rows, got {tuple(x.shape)}")
        if layout is None:
            layout = ParticleLayout(n, d)
        elif not isinstance(layout, ParticleLayout) or (
            layout.n_particles,
            layout.spatial_dim,
        ) != (n, d):
            raise ValueError(
                f"ParticleEGNN({n}, {d}) needs a ParticleLayout({n}, {d}), got {layout!r}"
            )
        b = x.shape[0]
        attr = None
        if self.species is not None:
            attr = self.species_one_hot.to(x.dtype).repeat(b, 1)  # (B·n, S)
        return self.net(x.reshape(b * n, d), c, layout.graph(x), attr).reshape(b, n * d)


def _species_tuple(species, n: int) -> tuple[int, ...]:
    """``species`` as n Python ints (numpy and torch integers accepted).

    Raises:
        ValueError: not n integers (floats and bools are refused).
    """
    try:
        out = tuple(operator.index(s) for s in species if not isinstance(s, bool))
        ok = len(out) == n == len(species)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"species must be {n} ints (one per particle), got {species!r}")
    return out
