"""Molecule files: which format a path is, writing xyz / SDF, and reading any file or folder.

A molecule is a pair ``(pos (n, 3) in Å, z (n,) atomic numbers)`` with elements H, C, N, O, F (a
:class:`~molfff.molecules.qm9.MoleculeSet` iterates as such pairs).

- Formats are decided here and only here (:func:`molecule_format`), by suffix in any case:
  ``.xyz``, ``.txt`` and ``.extxyz`` are xyz (EDM and GeoLDM write one ``molecule_NNN.txt`` per
  molecule), ``.sdf``, ``.sd`` and ``.mol`` are SDF, ``.npz`` is EDM's array layout. A folder is
  read as the xyz-format files in it, in natural name order (:func:`read_molecules`).
- xyz: one frame per molecule: the atom count, a comment line (``molecule 3 stable=True``), then
  ``symbol x y z`` lines with coordinates to 6 decimals, the layout EDM and GeoLDM write.
- SDF: one record per molecule with the bonds of EDM's distance rule
  (:func:`~molfff.molecules.metrics.bond_orders`) and the 3D coordinates (V2000 holds 4 decimals).
  Molecules are written unsanitized, with explicit hydrogens and no implicit ones, so invalid
  molecules (wrong valences, no Kekulé structure) are written with exactly their inferred bonds.

Readers (:mod:`molfff.molecules.readers`) never guess: every problem raises one
:class:`~molfff.errors.UserError` naming the file and the 1-based line, and readers return all
molecules or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import ArrayLike

from molfff.errors import UserError
from molfff.files import atomic_write
from molfff.molecules.elements import ALLOWED, ATOMIC_NUMBERS, SYMBOL_OF_Z
from molfff.molecules.metrics import atom_stability, to_rdkit
from molfff.molecules.qm9 import MoleculeSet
from molfff.molecules.readers import Molecule, read_npz, read_sdf, read_xyz

__all__ = [
    "FORMATS",
    "Molecule",
    "molecule_format",
    "molecule_set",
    "read_molecules",
    "read_npz",
    "read_sdf",
    "read_xyz",
    "save_molecules",
    "write_sdf",
    "write_xyz",
    "xyz_files",
]

FORMATS = {  # lower-case suffix -> format; the one table of molecule file suffixes
    ".xyz": "xyz",
    ".extxyz": "xyz",
    ".txt": "xyz",
    ".sdf": "sdf",
    ".sd": "sdf",
    ".mol": "sdf",
    ".npz": "npz",
}
WRITTEN = ("xyz", "sdf")  # formats save_molecules writes
_READERS = {"xyz": read_xyz, "sdf": read_sdf, "npz": read_npz}


def _suffixes(fmt: str | None = None) -> str:
    return ", ".join(s for s, f in FORMATS.items() if fmt is None or f == fmt)


def molecule_format(path: str | Path) -> str:
    """The format of a molecule file from its suffix, in any case: ``xyz``, ``sdf`` or ``npz``.

    Raises:
        UserError: a suffix that is not in :data:`FORMATS`.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"molecule file {path}: unknown format {path.suffix or '(no suffix)'!r} "
            f"(use one of {_suffixes()}, or a folder of xyz files)"
        )
    return fmt


def _molecules(molecules: Iterable[tuple[ArrayLike, ArrayLike]]) -> list[Molecule]:
    """Validated ``(pos (n, 3) float64, z (n,) int64)`` pairs; ``ValueError`` names the index."""
    out = []
    for i, (pos, z) in enumerate(molecules):
        pos = np.asarray(pos.detach().cpu() if hasattr(pos, "detach") else pos, dtype=np.float64)
        z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z)
        if pos.ndim != 2 or pos.shape[1] != 3 or z.shape != (len(pos),) or len(pos) == 0:
            raise ValueError(
                f"molecule {i}: need positions (n, 3) and atomic numbers (n,) with n >= 1, "
                f"got {pos.shape} and {z.shape}"
            )
        if not np.array_equal(z, np.round(z)) or not set(z.tolist()) <= set(ATOMIC_NUMBERS):
            raise ValueError(
                f"molecule {i}: atomic numbers {np.unique(z).tolist()} not in {ALLOWED}"
            )
        if not np.isfinite(pos).all():
            raise ValueError(f"molecule {i}: positions contain NaN or infinite values")
        out.append((pos, z.astype(np.int64)))
    return out


def _default_comment(i: int, pos: np.ndarray, z: np.ndarray) -> str:
    return f"molecule {i} stable={bool(atom_stability(pos, z).all())}"


def _comments(comments: Sequence[str] | None, mols: list[Molecule]) -> list[str]:
    if comments is None:
        return [_default_comment(i, pos, z) for i, (pos, z) in enumerate(mols)]
    comments = list(comments)
    if len(comments) != len(mols):
        raise ValueError(f"{len(comments)} comments for {len(mols)} molecules")
    for i, c in enumerate(comments):
        if "\n" in c or "\r" in c:
            raise ValueError(f"comment {i} spans several lines: {c!r}")
    return comments


def write_xyz(
    molecules: Iterable[tuple[ArrayLike, ArrayLike]],
    stream: TextIO,
    comments: Sequence[str] | None = None,
) -> int:
    """Write molecules as a multi-frame xyz file.

    Each frame: the atom count, a comment line, then ``symbol x y z`` with coordinates in Å to 6
    decimals (so :func:`read_xyz` recovers positions to 5e-7 Å). Everything is checked and
    formatted before the first character is written, so a bad molecule leaves the stream untouched.

    Args:
        molecules: ``(pos (n, 3), z (n,))`` pairs, numpy or torch; elements H, C, N, O, F.
        stream: a text stream opened for writing.
        comments: one single-line comment per molecule; default ``molecule {i} stable={bool}``
            with ``i`` counted from 0 and EDM's molecule stability.

    Returns:
        The number of molecules written.
    """
    mols = _molecules(molecules)
    parts = []
    for (pos, z), comment in zip(mols, _comments(comments, mols), strict=True):
        parts.append(f"{len(z)}\n{comment}\n")
        parts.extend(
            f"{SYMBOL_OF_Z[int(zi)]:<2} {x:13.6f} {y:13.6f} {w:13.6f}\n"
            for zi, (x, y, w) in zip(z, pos.tolist(), strict=True)
        )
    stream.write("".join(parts))
    return len(mols)


def write_sdf(molecules: Iterable[tuple[ArrayLike, ArrayLike]], stream: TextIO) -> int:
    """Write molecules as an SDF file with EDM's inferred bonds and 3D coordinates.

    Molecules are not sanitized: bonds are the distance-rule orders (single, double, triple;
    never aromatic, so no kekulization is needed), atoms carry no charges and no implicit
    hydrogens (the valence field is set), so an invalid molecule is written exactly as it was
    judged. Each record is named ``molecule {i}`` and has a data field ``stable`` (True/False).

    Args:
        molecules: ``(pos (n, 3), z (n,))`` pairs, numpy or torch; elements H, C, N, O, F.
        stream: a text stream opened for writing; untouched if any molecule is invalid input.

    Returns:
        The number of molecules written.
    """
    from rdkit import Chem

    parts = []
    for i, (pos, z) in enumerate(_molecules(molecules)):
        mol = Chem.RWMol(to_rdkit(pos, z))
        for atom in mol.GetAtoms():
            atom.SetNoImplicit(True)  # a reader must not add hydrogens the model did not make
        mol.UpdatePropertyCache(strict=False)  # valence errors are data here, not failures
        mol.SetProp("_Name", f"molecule {i}")
        block = Chem.MolToMolBlock(mol, includeStereo=False, kekulize=False)
        stable = bool(atom_stability(pos, z).all())
        parts.append(f"{block}>  <stable>\n{stable}\n\n$$$$\n")
    stream.write("".join(parts))
    return len(parts)


def save_molecules(
    path: str | Path, molecules: Iterable[tuple[ArrayLike, ArrayLike]], overwrite: bool = False
) -> Path:
    """Write molecules to an xyz or SDF file (by :func:`molecule_format`) atomically.

    The file appears complete or not at all (temporary file in the same folder, then renamed);
    an existing file is replaced only with ``overwrite=True``.

    Raises:
        UserError: a suffix that is not xyz or SDF, or the file exists and ``overwrite`` is false.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt not in WRITTEN:
        raise UserError(f"{path}: molecules are written as .xyz or .sdf, not {path.suffix!r}")
    if path.is_dir():
        raise UserError(f"{path} is a folder")
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; choose another name or remove it first")
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as fh:
        (write_xyz if fmt == "xyz" else write_sdf)(molecules, fh)
    return path


def molecule_set(molecules: Iterable[tuple[ArrayLike, ArrayLike]]) -> MoleculeSet:
    """A flat :class:`MoleculeSet` from ``(pos (n, 3), z (n,))`` pairs."""
    mols = _molecules(molecules)
    counts = np.array([len(z) for _, z in mols], dtype=np.int64)
    return MoleculeSet(
        charges=np.concatenate([z for _, z in mols]) if mols else np.zeros(0, np.int64),
        pos=np.concatenate([p for p, _ in mols]) if mols else np.zeros((0, 3)),
        ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


def _natural_key(name: str) -> list[str | int]:
    """Sort key putting ``molecule_2`` before ``molecule_10`` (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def xyz_files(folder: str | Path) -> list[Path]:
    """The xyz-format files (:data:`FORMATS`) directly in ``folder``, in natural name order.

    Hidden files and sub-folders are skipped; other files are ignored.

    Raises:
        UserError: the folder holds no xyz-format file (the message says what it holds).
    """
    folder = Path(folder)
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as err:
        raise UserError(f"molecule folder {folder} cannot be read ({err.strerror})") from None
    files = [p for p in entries if p.is_file() and FORMATS.get(p.suffix.lower()) == "xyz"]
    if not files:
        others = sorted({p.suffix.lower() or "(no suffix)" for p in entries if p.is_file()})
        if others:
            has = f"it has only {', '.join(others)} files"
        elif entries:
            has = "it has only sub-folders (they are not searched)"
        else:
            has = "it is empty"
        if any(FORMATS.get(s) in ("sdf", "npz") for s in others):
            has += "; score an .sdf or .npz file by its own path"
        raise UserError(
            f"molecule folder {folder} holds no xyz-format files ({_suffixes('xyz')}): {has}"
        )
    return sorted(files, key=lambda p: _natural_key(p.name))


def read_molecules(path: str | Path) -> MoleculeSet:
    """Molecules from a file, by :func:`molecule_format`, or from a folder of xyz files.

    Files: xyz (``.xyz``, ``.txt``, ``.extxyz``; :func:`read_xyz`), SDF (``.sdf``, ``.sd``,
    ``.mol``; :func:`read_sdf`), ``.npz`` (:func:`read_npz`); suffixes in any case. A folder is
    one sample set: every xyz-format file in it (:func:`xyz_files`, natural name order, so EDM's
    ``molecule_2.txt`` comes before ``molecule_10.txt``), each with one or more frames.

    Raises:
        UserError: a missing path, an unknown suffix, a folder without xyz files, or the first
            problem a reader finds (naming the file and line).
    """
    path = Path(path)
    if not path.exists():
        msg = f"molecule file {path} does not exist"
        if path.suffix and path.suffix.lower() not in FORMATS:
            msg += f"; unknown format {path.suffix!r} as well (use one of {_suffixes()})"
        raise UserError(msg)
    if path.is_dir():
        return molecule_set(m for f in xyz_files(path) for m in read_xyz(f))
    return molecule_set(_READERS[molecule_format(path)](path))
