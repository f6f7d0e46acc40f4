"""Equivariance harness for graph maps: random E(d) elements and node permutations.

A group element ``g = (R, t, P)`` acts on a PyG-style batch (positions ``(N, d)``, features
``(N, F)``, batch vector ``(N,)``) as

    g · (pos, h) = (P (pos R^T + t[batch]), P h),

with R orthogonal (reflections included), one translation ``t`` per graph ``(B, d)`` and P a
permutation of nodes *within* each graph (so ``batch`` is unchanged). A map ``fn(pos, h, batch)
-> (pos', h')`` is equivariant if ``fn(g · (pos, h)) = g · fn(pos, h)``, where positions may be
translation invariant rather than equivariant (e.g. re-centred outputs); a per-graph value
``(B, ...)`` such as a log-density is invariant if ``fn(g · (pos, h)) = fn(pos, h)``.

Group elements are drawn in float64 and cast to the data's dtype; :func:`tolerance` gives the
default absolute tolerance per dtype (relative to the output scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

GraphMap = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-3}


def tolerance(dtype: torch.dtype) -> float:
    """Default absolute tolerance of an equivariance error for ``dtype`` (outputs of scale 1)."""
    if dtype not in _TOLERANCE:
        raise ValueError(f"no tolerance for dtype {dtype}; choose from {list(_TOLERANCE)}")
    return _TOLERANCE[dtype]


def random_orthogonal(
    d: int = 3, *, reflection: bool | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Haar-random element of O(d), float64 ``(d, d)``.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007, "How to
    generate random matrices from the classical compact groups"). ``reflection=True`` forces
    ``det = -1``, ``False`` forces ``det = +1`` (SO(d)), ``None`` leaves it random.
    """
    if d < 1:
        raise ValueError(f"need d >= 1, got {d}")
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if reflection is not None and bool(torch.linalg.det(q) < 0) != reflection:
        q = q.clone()
        q[:, 0] = -q[:, 0]
    return q


def random_permutation(batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random permutation ``perm`` ``(N,)`` of nodes within graphs: ``batch[perm] == batch``.

    Node rows are permuted as ``t[perm]``; ``batch`` need not be sorted.
    """
    if batch.dim() != 1:
        raise ValueError(f"batch must be (N,), got shape {tuple(batch.shape)}")
    key = batch.to(torch.float64)
    u = torch.rand(batch.shape, generator=generator, dtype=torch.float64).to(batch.device)
    shuffled = torch.argsort(key + 0.5 * u)  # grouped by graph, random order inside each
    order = torch.argsort(key, stable=True)  # grouped by graph, original order inside each
    perm = torch.empty_like(order)
    perm[order] = shuffled
    return perm


@dataclass
class GroupElement:
    """``g = (R, t, P)``: rotation/reflection ``(d, d)``, per-graph translation ``(B, d)``,
    within-graph node permutation ``(N,)``."""

    rotation: Tensor
    translation: Tensor
    permutation: Tensor

    def act(
        self, pos: Tensor, h: Tensor, batch: Tensor, *, translate: bool = True
    ) -> tuple[Tensor, Tensor]:
        """``g · (pos, h) = (P (pos R^T + t[batch]), P h)``; ``translate=False`` omits ``t``."""
        r = self.rotation.to(pos)
        pos = pos @ r.T
        if translate:
            pos = pos + self.translation.to(pos)[batch]
        return pos[self.permutation], h[self.permutation]

    def act_rows(self, x: Tensor, batch: Tensor, pos_dim: int = 3) -> Tensor:
        """The same action on node rows ``(N, d + F)``, positions first."""
        pos, h = self.act(x[:, :pos_dim], x[:, pos_dim:], batch)
        return torch.cat([pos, h], dim=1)


def random_group_element(
    batch: Tensor,
    d: int = 3,
    *,
    reflection: bool | None = None,
    translate: bool = True,
    permute: bool = True,
    translation_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> GroupElement:
    """Draw ``g = (R, t, P)`` for a batch; see :func:`random_orthogonal` for ``reflection``.

    ``translate=False`` gives ``t = 0``, ``permute=False`` the identity permutation.
    """
    num_graphs = int(batch.max().item()) + 1 if batch.numel() else 0
    t = translation_scale * torch.randn(num_graphs, d, generator=generator, dtype=torch.float64)
    if not translate:
        t = torch.zeros_like(t)
    perm = (
        random_permutation(batch, generator)
        if permute
        else torch.arange(batch.numel(), device=batch.device)
    )
    r = random_orthogonal(d, reflection=reflection, generator=generator)
    return GroupElement(r, t.to(batch.device), perm)


def rows_map(fn: Callable[[Tensor], Tensor], pos_dim: int = 3) -> GraphMap:
    """Turn a map on node rows ``(N, d + F) -> (N, d + F)`` into ``(pos, h, batch) -> (pos, h)``."""

    def graph_fn(pos: Tensor, h: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        y = fn(torch.cat([pos, h], dim=1))
        return y[:, :pos_dim], y[:, pos_dim:]

    return graph_fn


def _scaled_error(got: Tensor, want: Tensor) -> float:
    if got.shape != want.shape:
        raise AssertionError(f"shape changed under the group action: {got.shape} vs {want.shape}")
    scale = max(1.0, float(want.detach().abs().max())) if want.numel() else 1.0
    return float((got - want).detach().abs().max()) / scale if want.numel() else 0.0


def equivariance_error(
    fn: GraphMap,
    pos: Tensor,
    h: Tensor,
    batch: Tensor,
    g: GroupElement,
    *,
    translate_output: bool = True,
) -> dict[str, float]:
    """Largest errors of ``fn(g · x) = g · fn(x)``, relative to the output scale (at least 1).

    Args:
        fn: ``(pos (N, d), h (N, F), batch (N,)) -> (pos' (N, d), h' (N, F'))``.
        g: the group element; its permutation must keep ``batch``.
        translate_output: False when ``pos'`` is translation invariant (then only R, P act on it).

    Returns:
        ``{"pos": ..., "h": ...}``: position equivariance and feature invariance errors.
    """
    if not torch.equal(batch[g.permutation], batch):
        raise ValueError("the group element's permutation mixes nodes of different graphs")
    pos_out, h_out = fn(pos, h, batch)
    want_pos, want_h = g.act(pos_out, h_out, batch, translate=translate_output)
    got_pos, got_h = fn(*g.act(pos, h, batch), batch)
    return {"pos": _scaled_error(got_pos, want_pos), "h": _scaled_error(got_h, want_h)}


def check_equivariance(
    fn: GraphMap,
    pos: Tensor,
    h: Tensor,
    batch: Tensor,
    *,
    trials: int = 3,
    reflection: bool | None = None,
    translate: bool = True,
    translate_output: bool = True,
    permute: bool = True,
    atol: float | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Assert ``fn`` is E(d)- and permutation-equivariant on ``trials`` random group elements.

    The first trial uses a reflection (unless ``reflection`` says otherwise), the second a proper
    rotation, later ones random. Raises ``AssertionError`` naming the largest error if it exceeds
    ``atol`` (default :func:`tolerance` of ``pos.dtype``).

    Returns:
        the largest errors seen, ``{"pos": ..., "h": ...}``.
    """
    atol = tolerance(pos.dtype) if atol is None else atol
    worst = {"pos": 0.0, "h": 0.0}
    for k in range(trials):
        refl = reflection if reflection is not None else (k == 0 if k < 2 else None)
        g = random_group_element(
            batch,
            pos.shape[1],
            reflection=refl,
            translate=translate,
            permute=permute,
            generator=generator,
        )
        err = equivariance_error(fn, pos, h, batch, g, translate_output=translate_output)
        worst = {key: max(worst[key], err[key]) for key in worst}
    if max(worst.values()) > atol:
        raise AssertionError(f"equivariance error above {atol:g}: {worst}")
    return worst


def check_invariance(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    pos: Tensor,
    h: Tensor,
    batch: Tensor,
    *,
    trials: int = 3,
    translate: bool = True,
    permute: bool = True,
    atol: float | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Assert a per-graph value ``fn(pos, h, batch) -> (B, ...)`` is unchanged by random g.

    Use it for log-densities and log-determinants. First trial reflects, second rotates.
    Returns the largest error relative to the output scale (at least 1); raises
    ``AssertionError`` above ``atol`` (default :func:`tolerance` of ``pos.dtype``).
    """
    atol = tolerance(pos.dtype) if atol is None else atol
    want = fn(pos, h, batch)
    worst = 0.0
    for k in range(trials):
        g = random_group_element(
            batch,
            pos.shape[1],
            reflection=(k == 0) if k < 2 else None,
            translate=translate,
            permute=permute,
            generator=generator,
        )
        worst = max(worst, _scaled_error(fn(*g.act(pos, h, batch), batch), want))
    if worst > atol:
        raise AssertionError(f"invariance error {worst:g} above {atol:g}")
    return worst
