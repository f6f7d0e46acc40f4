"""Molecules: QM9 data, PyG conversion and EDM-style stability / validity metrics.

RDKit (validity, SMILES) and torch_geometric (``Data``) are imported only where they are used.
"""

from molfff.molecules.metrics import atom_stability, bond_orders, evaluate, is_stable, qm9_smiles
from molfff.molecules.qm9 import (
    ATOM_TYPES,
    MoleculeSet,
    load_molecule_file,
    load_qm9,
    node_count_distribution,
    split_indices,
    to_pyg_data,
)

__all__ = [
    "ATOM_TYPES",
    "MoleculeSet",
    "atom_stability",
    "bond_orders",
    "evaluate",
    "is_stable",
    "load_molecule_file",
    "load_qm9",
    "node_count_distribution",
    "qm9_smiles",
    "split_indices",
    "to_pyg_data",
]
