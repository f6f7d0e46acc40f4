"""The EGNN as a free-form flow network on graph node rows ``(N, d + F)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molfff.fff.layout import GraphLayout, Layout
from molfff.nn.egnn import EGNN
from molfff.nn.graph import subtract_graph_mean


class EGNNFlowNet(nn.Module):
    """An :class:`~molfff.nn.egnn.EGNN` as free-form flow encoder or decoder on node rows.

    ``forward(x, c, layout)`` follows :class:`molfff.fff.FlowNetwork`. The first ``d`` columns
    of a row are positions, the rest invariant features. With ``(pos', h') = EGNN(pos, h)``,

        y_pos = pos + δ - <δ>,   δ = pos' - pos,       y_h = h + h',

    with ``<δ>`` the mean of δ over the nodes of each graph: a global skip connection whose
    position update is re-centred per graph. A zero-CoM input
    gives a zero-CoM output, and a translation of the input translates the output (the Jacobian is
    the identity on centre-of-mass directions). ``h'`` comes from a zero-initialised output layer
    and ``δ`` from near-zero coordinate layers, so the map starts at (almost) the identity.

    The graph structure comes with every call, in the :class:`~molfff.fff.GraphLayout`
    (``batch``, ``num_graphs``, ``edge_index``, the latter built once per layout); the network
    itself holds no batch state.

    Args:
        features: F, invariant feature columns after the ``pos_dim`` position columns.
        pos_dim: d, number of position columns (3 for molecules, 2 for DW4).
        cond_dim: C, per-graph conditioning ``c`` of shape ``(B, C)`` appended to every node's
            features (0: unconditional).
        node_index: I > 0 makes nodes distinguishable: node k of every graph (in row order)
            reads the fixed one-hot attribute e_k of length I, which is not transformed. The map
            stays E(d)-equivariant but is no longer permutation-equivariant, so the density can
            tell the labellings of one configuration apart (as for the atoms of one fixed
            molecule), except those that a rotation or reflection realises (two nodes with zero
            centre of mass: a swap is the inversion, so the map stays symmetric). 0 (the
            default): permutation-equivariant. Graphs must have at most I nodes.
        attr_dim: A > 0: every call passes fixed per-node attributes ``node_attr`` of shape
            ``(N, A)`` (e.g. one-hot atom types of a fixed molecule), read like ``c`` and not
            transformed. Permuting nodes together with their attributes permutes the output, so
            the map is permutation-equivariant among nodes with equal attributes only.
        zero_init: start the feature output layer at zero (the map starts at the identity on
            features); False keeps PyTorch's default initialisation, as the authors' E-FFF code
            (vislearn/FFF, EDM's ``EGNN_dynamics_QM9``) does.
        **egnn_kwargs: passed to :class:`~molfff.nn.egnn.EGNN` (``hidden``, ``blocks``, ...).
    """

    def __init__(
        self,
        features: int,
        pos_dim: int = 3,
        cond_dim: int = 0,
        zero_init: bool = True,
        node_index: int = 0,
        attr_dim: int = 0,
        **egnn_kwargs,
    ):
        super().__init__()
        for key, value in (("node_index", node_index), ("attr_dim", attr_dim)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{key} must be an int, got {value!r}")
        if features < 0 or pos_dim < 1 or cond_dim < 0 or node_index < 0 or attr_dim < 0:
            raise ValueError(
                f"invalid EGNNFlowNet sizes: features={features}, pos_dim={pos_dim}, "
                f"cond_dim={cond_dim}, node_index={node_index}, attr_dim={attr_dim}"
            )
        self.features, self.pos_dim, self.cond_dim = features, pos_dim, cond_dim
        self.node_index, self.attr_dim = node_index, attr_dim
        self.net = EGNN(features + cond_dim + node_index + attr_dim, features, **egnn_kwargs)
        if zero_init and self.net.embedding_out is not None:
            nn.init.zeros_(self.net.embedding_out.weight)
            nn.init.zeros_(self.net.embedding_out.bias)

    def forward(
        self,
        x: Tensor,
        c: Tensor | None = None,
        layout: Layout | None = None,
        node_attr: Tensor | None = None,
    ) -> Tensor:
        """``(N, d + F) -> (N, d + F)``; ``c`` is ``(B, C)`` when ``cond_dim > 0``,
        ``node_attr`` ``(N, A)`` when ``attr_dim > 0``.

        Raises:
            ValueError: without a :class:`~molfff.fff.GraphLayout` matching ``x`` and
                ``pos_dim``, with conditioning or node attributes that do not match ``cond_dim``
                or ``attr_dim``, or with a graph of more than ``node_index`` nodes.
        """
        width = self.pos_dim + self.features
        if x.dim() != 2 or x.shape[1] != width:
            raise ValueError(f"EGNNFlowNet expects (N, {width}) node rows, got {tuple(x.shape)}")
        if not isinstance(layout, GraphLayout):
            raise ValueError(
                f"EGNNFlowNet needs the batch's GraphLayout (batch, edges), got {layout!r}"
            )
        if layout.batch.shape != (x.shape[0],):
            raise ValueError(
                f"layout has {layout.batch.numel()} nodes but x has {x.shape[0]} node rows"
            )
        if layout.pos_dim != self.pos_dim:
            raise ValueError(
                f"layout has pos_dim={layout.pos_dim}, EGNNFlowNet pos_dim={self.pos_dim}"
            )
        batch, num_graphs = layout.batch.long(), layout.num_graphs
        pos, h = x[:, : self.pos_dim], x[:, self.pos_dim :]
        h_in = h
        if self.cond_dim:
            if c is None or c.dim() != 2 or c.shape != (num_graphs, self.cond_dim):
                got = None if c is None else tuple(c.shape)
                raise ValueError(
                    f"expected conditioning ({num_graphs}, {self.cond_dim}), got {got}"
                )
            h_in = torch.cat([h, c[batch]], dim=1)
        elif c is not None:
            raise ValueError("EGNNFlowNet built without conditioning (cond_dim=0) received c")
        if self.node_index:
            h_in = torch.cat([h_in, self._index_one_hot(layout).to(h_in)], dim=1)
        if self.attr_dim:
            if node_attr is None or node_attr.shape != (x.shape[0], self.attr_dim):
                got = None if node_attr is None else tuple(node_attr.shape)
                raise ValueError(
                    f"expected node attributes ({x.shape[0]}, {self.attr_dim}), got {got}"
                )
            h_in = torch.cat([h_in, node_attr.to(h_in)], dim=1)
        elif node_attr is not None:
            raise ValueError("EGNNFlowNet built without node attributes (attr_dim=0) received them")
        pos_out, h_out = self.net(pos, h_in, batch, layout.edge_index)
        delta = subtract_graph_mean(pos_out - pos, batch, num_graphs)  # (N, d)
        return torch.cat([pos + delta, h + h_out], dim=1)

    def _index_one_hot(self, layout: GraphLayout) -> Tensor:
        """``(N, I)``: one-hot of each node's rank among its graph's rows."""
        if layout.local_index.numel() and int(layout.counts.max()) > self.node_index:
            raise ValueError(
                f"a graph has {int(layout.counts.max())} nodes; node_index={self.node_index} "
                "distinguishes at most that many"
            )
        return nn.functional.one_hot(layout.local_index, self.node_index)
