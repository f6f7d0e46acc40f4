"""The elements of QM9 and their valences: the one table every molecule module imports.

QM9 holds H, C, N, O and F (Ramakrishnan et al. 2014). Their order here is the order of the
one-hot atom-type encoding, of the bond-length tables of the metrics and of EDM's ``atom_decoder``
(Hoogeboom et al. 2022). The valences are the ones EDM's stability check demands (its
``allowed_bonds``: one value per element, no charges).
"""

from __future__ import annotations

ELEMENTS = ("H", "C", "N", "O", "F")  # symbols, in one-hot order
ATOMIC_NUMBERS = (1, 6, 7, 8, 9)  # the same elements' atomic numbers
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}  # summed bond order of a stable atom

SYMBOL_OF_Z = dict(zip(ATOMIC_NUMBERS, ELEMENTS, strict=True))  # 6 -> "C"
Z_OF_SYMBOL = dict(zip(ELEMENTS, ATOMIC_NUMBERS, strict=True))  # "C" -> 6
HYDROGEN = 1
ALLOWED = "H, C, N, O, F (atomic numbers 1, 6, 7, 8, 9)"  # for error messages
