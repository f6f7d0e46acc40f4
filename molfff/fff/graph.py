"""Graph structure of a batch of fully connected graphs, in plain torch (no pyg-lib).

Used by :class:`~molfff.fff.layout.GraphLayout`, which builds a batch's edges once and hands them
to every network call, so networks need not keep graph state.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fully_connected_edges(batch: Tensor) -> Tensor:
    """All ordered pairs ``(j, i)``, ``i ≠ j``, of nodes in the same graph.

    Node i of a graph with n nodes is repeated n times, paired with every node of its graph, and
    the self pairs are dropped. ``batch`` need not be sorted.

    Args:
        batch: ``(N,)`` non-negative graph index of every node.

    Returns:
        ``(2, E)`` long tensor, ``E = sum_g n_g (n_g - 1)``; row 0 is the source j, row 1 the
        target i (PyG's ``source_to_target`` flow), grouped by target.

    Raises:
        ValueError: if ``batch`` is not a 1-D tensor of non-negative integers.

    Example:
        >>> fully_connected_edges(torch.tensor([0, 0, 1, 1, 1])).shape
        torch.Size([2, 8])
    """
    if batch.dim() != 1:
        raise ValueError(f"batch must be (N,), got shape {tuple(batch.shape)}")
    if batch.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"batch must hold integer graph indices, got {batch.dtype}")
    device = batch.device
    if batch.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    if bool((batch < 0).any()):
        raise ValueError("batch must hold non-negative graph indices")
    order = torch.argsort(batch, stable=True)  # node ids grouped by graph
    grouped = batch[order].long()
    counts = torch.bincount(grouped)  # (B,)
    starts = torch.cumsum(counts, 0) - counts  # (B,)
    size = counts[grouped]  # (N,) size of each node's graph
    target = torch.repeat_interleave(torch.arange(batch.numel(), device=device), size)  # (P,)
    first = torch.cumsum(size, 0) - size
    offset = torch.arange(target.numel(), device=device) - torch.repeat_interleave(first, size)
    source = starts[grouped[target]] + offset  # (P,) every node of the target's graph
    keep = source != target
    return torch.stack([order[source[keep]], order[target[keep]]])  # (2, E)
