"""Stabilized E(n)-equivariant graph neural network (EGNN) layers on fully connected graphs.

The flow adapter (node rows in, node rows out, graph structure from the layout) is
:class:`~molfff.nn.egnn_flow.EGNNFlowNet`; graph utilities are in :mod:`molfff.nn.graph`.

One equivariant block updates invariant node features ``h`` with ``L`` invariant sub-layers
(GCL, Satorras et al. 2021a) and then the positions ``x`` once. With ``d_ij = x_i - x_j``,
``r_ij = ||d_ij||^2`` of the current positions and ``r0_ij`` that of the network's *input*
positions, the edge attributes are ``a_ij = (r_ij, r0_ij)`` and

    m_ij = phi_e(h_i, h_j, a_ij),        m_ij <- m_ij · σ(phi_att(m_ij))       (attention gate)
    h_i  <- h_i + phi_h(h_i, (1/Z) sum_{j≠i} m_ij)                               (GCL, L times)
    x_i  <- x_i + (1/Z) sum_{j≠i} d_ij / (||d_ij|| + 1) · phi_x(h_i, h_j, a_ij)  (coordinate update)

with a constant normalization factor ``Z`` (default 100) instead of a mean, which keeps the map
smooth in the number of atoms. Dividing ``d_ij`` by ``||d_ij|| + 1`` bounds each coordinate
message and is what makes the EGNN stable inside a flow (Satorras et al. 2021b; Hoogeboom et al.
2022). Optionally ``phi_x`` is bounded as ``coords_range · tanh(phi_x)`` (off by default, as in the
E-FFF settings). The last layer of ``phi_x`` has no bias and starts near zero (Xavier, gain
1e-3), so the positions start at (almost) the identity.

Every quantity entering an MLP is invariant under rotations, reflections and translations, and
coordinate messages are invariant weights times ``d_ij``: positions are E(d)-equivariant, features
invariant, and both are equivariant to node permutations. Graphs are fully connected per molecule
(:func:`fully_connected_edges`), so graphs of one batch never interact.

References:
    Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021,
    arXiv:2102.09844 (2021a).
    Satorras, Hoogeboom, Fuchs, Posner, Welling, "E(n) Equivariant Normalizing Flows",
    NeurIPS 2021, arXiv:2105.09016 (2021b).
    Hoogeboom, Satorras, Vignac, Welling, "Equivariant Diffusion for Molecule Generation in 3D",
    ICML 2022, arXiv:2203.17003.
    Draxler, Sorrenson, Zimmermann, Rousselot, Köthe, "Free-form Flows: Make Any Architecture a
    Normalizing Flow", AISTATS 2024, arXiv:2310.16624 (E-FFF).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from molfff.fff.graph import fully_connected_edges
from molfff.nn.graph import edge_mlp
from molfff.nn.resnet import ACTIVATIONS

_EPS = 1e-8  # inside sqrt: keeps ||d_ij|| differentiable when two nodes coincide


def _mlp(sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class GCL(MessagePassing):
    """Invariant sub-layer: gated edge messages, normalized sum, residual node MLP.

    ``h_i <- h_i + phi_h(h_i, (1/Z) sum_j m_ij σ(phi_att(m_ij)))`` with
    ``m_ij = phi_e(h_i, h_j, a_ij)``; ``phi_e`` and ``phi_h`` have one hidden layer.
    """

    def __init__(
        self,
        hidden: int,
        edge_dim: int,
        normalization_factor: float,
        activation: str = "silu",
        attention: bool = True,
    ):
        super().__init__(aggr="sum", node_dim=0)
        self.normalization_factor = normalization_factor
        self.edge_mlp = _mlp([2 * hidden + edge_dim, hidden, hidden], activation, True)
        self.att = nn.Linear(hidden, 1) if attention else None
        self.node_mlp = _mlp([2 * hidden, hidden, hidden], activation, False)

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """``(N, H), (2, E), (E, A) -> (N, H)``."""
        m = edge_mlp(self.edge_mlp, h, edge_index, edge_attr)  # (E, H)
        if self.att is not None:
            m = m * torch.sigmoid(self.att(m))
        agg = self.propagate(edge_index, m=m) / self.normalization_factor
        return h + self.node_mlp(torch.cat([h, agg], dim=-1))

    def message(self, m: Tensor) -> Tensor:
        return m


class CoordinateUpdate(MessagePassing):
    """``x_i <- x_i + (1/Z) sum_j d_ij / (||d_ij|| + 1) · phi_x(h_i, h_j, a_ij)``.

    ``phi_x`` has two hidden layers and a bias-free scalar output layer initialised with Xavier
    gain 1e-3. With ``coords_range`` set, ``phi_x`` is bounded as ``coords_range · tanh(phi_x)``.
    """

    def __init__(
        self,
        hidden: int,
        edge_dim: int,
        normalization_factor: float,
        activation: str = "silu",
        coords_range: float | None = None,
    ):
        super().__init__(aggr="sum", node_dim=0)
        self.normalization_factor = normalization_factor
        self.coords_range = coords_range
        out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(out.weight, gain=1e-3)
        self.coord_mlp = nn.Sequential(
            _mlp([2 * hidden + edge_dim, hidden, hidden], activation, True), out
        )

    def forward(
        self, pos: Tensor, h: Tensor, edge_index: Tensor, edge_attr: Tensor, unit_diff: Tensor
    ) -> Tensor:
        """``(N, d), (N, H), (2, E), (E, A), (E, d) -> (N, d)``."""
        w = self.coord_mlp[1](edge_mlp(self.coord_mlp[0], h, edge_index, edge_attr))  # (E, 1)
        if self.coords_range is not None:
            w = self.coords_range * torch.tanh(w)
        shift = self.propagate(edge_index, m=unit_diff * w)  # (N, d)
        return pos + shift / self.normalization_factor

    def message(self, m: Tensor) -> Tensor:
        return m


class EquivariantBlock(nn.Module):
    """``sublayers`` GCLs on the features, then one coordinate update (see module docstring)."""

    def __init__(
        self,
        hidden: int,
        sublayers: int = 2,
        normalization_factor: float = 100.0,
        activation: str = "silu",
        attention: bool = True,
        coords_range: float | None = None,
    ):
        super().__init__()
        edge_dim = 2  # (current, input) squared distance
        self.gcls = nn.ModuleList(
            GCL(hidden, edge_dim, normalization_factor, activation, attention)
            for _ in range(sublayers)
        )
        self.coord = CoordinateUpdate(
            hidden, edge_dim, normalization_factor, activation, coords_range
        )

    def forward(
        self, pos: Tensor, h: Tensor, edge_index: Tensor, r0: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(N, d), (N, H), (2, E), (E, 1) -> (N, d), (N, H)``."""
        source, target = edge_index
        diff = pos.index_select(0, target) - pos.index_select(0, source)  # (E, d) x_i - x_j
        r = (diff**2).sum(dim=-1, keepdim=True)  # (E, 1)
        edge_attr = torch.cat([r, r0], dim=-1)  # (E, 2)
        for gcl in self.gcls:
            h = gcl(h, edge_index, edge_attr)
        unit_diff = diff / (torch.sqrt(r + _EPS) + 1.0)
        return self.coord(pos, h, edge_index, edge_attr, unit_diff), h


class EGNN(nn.Module):
    """E(d)-equivariant GNN: ``(pos, h) -> (pos', h')`` on fully connected graphs.

    ``h`` is embedded linearly to the hidden width, passed with ``pos`` through ``blocks``
    :class:`EquivariantBlock` s and mapped linearly to ``out_features``. For any orthogonal R,
    translation t and node permutation P within graphs,
    ``EGNN(P(pos R^T + t), P h) = (P(pos' R^T + t), P h')``.

    Args:
        in_features: F, invariant input features per node (0: positions only; a constant one
            is then embedded).
        out_features: output features per node (default ``in_features``; 0 allowed).
        hidden: hidden width (64 in the E-FFF settings).
        blocks: number of equivariant blocks (a per-task choice; not fixed by the authors'
            settings we follow).
        sublayers: invariant GCL sub-layers per block (2 in the E-FFF settings).
        normalization_factor: Z, divisor of every neighbour sum (100).
        activation: one of ``relu, silu, tanh, gelu`` (``silu``).
        attention: sigmoid gate on edge messages.
        coords_range: if set, bound ``phi_x`` by ``coords_range · tanh`` (off by default).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        hidden: int = 64,
        blocks: int = 4,
        sublayers: int = 2,
        normalization_factor: float = 100.0,
        activation: str = "silu",
        attention: bool = True,
        coords_range: float | None = None,
    ):
        super().__init__()
        out_features = in_features if out_features is None else out_features
        if min(in_features, out_features, blocks, sublayers) < 0 or hidden < 1:
            raise ValueError(
                f"invalid EGNN sizes: in_features={in_features}, out_features={out_features}, "
                f"hidden={hidden}, blocks={blocks}, sublayers={sublayers}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        if normalization_factor <= 0:
            raise ValueError(f"normalization_factor must be positive, got {normalization_factor}")
        if coords_range is not None and coords_range <= 0:
            raise ValueError(f"coords_range must be positive or None, got {coords_range}")
        self.in_features, self.out_features = in_features, out_features
        self.embedding = nn.Linear(max(in_features, 1), hidden)
        self.blocks = nn.ModuleList(
            EquivariantBlock(
                hidden, sublayers, normalization_factor, activation, attention, coords_range
            )
            for _ in range(blocks)
        )
        self.embedding_out = nn.Linear(hidden, out_features) if out_features else None

    def forward(
        self, pos: Tensor, h: Tensor, batch: Tensor, edge_index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the network.

        Args:
            pos: ``(N, d)`` positions.
            h: ``(N, F)`` invariant node features, ``F = in_features``.
            batch: ``(N,)`` graph index of every node.
            edge_index: ``(2, E)``; fully connected per graph if omitted (pass it to reuse).

        Returns:
            ``(N, d)`` positions and ``(N, out_features)`` features.
        """
        if pos.dim() != 2 or h.dim() != 2 or h.shape[0] != pos.shape[0]:
            raise ValueError(
                f"EGNN expects pos (N, d) and h (N, F), got {tuple(pos.shape)}, {tuple(h.shape)}"
            )
        if h.shape[1] != self.in_features:
            raise ValueError(f"EGNN expects {self.in_features} features, got {h.shape[1]}")
        if batch.shape != (pos.shape[0],):
            raise ValueError(f"batch must be ({pos.shape[0]},), got {tuple(batch.shape)}")
        if edge_index is None:
            edge_index = fully_connected_edges(batch)
        elif edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be (2, E), got {tuple(edge_index.shape)}")
        if self.in_features == 0:
            h = torch.ones_like(pos[:, :1])  # (N, 1), invariant constant
        source, target = edge_index
        diff = pos.index_select(0, target) - pos.index_select(0, source)  # (E, d)
        r0 = diff.pow(2).sum(dim=-1, keepdim=True)  # (E, 1)
        h = self.embedding(h)
        for block in self.blocks:
            pos, h = block(pos, h, edge_index, r0)
        return pos, (h[:, :0] if self.embedding_out is None else self.embedding_out(h))
