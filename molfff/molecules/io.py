"""Writing generated molecules to xyz / SDF files and reading them back strictly.

A molecule is a pair ``(pos (n, 3) in Å, z (n,) atomic numbers)`` with elements H, C, N, O, F (a
:class:`~molfff.molecules.qm9.MoleculeSet` iterates as such pairs).

- xyz: one frame per molecule: the atom count, a comment line (``molecule 3 stable=True``), then
  ``symbol x y z`` lines with coordinates to 6 decimals. This is the layout EDM and GeoLDM write,
  so their sample files read with :func:`read_xyz` too.
- SDF: one record per molecule with the bonds of EDM's distance rule
  (:func:`~molfff.molecules.metrics.bond_orders`) and the 3D coordinates (V2000 holds 4 decimals).
  Molecules are written unsanitized, with explicit hydrogens and no implicit ones, so invalid
  molecules (wrong valences, no Kekulé structure) are written with exactly their inferred bonds.

Readers never guess: every problem raises one :class:`~molfff.errors.UserError` naming the file
and the 1-based line, and readers return all molecules or nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import ArrayLike

from molfff.errors import UserError
from molfff.files import atomic_write
from molfff.molecules.metrics import ATOMIC_NUMBERS, ELEMENTS, atom_stability, to_rdkit
from molfff.molecules.qm9 import MoleculeSet, load_molecule_file

Molecule = tuple[np.ndarray, np.ndarray]  # pos (n, 3) float64, z (n,) int64

_SYMBOL = dict(zip(ATOMIC_NUMBERS, ELEMENTS, strict=True))
_Z_OF_SYMBOL = {s.upper(): z for z, s in _SYMBOL.items()}
_ALLOWED = "H, C, N, O, F (atomic numbers 1, 6, 7, 8, 9)"
_COUNT = re.compile(r"\+?\d+")
_EXTXYZ_POS = re.compile(r"properties=\"?species:s:1:pos:r:3(:|\"|\s|$)", re.IGNORECASE)
XYZ_SUFFIXES = (".xyz",)
SDF_SUFFIXES = (".sdf", ".mol", ".sd")
NPZ_SUFFIXES = (".npz", ".extxyz")  # read by qm9.load_molecule_file


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
                f"molecule {i}: atomic numbers {np.unique(z).tolist()} not in {_ALLOWED}"
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
            f"{_SYMBOL[int(zi)]:<2} {x:13.6f} {y:13.6f} {w:13.6f}\n"
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
    """Write molecules to ``path`` (``.xyz`` or ``.sdf``) atomically.

    The file appears complete or not at all (temporary file in the same folder, then renamed);
    an existing file is replaced only with ``overwrite=True``.

    Raises:
        UserError: unknown suffix, or the file exists and ``overwrite`` is false.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in XYZ_SUFFIXES + (".sdf",):
        raise UserError(f"{path}: molecules are written as .xyz or .sdf, not {path.suffix!r}")
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; choose another name or remove it first")
    if path.is_dir():
        raise UserError(f"{path} is a folder")
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as fh:
        (write_xyz if suffix in XYZ_SUFFIXES else write_sdf)(molecules, fh)
    return path


class _Where:
    """Formats ``"<file>, line <n>: <message>"`` errors for one file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, line: int, msg: str) -> UserError:
        return UserError(f"{self.path}, line {line}: {msg}")


def _read_lines(path: Path) -> list[str]:
    """The file's lines without line endings (``\\n`` or ``\\r\\n``), as an editor numbers them."""
    if not path.exists():
        raise UserError(f"molecule file {path} does not exist")
    if not path.is_file():
        raise UserError(f"molecule file {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"molecule file {path} cannot be read ({err.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _Where(path)(line, "not a text file (bytes that are not UTF-8)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _short(text: str, n: int = 60) -> str:
    text = text.strip()
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _element(token: str) -> int | None:
    """Atomic number of a symbol (any case) or of an atomic number written as an integer."""
    if _COUNT.fullmatch(token):
        z = int(token)
        return z if z in _SYMBOL else None
    return _Z_OF_SYMBOL.get(token.upper())


def _looks_like_atom(line: str) -> bool:
    tokens = line.split()
    if len(tokens) < 4:
        return False
    try:
        [float(t) for t in tokens[1:4]]
    except ValueError:
        return False
    return True


def _atom_line(
    where: _Where, line: str, number: int, k: int, n: int, head: int, extxyz: bool
) -> tuple[int, list[float]]:
    """Atomic number and ``[x, y, z]`` of atom ``k`` of ``n`` (frame counted at line ``head``)."""
    cols = line.split()
    if len(cols) == 1 and _COUNT.fullmatch(cols[0]):
        raise where(
            number,
            f"expected atom {k + 1} of {n} but found a count line {_short(line)}: "
            f"the count {n} at line {head} is larger than the number of atom lines",
        )
    if len(cols) < 4:
        found = "an empty line" if not cols else _short(line)
        raise where(number, f"expected 'element x y z' for atom {k + 1} of {n}, found {found}")
    if len(cols) > 4 and not extxyz:
        raise where(
            number,
            f"{len(cols)} columns where 'element x y z' has 4, found {_short(line)} "
            "(extra columns need an extended-xyz Properties= comment)",
        )
    z = _element(cols[0])
    if z is None:
        raise where(number, f"unknown element {cols[0]!r}: only {_ALLOWED} are accepted")
    xyz = []
    for axis, tok in zip("xyz", cols[1:4], strict=True):
        try:
            value = float(tok)
        except ValueError:
            raise where(number, f"unparsable {axis} coordinate {tok!r} of atom {k + 1}") from None
        if not math.isfinite(value):
            raise where(number, f"{axis} coordinate {tok!r} of atom {k + 1} is not finite")
        xyz.append(value)
    return z, xyz


def read_xyz(path: str | Path) -> list[Molecule]:
    """Read a (multi-frame) xyz file strictly.

    Each frame is a line holding only the atom count (an integer >= 1), a comment line (free
    text), then that many lines ``element x y z`` with coordinates in Å. The element is a symbol
    of H, C, N, O, F in any case (``c``, ``C``) or its atomic number (``6``). Blank lines are
    allowed between frames and at the end. More than four columns are accepted only when the
    comment declares extended xyz with ``Properties=species:S:1:pos:R:3...`` (extra columns are
    then ignored); otherwise a fifth column means the layout is not ``element x y z``.

    Args:
        path: the file.

    Returns:
        One ``(pos (n, 3) float64, z (n,) int64)`` pair per frame, in file order.

    Raises:
        UserError: the first problem found, as ``"<file>, line <n>: <what>"``: an empty file, a
            count line that is not one positive integer, an unknown element, a missing,
            unparsable, NaN or infinite coordinate, a count that disagrees with the atom lines,
            or a last frame cut short.
    """
    path = Path(path)
    where = _Where(path)
    lines = _read_lines(path)
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end == 0:
        raise where(1, "the file is empty (no molecules)")
    frames: list[Molecule] = []
    prev: tuple[int, int] | None = None  # (count line, atom count) of the previous frame
    i = 0
    while i < end:
        if not lines[i].strip():
            i += 1
            continue
        head = i + 1  # 1-based line of this frame's count
        tokens = lines[i].split()
        if len(tokens) != 1 or not _COUNT.fullmatch(tokens[0]):
            if prev is not None and _looks_like_atom(lines[i]):
                raise where(
                    head,
                    f"expected the atom count of a new frame, found an atom line "
                    f"{_short(lines[i])}: the frame at line {prev[0]} declares {prev[1]} "
                    f"atom{'s' if prev[1] != 1 else ''} but has more atom lines",
                )
            raise where(
                head, f"the atom count line must hold one integer, found {_short(lines[i])}"
            )
        n = int(tokens[0])
        if n < 1:
            raise where(head, f"the atom count must be at least 1, found {n}")
        if i + 1 >= end:
            raise where(
                head, f"the file ends after this count line: the frame of {n} atoms is cut short"
            )
        extxyz = bool(_EXTXYZ_POS.search(lines[i + 1]))
        if "properties=" in lines[i + 1].lower() and not extxyz:
            raise where(
                head + 1,
                "extended xyz whose columns do not start with species and pos; "
                "name the file .extxyz to read it with ASE",
            )
        pos = np.empty((n, 3))
        z = np.empty(n, dtype=np.int64)
        first = i + 2  # 0-based index of the first atom line
        for k in range(n):
            j = first + k
            if j >= end:
                raise where(
                    head,
                    f"the frame declares {n} atoms but the file ends after {k} atom lines "
                    f"(line {end}): the last frame is cut short",
                )
            z[k], pos[k] = _atom_line(where, lines[j], j + 1, k, n, head, extxyz)
        frames.append((pos, z))
        prev = (head, n)
        i = first + n
    return frames


def _sdf_records(lines: list[str]) -> list[tuple[int, list[str]]]:
    """``(1-based first line, lines)`` of each record, split at ``$$$$``; blank tails dropped."""
    records, start, cur = [], 1, []
    for number, line in enumerate(lines, start=1):
        if line.strip() == "$$$$":
            records.append((start, cur))
            start, cur = number + 1, []
        else:
            cur.append(line)
    if any(ln.strip() for ln in cur):
        records.append((start, cur))
    return records


def _diagnose_v2000(where: _Where, start: int, block: list[str]) -> None:
    """Raise a line-specific error for the V2000 record RDKit refused, when one is found."""
    if len(block) < 4:
        raise where(start, f"molecule record of {len(block)} lines is cut short (needs a header)")
    counts = block[3]
    if "V3000" in counts:
        return
    try:
        n_atoms = int(counts[0:3])
        int(counts[3:6])
    except ValueError:
        raise where(start + 3, f"unreadable counts line {_short(counts)}") from None
    for k in range(n_atoms):
        if 4 + k >= len(block):
            raise where(start, f"the record declares {n_atoms} atoms but ends after {k}")
        line = block[4 + k]
        try:
            [float(line[c : c + 10]) for c in (0, 10, 20)]
        except ValueError:
            raise where(start + 4 + k, f"unreadable atom line {_short(line)}") from None
        symbol = line[31:34].strip()
        if _element(symbol) is None or _COUNT.fullmatch(symbol):
            raise where(start + 4 + k, f"unknown element {symbol!r}: only {_ALLOWED} are accepted")


def read_sdf(path: str | Path) -> list[Molecule]:
    """Read the atoms and 3D coordinates of every record of an SDF (or mol) file, via RDKit.

    Bonds in the file are ignored: metrics infer bonds from distances (EDM's rule), so the
    positions and elements are what is returned. Records are parsed unsanitized, so molecules with
    valence errors are read as they are.

    Args:
        path: the file.

    Returns:
        One ``(pos (n, 3) float64, z (n,) int64)`` pair per record, in file order.

    Raises:
        UserError: ``"<file>, line <n>: <what>"`` for an empty file, a record RDKit cannot parse,
            an element other than H, C, N, O, F, a record without 3D coordinates, or non-finite
            coordinates (the line is the atom's where known, else the record's first line).
    """
    try:
        from rdkit import Chem, rdBase
    except ImportError:
        raise UserError(f"reading {path} needs RDKit: pip install rdkit") from None
    path = Path(path)
    where = _Where(path)
    records = _sdf_records(_read_lines(path))
    if not records:
        raise where(1, "the file is empty (no molecules)")
    out: list[Molecule] = []
    for start, block in records:
        with rdBase.BlockLogs():
            mol = Chem.MolFromMolBlock("\n".join(block) + "\n", sanitize=False, removeHs=False)
        if mol is None:
            _diagnose_v2000(where, start, block)
            raise where(start, "RDKit cannot parse this molecule record")
        v2000 = len(block) > 3 and "V2000" in block[3]
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        if len(z) == 0:
            raise where(start, "the molecule record has no atoms")
        for k, zk in enumerate(z.tolist()):
            if zk not in _SYMBOL:
                symbol = mol.GetAtomWithIdx(k).GetSymbol()
                raise where(
                    start + 4 + k if v2000 else start,
                    f"unknown element {symbol!r} (atom {k + 1}): only {_ALLOWED} are accepted",
                )
        if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
            raise where(start, "the molecule has no 3D coordinates (2D drawing or none)")
        pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
        bad = np.nonzero(~np.isfinite(pos).all(1))[0]
        if len(bad):
            k = int(bad[0])
            raise where(
                start + 4 + k if v2000 else start, f"atom {k + 1} has non-finite coordinates"
            )
        out.append((pos, z))
    return out


def molecule_set(molecules: Iterable[tuple[ArrayLike, ArrayLike]]) -> MoleculeSet:
    """A flat :class:`MoleculeSet` from ``(pos (n, 3), z (n,))`` pairs."""
    mols = _molecules(molecules)
    counts = np.array([len(z) for _, z in mols], dtype=np.int64)
    return MoleculeSet(
        charges=np.concatenate([z for _, z in mols]) if mols else np.zeros(0, np.int64),
        pos=np.concatenate([p for p, _ in mols]) if mols else np.zeros((0, 3)),
        ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


def read_molecules(path: str | Path) -> MoleculeSet:
    """Molecules from a file, by suffix: ``.xyz`` (:func:`read_xyz`), ``.sdf``/``.sd``/``.mol``
    (:func:`read_sdf`), ``.npz``/``.extxyz`` (:func:`~molfff.molecules.qm9.load_molecule_file`).

    Raises:
        UserError: unknown suffix, or any problem the reader finds.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in XYZ_SUFFIXES:
        return molecule_set(read_xyz(path))
    if suffix in SDF_SUFFIXES:
        return molecule_set(read_sdf(path))
    if suffix in NPZ_SUFFIXES:
        return load_molecule_file(path)
    known = ", ".join(XYZ_SUFFIXES + SDF_SUFFIXES + NPZ_SUFFIXES)
    raise UserError(f"molecule file {path}: unknown format {path.suffix!r} (use one of {known})")
