"""A particle benchmark as a dense task: splits of ``(N, n·d)`` zero-CoM samples."""

from __future__ import annotations

from pathlib import Path

import torch

from molfff.boltzmann.data import load_split
from molfff.boltzmann.energies import get_energy
from molfff.dense.splits import DenseData, Split


def boltzmann_task(
    system: str, n_train: int, n_val: int, n_test: int, seed: int, root: str | Path | None = None
) -> DenseData:
    """Train/validation/test samples of DW4, LJ13 or LJ55, each capped at its ``n_*``.

    Rows are kept in file order up to the cap (a seeded random subset when capping), so the
    test NLL is always measured on the test split, never on training data.
    """
    energy = get_energy(system)
    g = torch.Generator().manual_seed(seed)
    splits = {}
    for split, cap in (("train", n_train), ("val", n_val), ("test", n_test)):
        x = load_split(system, split, root, dtype=torch.float32)
        if cap < len(x):
            x = x[torch.randperm(len(x), generator=g)[:cap]]
        splits[split] = Split(x)
    return DenseData(
        f"boltzmann/{energy.name}", splits, particles=(energy.n_particles, energy.spatial_dim)
    )
