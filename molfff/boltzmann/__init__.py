"""Boltzmann generators: particle energies (DW4, LJ13, LJ55) and sampling diagnostics."""

from molfff.boltzmann.diagnostics import configurational_temperature, gradient_and_laplacian
from molfff.boltzmann.energies import (
    LennardJones,
    MultiDoubleWell,
    ParticleEnergy,
    UnknownEnergyError,
    get_energy,
)

__all__ = [
    "LennardJones",
    "MultiDoubleWell",
    "ParticleEnergy",
    "UnknownEnergyError",
    "configurational_temperature",
    "get_energy",
    "gradient_and_laplacian",
]
