"""Stability, validity, uniqueness and novelty of 3D molecules, as defined for EDM.

Bonds are inferred from interatomic distances alone (Hoogeboom et al. 2022, "Equivariant
Diffusion for Molecule Generation in 3D", ICML, App. / code ``bond_analyze``): a pair closer than
the tabulated single-bond length + 10 pm is bonded; closer than double + 5 pm, double; closer than
triple + 3 pm, triple. An atom is stable when the sum of its bond orders equals its valence
(H 1, C 4, N 3, O 2, F 1); a molecule is stable when all its atoms are.

Validity: an RDKit molecule built from the inferred bonds (neutral atoms, no charges) passes
``SanitizeMol``; its largest fragment is then the molecule that is kept. Uniqueness is the share of
distinct canonical SMILES among the valid ones, novelty the share of those distinct SMILES absent
from the training set's SMILES (computed by the same pipeline, as in EDM).
"""

from __future__ import annotations

import zipfile
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from molfff.molecules.elements import ATOMIC_NUMBERS, ELEMENTS, VALENCE

if TYPE_CHECKING:
    from rdkit.Chem import Mol

# Bond lengths in pm (the tables EDM uses, after wiredchemist.com "Bond lengths and energies").
SINGLE_PM = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142,
    ("F", "F"): 142,
}  # fmt: skip
DOUBLE_PM = {
    ("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120,
    ("N", "N"): 125, ("N", "O"): 121,
    ("O", "O"): 121,
}  # fmt: skip
TRIPLE_PM = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
MARGINS_PM = (10, 5, 3)  # single, double, triple: tuned by EDM to the stability of QM9
METRICS_VERSION = 1  # part of the reference-SMILES cache key


def _threshold_matrix(table: dict[tuple[str, str], int], margin: int) -> np.ndarray:
    """``(5, 5)`` distance thresholds in Å over ELEMENTS; ``-inf`` where no such bond exists."""
    out = np.full((len(ELEMENTS), len(ELEMENTS)), -np.inf)
    for (a, b), length in table.items():
        i, j = ELEMENTS.index(a), ELEMENTS.index(b)
        out[i, j] = out[j, i] = (length + margin) / 100.0
    return out


_THRESHOLDS = np.stack(
    [
        _threshold_matrix(t, m)
        for t, m in zip((SINGLE_PM, DOUBLE_PM, TRIPLE_PM), MARGINS_PM, strict=True)
    ]
)  # (3, 5, 5)
_TYPE_OF_Z = np.full(10, -1)
_TYPE_OF_Z[list(ATOMIC_NUMBERS)] = np.arange(len(ATOMIC_NUMBERS))
_VALENCE_OF_TYPE = np.array([VALENCE[e] for e in ELEMENTS])


def _check(pos: ArrayLike, z: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(n, 3)`` float64 and type indices ``(n,)`` into ELEMENTS, validated."""
    pos = np.asarray(pos.detach().cpu() if hasattr(pos, "detach") else pos, dtype=np.float64)
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z).astype(np.int64).reshape(-1)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] != len(z):
        raise ValueError(
            f"need positions (n, 3) and atomic numbers (n,), got {pos.shape}, {z.shape}"
        )
    if len(z) and (z.min() < 0 or z.max() > 9 or (_TYPE_OF_Z[z] < 0).any()):
        raise ValueError(f"atomic numbers must be in {ATOMIC_NUMBERS}, got {np.unique(z).tolist()}")
    if not np.isfinite(pos).all():
        raise ValueError("positions contain NaN or infinite values")
    return pos, _TYPE_OF_Z[z]


def bond_orders(pos: ArrayLike, z: ArrayLike) -> np.ndarray:
    """EDM's distance-based bond orders ``(n, n)`` (0 none, 1 single, 2 double, 3 triple).

    Args:
        pos: positions ``(n, 3)`` in Å (numpy or torch).
        z: atomic numbers ``(n,)``, each of H, C, N, O, F.
    """
    return _orders(*_check(pos, z))


def _orders(pos: np.ndarray, t: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # (n, n)
    below = d[None] < _THRESHOLDS[:, t[:, None], t[None, :]]  # (3, n, n)
    # Nested as in EDM: a double bond needs the single test, a triple bond the double test.
    order = below[0] * (1 + below[1] * (1 + below[2]))
    np.fill_diagonal(order, 0)
    return order.astype(np.int64)


def atom_stability(pos: ArrayLike, z: ArrayLike) -> np.ndarray:
    """Whether each atom's summed bond order equals its valence, ``(n,)`` bool."""
    pos, t = _check(pos, z)
    return _orders(pos, t).sum(1) == _VALENCE_OF_TYPE[t]


def is_stable(pos: ArrayLike, z: ArrayLike) -> bool:
    """Molecule stability: every atom has its valence."""
    return bool(atom_stability(pos, z).all())


def to_rdkit(pos: ArrayLike, z: ArrayLike) -> Mol:
    """An unsanitized RDKit molecule from the inferred bonds, with the positions as conformer."""
    Chem = _rdkit()
    pos_, t = _check(pos, z)
    orders = _orders(pos_, t)
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    for ti in t:
        mol.AddAtom(Chem.Atom(int(ATOMIC_NUMBERS[ti])))
    for i, j in zip(*np.nonzero(np.triu(orders)), strict=True):
        mol.AddBond(int(i), int(j), kinds[int(orders[i, j])])
    conf = Chem.Conformer(len(t))
    for i, p in enumerate(pos_):
        conf.SetAtomPosition(i, p.tolist())
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


def smiles(pos: ArrayLike, z: ArrayLike) -> str | None:
    """Canonical SMILES (hydrogens implicit) of the largest fragment, or ``None`` if invalid.

    Valid means RDKit sanitizes the whole molecule built from the inferred bonds (EDM's rule).
    """
    Chem = _rdkit()
    mol = to_rdkit(pos, z)
    try:
        Chem.SanitizeMol(mol)
    except ValueError:  # MolSanitizeException and its valence/kekulization subclasses
        return None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
    largest = max(frags, default=mol, key=lambda m: m.GetNumAtoms())
    return Chem.MolToSmiles(Chem.RemoveHs(largest))


def evaluate(
    molecules: Iterable[tuple[ArrayLike, ArrayLike]],
    train_smiles: Collection[str] | None = None,
    rdkit: bool = True,
) -> dict[str, float]:
    """EDM's sample metrics over a list of molecules.

    Args:
        molecules: ``(pos (n, 3), z (n,))`` pairs (a :class:`~molfff.molecules.qm9.MoleculeSet`
            iterates as such).
        train_smiles: reference SMILES for novelty (see :func:`qm9_smiles`); novelty is omitted
            when ``None``.
        rdkit: compute validity / uniqueness / novelty (needs RDKit); stability needs only numpy.

    Returns:
        ``atom_stability`` (stable atoms / all atoms, pooled), ``molecule_stability``,
        ``validity`` (valid / all), ``uniqueness`` (distinct valid SMILES / valid),
        ``valid_unique`` (distinct valid / all), ``novelty`` (distinct valid SMILES not in
        ``train_smiles`` / distinct valid), and the counts ``n_molecules``, ``n_atoms``.
        Shares over zero valid molecules are 0.
    """
    stable_atoms = n_atoms = stable_mols = n_mols = 0
    valid: list[str] = []
    for pos, z in molecules:
        ok = atom_stability(pos, z)
        stable_atoms += int(ok.sum())
        n_atoms += len(ok)
        stable_mols += bool(ok.all())
        n_mols += 1
        if rdkit:
            s = smiles(pos, z)
            if s is not None:
                valid.append(s)
    if n_mols == 0:
        raise ValueError("evaluate() needs at least one molecule")
    out = {
        "n_molecules": float(n_mols),
        "n_atoms": float(n_atoms),
        "atom_stability": stable_atoms / max(n_atoms, 1),
        "molecule_stability": stable_mols / n_mols,
    }
    if rdkit:
        unique = set(valid)
        out["validity"] = len(valid) / n_mols
        out["uniqueness"] = len(unique) / len(valid) if valid else 0.0
        out["valid_unique"] = len(unique) / n_mols
        if train_smiles is not None:
            known = set(train_smiles)
            out["novelty"] = len(unique - known) / len(unique) if unique else 0.0
    return out


def qm9_smiles(split: str = "train", cache: Path | None = None) -> set[str]:
    """SMILES of the valid molecules of a QM9 split, by the pipeline of :func:`smiles`; cached.

    The reference for novelty, as in EDM (the split's own geometries, not the GDB SMILES, so that
    generated and reference molecules are read the same way). Keyed by RDKit version.
    """
    _rdkit()
    from rdkit import __version__ as rdkit_version

    from molfff.molecules.qm9 import cache_dir, load_qm9, save_npz_atomic

    path = (cache or cache_dir()) / f"smiles_{split}_m{METRICS_VERSION}_rdkit{rdkit_version}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return set(f["smiles"].tolist())
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # unreadable: recomputed and replaced atomically
    found = [s for s in (smiles(p, z) for p, z in load_qm9(split)) if s is not None]
    save_npz_atomic(path, smiles=np.array(sorted(set(found))))
    return set(found)


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise ImportError(
            "validity, uniqueness and novelty need RDKit: pip install rdkit"
        ) from None
    RDLogger.DisableLog("rdApp.*")  # sanitization failures are counted, not printed
    return Chem
