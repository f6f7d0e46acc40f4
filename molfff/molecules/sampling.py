"""Drawing molecules from a :class:`~molfff.molecules.flow.MoleculeFlow`: plain or stable only.

Molecules come back as ``(pos (n_i, 3) Å, atomic numbers (n_i,))`` numpy pairs, the format of the
metrics (:mod:`molfff.molecules.metrics`) and of the xyz / sdf writers (:mod:`molfff.molecules.io`).
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import numpy as np
import torch

from molfff.errors import UserError
from molfff.molecules.flow import MoleculeBatch, MoleculeFlow
from molfff.molecules.qm9 import ATOM_TYPES

Molecule = tuple[np.ndarray, np.ndarray]


@torch.no_grad()
def sample_molecules(
    flow: MoleculeFlow, n: int, seed: int = 0, batch_size: int = 1000
) -> tuple[list[Molecule], float]:
    """``n`` sampled molecules as ``(pos (n_i, 3), z (n_i,))`` and the seconds it took.

    One generator seeded with ``seed`` on the flow's device draws all batches, so the result is
    a function of ``(flow, n, seed, batch_size)``.
    """
    g = torch.Generator(device=flow.log_p_n.device).manual_seed(seed)
    out: list[Molecule] = []
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        out += molecules_of(flow.sample(min(batch_size, n - i), g))
    return out, time.perf_counter() - start


def molecules_of(mol: MoleculeBatch) -> list[Molecule]:
    """A batch's molecules as ``(pos (n_i, 3), atomic numbers (n_i,))`` numpy pairs."""
    from torch_geometric.utils import unbatch

    z = torch.as_tensor(ATOM_TYPES)[mol.one_hot.argmax(1).cpu()]  # (N,) atomic numbers
    batch = mol.batch.cpu()
    pos = unbatch(mol.pos.double().cpu(), batch, batch_size=mol.num_graphs)
    zs = unbatch(z, batch, batch_size=mol.num_graphs)
    return [(p.numpy(), zi.numpy()) for p, zi in zip(pos, zs, strict=True)]


class StableDraws(NamedTuple):
    """What :func:`sample_stable` returns."""

    molecules: list[Molecule]
    drawn: int
    stable: int  # stable among all ``drawn`` (0 unless stable_only)


def sample_stable(
    flow: MoleculeFlow,
    n: int,
    stable_only: bool,
    seed: int = 0,
    batch_size: int = 1000,
    max_draws: int | None = None,
    progress: bool = True,
) -> StableDraws:
    """``n`` molecules (only stable ones if asked), how many were drawn in all and, with
    ``stable_only``, how many of those were stable (the last batch is drawn whole, so
    ``stable / drawn`` is the model's stable share, not ``n / drawn``).

    Raises:
        UserError: when ``stable_only`` and fewer than ``n`` stable molecules turned up in
            ``max_draws`` draws (default ``100 n``).
    """
    from tqdm import tqdm

    from molfff.molecules.metrics import is_stable

    if batch_size < 1:  # no draws would be made, for ever
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    max_draws = 100 * n if max_draws is None else max_draws
    kept: list[Molecule] = []
    drawn = stable = 0
    with tqdm(
        total=n,
        desc="stable molecules" if stable_only else "molecules",
        unit="mol",
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        while len(kept) < n:
            if drawn >= max_draws:
                raise UserError(
                    f"only {len(kept)} of the {n} molecules asked for were stable after "
                    f"{drawn} draws; the model is not trained well enough for "
                    f"--stable-only (allow more draws with --max-draws)"
                )
            batch, _ = sample_molecules(
                flow, min(batch_size, max_draws - drawn), seed=seed * 7919 + drawn
            )
            drawn += len(batch)
            new = [m for m in batch if is_stable(*m)] if stable_only else batch
            stable += len(new) if stable_only else 0
            new = new[: n - len(kept)]
            kept += new
            bar.update(len(new))
    return StableDraws(kept, drawn, stable)
