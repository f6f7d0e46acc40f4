"""How the samples of a batch are laid out, so one loss and one log-det serve vectors and graphs.

A layout answers, for a batch tensor ``t`` shaped like the data, the questions the method asks:
per-sample sums, the projection onto the subspace the data lives on, the number of degrees of
freedom per sample, and an orthonormal basis of that subspace (for exact Jacobians). A layout
is also the graph structure networks receive on every call (``net(x, c, layout)``, see
:mod:`molfff.fff.network`): :class:`GraphLayout` carries ``batch``, ``num_graphs`` and the fully
connected ``edge_index``, and :meth:`ParticleLayout.graph` gives the same view of particle rows.

Shape vocabulary: ``(B, D)`` dense samples, ``(B, n·d)`` flattened particles, ``(N, F)`` graph
node rows with ``(N,)`` batch vector, ``(B,)`` per-sample values, ``(M, ...)`` one row per basis
direction.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property

import torch
from torch import Tensor

from molfff.fff.graph import fully_connected_edges


def helmert_basis(n: int, *, dtype=None, device=None) -> Tensor:
    """Orthonormal basis of the zero-sum subspace of R^n (Helmert contrasts).

    Column ``k-1`` (k = 1..n-1) is ``(1, ..., 1, -k, 0, ..., 0) / sqrt(k(k+1))`` with k ones.
    Column k does not depend on n, which lets graphs of different sizes share columns.

    Returns:
        ``(n, n-1)`` matrix ``H`` with ``H^T H = I`` and ``1^T H = 0``.
    """
    i = torch.arange(n, device=device).unsqueeze(1)  # (n, 1) node index
    k = torch.arange(1, n, device=device).unsqueeze(0)  # (1, n-1) column index
    kf = k.to(dtype or torch.get_default_dtype())
    value = torch.where(i < k, 1.0, torch.where(i == k, -kf, 0.0))
    return (value / torch.sqrt(kf * (kf + 1))).to(dtype or torch.get_default_dtype())


class Layout(ABC):
    """The batch structure the FFF core needs; see the module docstring."""

    @abstractmethod
    def num_samples(self, t: Tensor) -> int:
        """Number of samples B in the batch ``t``."""

    @abstractmethod
    def sum_per_sample(self, t: Tensor) -> Tensor:
        """Sum over everything that belongs to one sample: ``t`` -> ``(B,)``."""

    @abstractmethod
    def broadcast(self, s: Tensor, like: Tensor) -> Tensor:
        """Per-sample values ``(B,)`` broadcast to the shape of ``like``."""

    @abstractmethod
    def dims(self, t: Tensor) -> Tensor:
        """Degrees of freedom per sample (dimension of the subspace), ``(B,)`` float."""

    def project(self, t: Tensor) -> Tensor:
        """Orthogonal projection onto the data subspace (identity for full-dimensional data)."""
        return t

    @abstractmethod
    def tangent_basis(self, t: Tensor) -> Tensor:
        """Orthonormal basis of each sample's subspace, batched: ``(M, *t.shape)``.

        Row ``j`` holds, for every sample at once, its ``j``-th basis vector (zero for samples with
        fewer than ``j + 1`` degrees of freedom). ``M`` is the largest dimension in the batch.
        """

    @abstractmethod
    def coordinates(self, t: Tensor) -> Tensor:
        """Coordinates of ``t`` in the basis of :meth:`tangent_basis`: ``(B, M)`` (zero-padded)."""

    @abstractmethod
    def from_coordinates(self, coords: Tensor, like: Tensor) -> Tensor:
        """Inverse of :meth:`coordinates`: the tensor shaped like ``like`` with coordinates
        ``coords`` ``(B, M)`` in the basis of :meth:`tangent_basis` (padding entries ignored)."""

    @abstractmethod
    def select(self, t: Tensor, keep: Tensor) -> tuple[Tensor, Layout]:
        """The samples of ``t`` where ``keep`` ``(B,)`` is True, and the layout of that sub-batch.

        Returns:
            ``(rows, layout)``: ``rows`` a boolean mask over the first dimension of ``t``
            (``t[rows]`` is the sub-batch) and the layout describing it.
        """

    def valid(self, t: Tensor) -> Tensor:
        """``(B, M)`` mask of the basis directions a sample really has."""
        m = int(self.dims(t).max().item())
        return torch.arange(m, device=t.device) < self.dims(t).unsqueeze(1)

    def randn(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal on the subspace: identity covariance there, zero outside."""
        eps = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
        return self.project(eps)

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-sample inner product ``(B,)``."""
        return self.sum_per_sample(a * b)


class DenseLayout(Layout):
    """Samples are rows of a ``(B, D)`` tensor, optionally restricted to a subspace.

    Args:
        basis: optional ``(D, m)`` matrix with orthonormal columns spanning the subspace the data
            lives on. Without it the data fills R^D.
    """

    def __init__(self, basis: Tensor | None = None):
        if basis is not None:
            if basis.dim() != 2 or basis.shape[1] > basis.shape[0]:
                raise ValueError(f"basis must be (D, m) with m <= D, got {tuple(basis.shape)}")
            gram = basis.T @ basis
            eye = torch.eye(basis.shape[1], dtype=basis.dtype, device=basis.device)
            if not torch.allclose(gram, eye, atol=1e-5):
                raise ValueError("basis columns must be orthonormal")
        self.basis = basis

    def _check(self, t: Tensor) -> None:
        if t.dim() != 2:
            raise ValueError(f"dense layout expects (B, D) tensors, got shape {tuple(t.shape)}")
        if self.basis is not None and t.shape[1] != self.basis.shape[0]:
            raise ValueError(f"expected D={self.basis.shape[0]} columns, got {t.shape[1]}")

    def _basis(self, t: Tensor) -> Tensor:
        return self.basis.to(dtype=t.dtype, device=t.device)

    def num_samples(self, t: Tensor) -> int:
        return t.shape[0]

    def sum_per_sample(self, t: Tensor) -> Tensor:
        return t.sum(dim=tuple(range(1, t.dim())))  # also for an empty batch

    def broadcast(self, s: Tensor, like: Tensor) -> Tensor:
        return s.reshape(-1, *([1] * (like.dim() - 1))).expand_as(like)

    def dims(self, t: Tensor) -> Tensor:
        self._check(t)
        m = t.shape[1] if self.basis is None else self.basis.shape[1]
        return torch.full((t.shape[0],), float(m), dtype=t.dtype, device=t.device)

    def project(self, t: Tensor) -> Tensor:
        if self.basis is None:
            return t
        q = self._basis(t)
        return (t @ q) @ q.T

    def tangent_basis(self, t: Tensor) -> Tensor:
        self._check(t)
        if self.basis is None:
            q = torch.eye(t.shape[1], dtype=t.dtype, device=t.device)
        else:
            q = self._basis(t)
        return q.T.unsqueeze(1).expand(q.shape[1], t.shape[0], t.shape[1])  # (M, B, D)

    def coordinates(self, t: Tensor) -> Tensor:
        return t if self.basis is None else t @ self._basis(t)

    def from_coordinates(self, coords: Tensor, like: Tensor) -> Tensor:
        return coords if self.basis is None else coords @ self._basis(like).T

    def select(self, t: Tensor, keep: Tensor) -> tuple[Tensor, Layout]:
        return keep, self

    def valid(self, t: Tensor) -> Tensor:
        m = t.shape[1] if self.basis is None else self.basis.shape[1]
        return torch.ones(t.shape[0], m, dtype=torch.bool, device=t.device)


class ParticleLayout(DenseLayout):
    """``(B, n·d)`` rows of n particles in d dimensions with zero centre of mass.

    The subspace is ``{x : sum_i x_i = 0}`` of dimension ``(n-1)·d``; its basis is
    ``helmert_basis(n) ⊗ I_d`` in particle-major order ``(x_1, ..., x_n)``.
    """

    def __init__(self, n_particles: int, spatial_dim: int):
        if n_particles < 2 or spatial_dim < 1:
            raise ValueError(
                f"need n_particles >= 2 and spatial_dim >= 1, got {n_particles}, {spatial_dim}"
            )
        self.n_particles = n_particles
        self.spatial_dim = spatial_dim
        basis = torch.kron(
            helmert_basis(n_particles, dtype=torch.float64),
            torch.eye(spatial_dim, dtype=torch.float64),
        )
        super().__init__(basis)
        self._graph: GraphLayout | None = None

    def project(self, t: Tensor) -> Tensor:
        # Subtracting the centre of mass is the same projection as Q Q^T, in O(n·d).
        p = t.reshape(t.shape[0], self.n_particles, self.spatial_dim)
        return (p - p.mean(dim=1, keepdim=True)).reshape(t.shape)

    def graph(self, t: Tensor) -> GraphLayout:
        """The graph view of ``(B, n·d)`` rows: B fully connected graphs of n nodes.

        Node rows are ``t.reshape(B · n, d)``; positions only (``pos_dim = d``). The last view
        is kept, since consecutive batches usually share B and device.

        Returns:
            :class:`GraphLayout` with ``batch = (0,...,0, 1,...,1, ...)`` ``(B·n,)``.
        """
        b = t.shape[0]
        cached = self._graph
        if cached is None or cached.num_graphs != b or cached.batch.device != t.device:
            batch = torch.arange(b, device=t.device).repeat_interleave(self.n_particles)
            cached = GraphLayout(batch, b, pos_dim=self.spatial_dim)
            self._graph = cached
        return cached


class GraphLayout(Layout):
    """Graph batches in PyG style: node rows ``(N, F)`` and a batch vector ``(N,)``.

    The first ``pos_dim`` columns of a node row are positions; each graph's positions live on the
    zero-centre-of-mass subspace, the remaining feature columns are unconstrained. A graph of n
    nodes thus has ``(n-1)·pos_dim + n·(F - pos_dim)`` degrees of freedom.

    The layout is built once per batch and is the graph structure every network call receives:
    ``batch``, ``num_graphs`` and the fully connected :attr:`edge_index` (built on first use and
    kept here, not in the networks).

    Args:
        batch: ``(N,)`` graph index of every node, values ``0..B-1``, sorted.
        num_graphs: B; inferred from ``batch`` if omitted.
        pos_dim: number of leading position columns (0 for none).
    """

    def __init__(self, batch: Tensor, num_graphs: int | None = None, pos_dim: int = 3):
        if batch.dim() != 1:
            raise ValueError(f"batch must be (N,), got {tuple(batch.shape)}")
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch vector must be sorted (PyG convention)")
        self.batch = batch
        self.num_graphs = int(batch.max().item()) + 1 if num_graphs is None else num_graphs
        self.pos_dim = pos_dim
        self.counts = torch.bincount(batch, minlength=self.num_graphs)  # (B,)
        starts = torch.cumsum(self.counts, 0) - self.counts
        self.local_index = torch.arange(batch.numel(), device=batch.device) - starts[batch]

    @cached_property
    def edge_index(self) -> Tensor:
        """``(2, E)`` fully connected edges within each graph, built on first use (one batch,
        many network calls: encoder, decoder, every Jacobian column)."""
        return fully_connected_edges(self.batch)

    def _check(self, t: Tensor) -> None:
        if t.dim() != 2 or t.shape[0] != self.batch.numel():
            raise ValueError(
                f"graph layout expects ({self.batch.numel()}, F) node rows, got {tuple(t.shape)}"
            )

    def num_samples(self, t: Tensor) -> int:
        return self.num_graphs

    def _scatter(self, rows: Tensor, reduce: str = "sum") -> Tensor:
        # imported here: PyG costs seconds to import, and dense users never need it
        from torch_geometric.utils import scatter

        return scatter(rows, self.batch, dim=0, dim_size=self.num_graphs, reduce=reduce)

    def sum_per_sample(self, t: Tensor) -> Tensor:
        return self._scatter(t.sum(dim=tuple(range(1, t.dim()))))

    def broadcast(self, s: Tensor, like: Tensor) -> Tensor:
        return s[self.batch].reshape(-1, *([1] * (like.dim() - 1))).expand_as(like)

    def dims(self, t: Tensor) -> Tensor:
        self._check(t)
        n = self.counts.to(t.dtype)
        feat = t.shape[1] - self.pos_dim
        return (n - 1) * self.pos_dim + n * feat

    def project(self, t: Tensor) -> Tensor:
        if self.pos_dim == 0:
            return t
        pos = t[:, : self.pos_dim]
        mean = self._scatter(pos, "mean")
        return torch.cat([pos - mean[self.batch], t[:, self.pos_dim :]], dim=1)

    def _helmert_rows(self, dtype) -> Tensor:
        """``(N, K)`` value of Helmert column k+1 at each node (K = max nodes - 1)."""
        kmax = int(self.counts.max().item()) - 1
        i = self.local_index.unsqueeze(1)  # (N, 1)
        k = torch.arange(1, kmax + 1, device=i.device).unsqueeze(0)  # (1, K)
        kf = k.to(dtype)
        value = torch.where(i < k, 1.0, torch.where(i == k, -kf, 0.0)).to(dtype)
        value = value / torch.sqrt(kf * (kf + 1))
        # column k exists for a graph only if k < n
        return value * (k < self.counts[self.batch].unsqueeze(1))

    def tangent_basis(self, t: Tensor) -> Tensor:
        self._check(t)
        n_nodes, f = t.shape
        d, feat = self.pos_dim, f - self.pos_dim
        nmax = int(self.counts.max().item())
        rows = []
        if d:
            h = self._helmert_rows(t.dtype)  # (N, K)
            eye = torch.eye(d, dtype=t.dtype, device=t.device)
            pos = h.T[:, None, :, None] * eye[None, :, None, :]  # (K, d, N, d)
            pos = torch.cat([pos, t.new_zeros(*pos.shape[:3], feat)], dim=3)
            rows.append(pos.reshape(-1, n_nodes, f))
        if feat:
            onehot = (
                self.local_index.unsqueeze(0) == torch.arange(nmax, device=t.device).unsqueeze(1)
            ).to(t.dtype)  # (n, N)
            eye = torch.eye(feat, dtype=t.dtype, device=t.device)
            ft = onehot[:, None, :, None] * eye[None, :, None, :]  # (n, feat, N, feat)
            ft = torch.cat([t.new_zeros(*ft.shape[:3], d), ft], dim=3)
            rows.append(ft.reshape(-1, n_nodes, f))
        return torch.cat(rows, dim=0)  # (M, N, F)

    def coordinates(self, t: Tensor) -> Tensor:
        self._check(t)
        d, nmax = self.pos_dim, int(self.counts.max().item())
        parts = []
        if d:
            h = self._helmert_rows(t.dtype)  # (N, K)
            pos = h.unsqueeze(2) * t[:, None, :d]  # (N, K, d)
            parts.append(self._scatter(pos).reshape(self.num_graphs, -1))
        if t.shape[1] > d:
            onehot = (
                self.local_index.unsqueeze(1) == torch.arange(nmax, device=t.device).unsqueeze(0)
            ).to(t.dtype)  # (N, n)
            ft = onehot.unsqueeze(2) * t[:, None, d:]  # (N, n, feat)
            parts.append(self._scatter(ft).reshape(self.num_graphs, -1))
        return torch.cat(parts, dim=1)  # (B, M)

    def from_coordinates(self, coords: Tensor, like: Tensor) -> Tensor:
        coords = coords * self.valid(like).to(coords.dtype)
        return torch.einsum("nm,mnf->nf", coords[self.batch], self.tangent_basis(like))

    def select(self, t: Tensor, keep: Tensor) -> tuple[Tensor, Layout]:
        rows = keep[self.batch]
        new_index = torch.cumsum(keep.long(), 0) - 1  # old graph index -> new
        sub = GraphLayout(new_index[self.batch[rows]], int(keep.sum()), pos_dim=self.pos_dim)
        return rows, sub

    def valid(self, t: Tensor) -> Tensor:
        d, feat = self.pos_dim, t.shape[1] - self.pos_dim
        nmax = int(self.counts.max().item())
        n = self.counts.unsqueeze(1)
        parts = []
        if d:
            k = torch.arange(1, nmax, device=t.device).repeat_interleave(d).unsqueeze(0)
            parts.append(k < n)
        if feat:
            i = torch.arange(nmax, device=t.device).repeat_interleave(feat).unsqueeze(0)
            parts.append(i < n)
        return torch.cat(parts, dim=1)  # (B, M)


def standard_normal_log_norm(dims: Tensor) -> Tensor:
    """``-(m/2) log(2π)``: log normalising constant of a standard normal in m dimensions."""
    return -0.5 * dims * math.log(2 * math.pi)
