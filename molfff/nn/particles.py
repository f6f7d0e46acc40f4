"""An EGNN on flattened particle systems ``(B, n·d)``, for Boltzmann generators.

Particle systems (DW4, LJ13, LJ55) are dense rows ``(x_1, ..., x_n)`` of n particles in d
dimensions, with no per-particle features. :class:`ParticleEGNN` views each row as a fully
connected graph of n nodes and applies :class:`~molfff.nn.egnn.EGNNFlowNet`, so the map is
E(d)-equivariant and permutation-equivariant, and keeps the zero-centre-of-mass subspace that
:class:`~molfff.fff.ParticleLayout` describes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molfff.nn.egnn import EGNNFlowNet


class ParticleEGNN(nn.Module):
    """``(B, n·d) -> (B, n·d)`` through an equivariant GNN over the n particles of each row.

    Args:
        n_particles: n.
        spatial_dim: d.
        **egnn_kwargs: passed to :class:`~molfff.nn.egnn.EGNN` (``hidden``, ``blocks``, ...).
    """

    def __init__(self, n_particles: int, spatial_dim: int, **egnn_kwargs):
        super().__init__()
        if n_particles < 2 or spatial_dim < 1:
            raise ValueError(
                f"need n_particles >= 2 and spatial_dim >= 1, got {n_particles}, {spatial_dim}"
            )
        self.n_particles, self.spatial_dim = n_particles, spatial_dim
        self.net = EGNNFlowNet(features=0, pos_dim=spatial_dim, **egnn_kwargs)
        self._batch_size = -1

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        n, d = self.n_particles, self.spatial_dim
        if x.dim() != 2 or x.shape[1] != n * d:
            raise ValueError(f"ParticleEGNN expects (B, {n * d}) rows, got {tuple(x.shape)}")
        b = x.shape[0]
        if b != self._batch_size or self.net.batch is None or self.net.batch.device != x.device:
            # graphs of the same size: the (N,) batch vector depends only on B, build it once
            self.net.set_batch(torch.arange(b, device=x.device).repeat_interleave(n), b)
            self._batch_size = b
        return self.net(x.reshape(b * n, d), c).reshape(b, n * d)
