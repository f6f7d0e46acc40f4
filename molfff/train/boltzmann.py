"""Boltzmann generators as a training task: particle systems (DW4, LJ13, LJ55) as dense rows
``(B, n·d)`` on the zero-centre-of-mass subspace, with reweighting to ``exp(-u)``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from molfff.boltzmann.energies import ParticleEnergy, get_energy
from molfff.dense.splits import DenseData
from molfff.train.config import DataConfig
from molfff.train.dense import DenseTask


@dataclass
class BoltzmannData(DataConfig):
    """``system``: DW4, LJ13 or LJ55; ``root``: a folder of ``{split}_split_{system}.npy``
    files (default: the reference data, then data/)."""

    system: str = "DW4"


class BoltzmannTask(DenseTask):
    """A particle system's samples; reweightable (:class:`~molfff.train.task.Reweightable`)."""

    data_config = BoltzmannData

    def load(self) -> DenseData:
        from molfff.boltzmann.task import boltzmann_task

        c = self.cfg
        return boltzmann_task(c.system, c.n_train, c.n_val, c.n_test, self.seed, c.root)

    def energy(self) -> ParticleEnergy:
        return get_energy(self.cfg.system)

    def reference(self, split: str) -> Tensor:
        from molfff.boltzmann.data import load_split

        return load_split(self.cfg.system, split, self.cfg.root)
