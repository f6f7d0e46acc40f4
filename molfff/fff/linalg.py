"""Batched dense linear algebra that finishes and is right whatever the process's thread settings.

With the CPU builds of PyTorch that link MKL statically, a *batched* LU factorisation
(``torch.linalg.slogdet``, ``det``, ``inv``, ``solve``, ``lu_factor`` on a ``(B, M, M)`` tensor)
runs one MKL ``getrf`` per matrix inside an OpenMP team. Once torch's intra-op thread count has
been changed in the process (by the user, a library or a test), ``getrf`` on matrices of more than
about 130 rows can then hang in that nested team or print ``Intel oneMKL ERROR: Parameter 6 was
incorrect on entry to SLASWP`` and return a broken factorisation (PyTorch issue 141358; measured
here with torch 2.13: batch 2 of 240 x 240 hangs, 129 x 129 and smaller pass).

A single, unbatched factorisation does not nest and is safe. So on the CPU, batches of matrices
larger than :data:`BATCHED_MAX_ROWS` are factorised one matrix at a time in the calling thread,
with the calling thread's OpenMP pool limited to one thread for the loop (``threadpoolctl``; the
limit is undone afterwards and, unlike torch's own thread setter, leaves MKL's own setting
alone). Without that limit each small factorisation wakes a thread team, which on a loaded machine
cost up to 100x the batched call (measured: 32 matrices of 168 rows, 2.7 s against 23 ms; with
the limit 11 ms). Smaller matrices (well below the failing size, where the per-matrix Python
overhead would dominate) keep the batched call. On other devices the batched call is used as is.
Both paths are differentiable. ``scripts/bench_logdet.py`` measures what the per-matrix path
costs.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache

import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor

BATCHED_MAX_ROWS = 64
"""Largest matrix size factorised by one batched call on the CPU: half the largest size seen to
pass (129 rows passed, 160 failed); below it the per-matrix loop cost up to 6x (LJ13, 256 x 36)."""


def _per_matrix(a: Tensor) -> bool:
    """Whether to factorise one matrix at a time: large CPU matrices in a non-empty batch (an
    empty batch goes to the batched call, which returns an empty result without factorising)."""
    return (
        a.device.type == "cpu" and a.dim() > 2 and a.shape[-1] > BATCHED_MAX_ROWS and a.numel() > 0
    )


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # inspects the loaded libraries once


@contextmanager
def _one_thread():
    """The calling thread's OpenMP pool at one thread for the enclosed block."""
    with _controller().limit(limits=1, user_api="openmp"):
        yield


def _check_square(a: Tensor, name: str) -> None:
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} needs square (..., M, M) matrices, got shape {tuple(a.shape)}")


def logabsdet(a: Tensor) -> Tensor:
    """``log|det a|`` of each matrix of a batch, by LU (see the module docstring).

    Args:
        a: ``(..., M, M)`` square matrices.

    Returns:
        ``(...)`` log absolute determinants; ``-inf`` for a singular matrix.

    Raises:
        ValueError: if ``a`` is not a batch of square matrices.
    """
    _check_square(a, "logabsdet")
    if not _per_matrix(a):
        return torch.linalg.slogdet(a).logabsdet
    flat = a.reshape(-1, *a.shape[-2:])
    with _one_thread():
        out = torch.stack([torch.linalg.slogdet(m).logabsdet for m in flat])
    return out.reshape(a.shape[:-2])


def solve(a: Tensor, b: Tensor) -> Tensor:
    """``x`` with ``a x = b`` for each matrix of a batch, by LU (see the module docstring).

    Args:
        a: ``(B, M, M)`` square matrices.
        b: ``(B, M)`` right-hand sides, one per matrix.

    Returns:
        ``(B, M)`` solutions.

    Raises:
        ValueError: on mismatched shapes.
        torch.linalg.LinAlgError: if a matrix is singular.
    """
    x, ok = solve_ex(a, b, name="solve")
    if not bool(ok.all()):
        bad = int((~ok).nonzero()[0])
        raise torch.linalg.LinAlgError(f"solve: batch element {bad} is singular")
    return x


def solve_ex(a: Tensor, b: Tensor, name: str = "solve_ex") -> tuple[Tensor, Tensor]:
    """:func:`solve` that does not raise on singular matrices.

    Args:
        a: ``(B, M, M)`` square matrices.
        b: ``(B, M)`` right-hand sides.
        name: the function named in error messages.

    Returns:
        ``(x, ok)``: ``(B, M)`` solutions and a ``(B,)`` bool mask, False where the matrix is
        singular to working precision or the solution is not finite (``x`` is then meaningless).

    Raises:
        ValueError: on mismatched shapes.
    """
    _check_square(a, name)
    if a.dim() != 3 or b.shape != a.shape[:2]:
        raise ValueError(
            f"{name} needs a (B, M, M) and b (B, M), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if not _per_matrix(a):
        x, info = torch.linalg.solve_ex(a, b)
    else:
        with _one_thread():
            pairs = [torch.linalg.solve_ex(m, r) for m, r in zip(a, b, strict=True)]
        x = torch.stack([p[0] for p in pairs])
        info = torch.stack([p[1] for p in pairs])
    return x, (info == 0) & torch.isfinite(x).all(dim=1)
