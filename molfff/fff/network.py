"""The calling convention of encoder and decoder networks.

The core calls every network as ``net(x, c, layout)``, always with all three arguments:

- ``x``: the batch, laid out as ``layout`` describes (``(B, D)`` rows, ``(B, n·d)`` particles or
  ``(N, F)`` graph node rows);
- ``c``: conditioning (``(B, C)``, one row per sample) or ``None``;
- ``layout``: the batch structure (:class:`~molfff.fff.layout.Layout`).

and expects a tensor shaped like ``x`` back. Dense networks accept the layout and ignore it; graph
networks read ``batch``, ``num_graphs`` and ``edge_index`` from their
:class:`~molfff.fff.layout.GraphLayout` on every call and keep no per-batch state, so one network
serves any batch and nothing has to be "set" before a call. This is the convention of PyG
(``edge_index``/``batch`` passed to every ``forward``). Networks usually declare
``forward(self, x, c=None, layout=None)`` so that direct calls on dense data stay short.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from molfff.fff.layout import Layout


class FlowNetwork(Protocol):
    """A dimension-preserving map ``(x, c, layout) -> y`` with ``y.shape == x.shape``.

    Samples must not interact (the exact log-det and the per-sample loss rely on it), and the
    map must keep the layout's subspace (e.g. zero centre of mass) when there is one.

    Example:
        >>> import torch
        >>> from molfff.fff import DenseLayout
        >>> def double(x, c=None, layout=None):
        ...     return 2 * x
        >>> double(torch.ones(2, 3), None, DenseLayout()).shape
        torch.Size([2, 3])
    """

    def __call__(self, x: Tensor, c: Tensor | None, layout: Layout) -> Tensor: ...
