"""RMSD between two molecules after optimal atom matching and rigid alignment.

A sampled molecule has no atom order and an arbitrary orientation, so comparing it with a
reference molecule needs both an assignment of atoms (a permutation) and a rigid motion. Both
are found by alternating the two classic sub-problems:

- for a fixed motion, the permutation minimising the summed squared distances is a linear
  assignment (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`);
- for a fixed permutation, the optimal rotation is Kabsch's SVD solution (Kabsch 1976, Acta
  Cryst. A32, 922), optionally allowing a reflection (the flows here are E(3)-equivariant with a
  reflection-invariant prior, so mirror images have the same density).

The alternation starts from every sign choice of the principal-axis frames of both molecules (8
starts; 4 when reflections are excluded) and keeps the lowest RMSD. It is a local search: the
result is an upper bound on the true minimum, exact for rigid copies (tested) and reliable for
small perturbations. Atom types are ignored while matching so that the geometry is compared even
when the compositions differ; :func:`match` returns the assignment so that type agreement can be
counted on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Match:
    """The best alignment found of a molecule ``a`` onto a reference ``b``.

    Attributes:
        rmsd: root mean squared distance (Å) between matched atoms after alignment.
        perm: ``(n,)`` index of the atom of ``b`` matched to each atom of ``a``.
        reflected: whether the best motion includes a reflection.
    """

    rmsd: float
    perm: np.ndarray
    reflected: bool


def _kabsch(a: np.ndarray, b: np.ndarray, reflection: bool) -> np.ndarray:
    """The orthogonal R minimising ``||a R - b||`` (centred ``(n, 3)`` arrays)."""
    u, _, vt = np.linalg.svd(a.T @ b)
    if not reflection and np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1
    return u @ vt


def _principal_frame(x: np.ndarray) -> np.ndarray:
    """Columns: principal axes of the centred point cloud ``x`` (eigenvectors of x^T x)."""
    _, vecs = np.linalg.eigh(x.T @ x)
    return vecs


def match(
    pos_a: ArrayLike, pos_b: ArrayLike, reflection: bool = True, iterations: int = 10
) -> Match:
    """Align molecule ``a`` onto ``b``: permutation and rigid motion of least RMSD.

    Args:
        pos_a: ``(n, 3)`` positions (Å); centred here.
        pos_b: ``(n, 3)`` reference positions (Å); centred here.
        reflection: allow improper rotations (mirror images count as equal).
        iterations: assignment/Kabsch alternations per start.

    Returns:
        The :class:`Match` of least RMSD over the starts (see the module docstring).

    Raises:
        ValueError: if the arrays are not ``(n, 3)`` of one size ``n >= 1``, hold NaN or
            infinite coordinates, or ``iterations < 1``.
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(pos_a, dtype=np.float64)
    b = np.asarray(pos_b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need two (n, 3) position arrays, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("positions must be finite (got NaN or infinite coordinates)")
    if iterations < 1:  # without one assignment the atoms would be compared in input order
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    fa, fb = _principal_frame(a), _principal_frame(b)
    best = Match(np.inf, np.arange(len(a)), False)
    for signs in product((1.0, -1.0), repeat=3):
        rot = (fa * np.array(signs)) @ fb.T  # maps a's principal frame onto b's
        if not reflection and np.linalg.det(rot) < 0:
            continue
        perm = np.arange(len(a))
        for _ in range(iterations):
            moved = a @ rot
            cost = ((moved[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (n, n)
            _, new = linear_sum_assignment(cost)
            rot = _kabsch(a, b[new], reflection)
            if np.array_equal(new, perm):
                break
            perm = new
        rmsd = float(np.sqrt(((a @ rot - b[perm]) ** 2).sum(-1).mean()))
        if rmsd < best.rmsd:
            best = Match(rmsd, perm.copy(), bool(np.linalg.det(rot) < 0))
    return best


def type_agreement(z_a: ArrayLike, z_b: ArrayLike, m: Match) -> float:
    """Share of the atoms of ``a`` whose type equals that of their matched atom of ``b``."""
    z_a, z_b = np.asarray(z_a), np.asarray(z_b)
    return float((z_a == z_b[m.perm]).mean())
