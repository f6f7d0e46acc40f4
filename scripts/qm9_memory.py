"""The K memorised QM9 molecules of the sanity ladder (``scripts/qm9_ladder.py``) as tensors,
and training batches of randomly rotated copies of them."""

from __future__ import annotations

import numpy as np
import torch

from molfff.molecules import ATOM_TYPES
from molfff.molecules.flow import MoleculeBatch


def random_rotations(b: int, g: torch.Generator) -> torch.Tensor:
    """``(b, 3, 3)`` Haar-random proper rotations (QR of a Gaussian, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(b, 3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    det = torch.linalg.det(q)
    q[:, :, 0] *= det.sign().unsqueeze(1)
    return q


class Memory:
    """The K molecules as tensors, and batches of rotated copies."""

    def __init__(self, train, idx: np.ndarray):
        self.mols = [train.molecule(int(i)) for i in idx]
        self.n = len(self.mols[0][1])
        pos = np.stack([p - p.mean(0) for p, _ in self.mols])  # (K, n, 3)
        self.pos = torch.as_tensor(pos, dtype=torch.float32)
        table = {z: k for k, z in enumerate(ATOM_TYPES)}
        types = np.array([[table[int(z)] for z in zs] for _, zs in self.mols])  # (K, n)
        self.types = torch.as_tensor(types)
        self.charge = torch.as_tensor(np.stack([zs for _, zs in self.mols]), dtype=torch.float32)

    def batch(self, b: int, g: torch.Generator, rotate: bool = True) -> MoleculeBatch:
        k = torch.randint(len(self.mols), (b,), generator=g) if rotate else torch.arange(b)
        pos = self.pos[k]  # (b, n, 3)
        if rotate:
            pos = pos @ random_rotations(b, g).transpose(1, 2)
        one_hot = torch.nn.functional.one_hot(self.types[k], len(ATOM_TYPES)).float()
        return MoleculeBatch(
            pos.reshape(-1, 3),
            one_hot.reshape(-1, len(ATOM_TYPES)),
            self.charge[k].reshape(-1, 1),
            torch.arange(b).repeat_interleave(self.n),
            b,
        )
