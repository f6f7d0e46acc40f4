"""Graph utilities for the networks: fully connected edges, per-edge MLPs, per-graph centring.

Per-graph reductions use PyG's ``scatter`` (torch's own scatter underneath; torch-scatter is
optional). Edges are plain torch (:func:`~molfff.fff.graph.fully_connected_edges`, which the
core's :class:`~molfff.fff.GraphLayout` builds once per batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from molfff.fff.graph import fully_connected_edges

__all__ = ["edge_mlp", "fully_connected_edges", "subtract_graph_mean"]


def edge_mlp(mlp: nn.Sequential, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
    """``mlp(cat[h_i, h_j, a_ij])`` for every edge, its first layer factorised over nodes.

    With the first layer's weight split as ``W = [W_i, W_j, W_a]``,
    ``W [h_i, h_j, a_ij] + b = (h W_i^T)_i + (h W_j^T)_j + a_ij W_a^T + b``: the two ``(N, H)``
    node projections are computed once and gathered per edge, so the first layer costs
    ``O(N H^2 + E H)`` instead of ``O(E H^2)`` (E ≈ N n on fully connected graphs). Same parameters
    and the same function as the concatenated form, up to floating-point rounding.

    Args:
        mlp: ``nn.Sequential`` whose first module is ``nn.Linear(2 H + A, ·)``.
        h: ``(N, H)`` node features.
        edge_index: ``(2, E)`` rows source j, target i.
        edge_attr: ``(E, A)``.

    Returns:
        ``(E, out)``, the MLP's output per edge.
    """
    first = mlp[0]
    hidden = h.shape[1]
    source, target = edge_index
    w = first.weight  # (H1, 2H + A)
    out_dim = w.shape[0]
    proj = h @ torch.cat([w[:, :hidden], w[:, hidden : 2 * hidden]]).T  # (N, 2 H1)
    pre = torch.addmm(first.bias, edge_attr, w[:, 2 * hidden :].T)  # (E, H1)
    # index_select, not proj[target]: its backward is one index_add, where advanced indexing
    # backpropagates through a sorted index_put (about 10 kernels per gather on a GPU)
    pre = pre + proj[:, :out_dim].index_select(0, target)
    pre = pre + proj[:, out_dim:].index_select(0, source)
    return mlp[1:](pre)


def subtract_graph_mean(t: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """``t_i - mean_{j in graph(i)} t_j``: node rows ``(N, D)`` centred per graph, ``(N, D)``."""
    return t - scatter(t, batch, dim=0, dim_size=num_graphs, reduce="mean")[batch]
