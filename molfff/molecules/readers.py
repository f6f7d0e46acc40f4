"""Reading molecule files strictly: xyz (plain and extended), SDF and EDM-style npz.

A molecule is a pair ``(pos (n, 3) float64 in Å, z (n,) int64 atomic numbers)`` with elements H, C,
N, O, F. Readers never guess: every problem raises one :class:`~molfff.errors.UserError` naming
the file and, for text files, the 1-based line; readers return all molecules or nothing.

The parsing itself is ASE's (xyz, extxyz) and RDKit's (SDF). Our own code is the check in front
of them, because neither says where a file is wrong (ASE: ``could not convert string to float``
without file or line; RDKit: ``None``), and ASE silently accepts what a metric must not see: it
stops at the first blank line (dropping every later frame), reads a missing ``pos`` as zeros, and
accepts NaN coordinates and unknown columns.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molfff.errors import UserError
from molfff.molecules.elements import ALLOWED, ATOMIC_NUMBERS, SYMBOL_OF_Z

Molecule = tuple[np.ndarray, np.ndarray]  # pos (n, 3) float64, z (n,) int64

_Z_OF_UPPER = {s.upper(): z for z, s in SYMBOL_OF_Z.items()}
_COUNT = re.compile(r"\+?\d+")
_PLAIN = (0, 1, 4)  # species column, first position column, columns of a plain xyz atom line


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
        return z if z in SYMBOL_OF_Z else None
    return _Z_OF_UPPER.get(token.upper())


# --- xyz ---------------------------------------------------------------------------------------


@dataclass
class _Frame:
    head: int  # 0-based index of the count line
    n: int
    layout: tuple[int, int, int]  # species column, first pos column, number of columns
    extended: bool


def _layout(where: _Where, number: int, comment: str) -> tuple[tuple[int, int, int], bool]:
    """Column layout of a frame from its comment, through ASE's own extended-xyz parser."""
    if "properties=" not in comment.lower():
        return _PLAIN, False
    from ase.io.extxyz import key_val_str_to_dict, parse_properties

    try:
        props = key_val_str_to_dict(comment).get("Properties")
        if props is None:  # ASE reads the key case-sensitively: this frame is plain to it
            return _PLAIN, False
        columns, names, _, _ = parse_properties(str(props))
    except (ValueError, TypeError, IndexError) as err:
        raise where(number, f"unreadable extended-xyz Properties= ({err})") from None
    start, offset = {}, 0
    for name in names:
        start[name] = offset
        offset += columns[name][1]
    if columns.get("species", (None, 0))[1] != 1 or columns.get("pos", (None, 0))[1] != 3:
        raise where(
            number,
            "extended xyz whose Properties= lack species:S:1 or pos:R:3: positions and "
            f"elements cannot be read (found {_short(str(props))})",
        )
    return (start["species"], start["pos"], offset), True


def _check_atom(
    where: _Where, line: str, number: int, k: int, frame: _Frame
) -> tuple[str, ...] | None:
    """Validate atom ``k`` of a frame; the species token as symbol when it was a number."""
    n, head = frame.n, frame.head + 1
    species, first, ncols = frame.layout
    cols = line.split()
    if len(cols) == 1 and _COUNT.fullmatch(cols[0]):
        raise where(
            number,
            f"expected atom {k + 1} of {n} but found a count line {_short(line)}: "
            f"the count {n} at line {head} is larger than the number of atom lines",
        )
    if len(cols) < ncols:
        found = "an empty line" if not cols else _short(line)
        what = "'element x y z'" if not frame.extended else f"{ncols} columns (Properties=)"
        raise where(number, f"expected {what} for atom {k + 1} of {n}, found {found}")
    if len(cols) > ncols:
        hint = (
            "extra columns need an extended-xyz Properties= comment"
            if not frame.extended
            else "more than its Properties= declare"
        )
        raise where(
            number,
            f"{len(cols)} columns where 'element x y z' has {ncols}, found {_short(line)} ({hint})",
        )
    z = _element(cols[species])
    if z is None:
        raise where(number, f"unknown element {cols[species]!r}: only {ALLOWED} are accepted")
    for axis, tok in zip("xyz", cols[first : first + 3], strict=True):
        try:
            if "_" in tok:  # Python's float() reads "1_0" as 10; no xyz writer means that
                raise ValueError(tok)
            value = float(tok)
        except ValueError:
            raise where(number, f"unparsable {axis} coordinate {tok!r} of atom {k + 1}") from None
        if not math.isfinite(value):
            raise where(number, f"{axis} coordinate {tok!r} of atom {k + 1} is not finite")
    if _COUNT.fullmatch(cols[species]):  # ASE reads symbols only
        cols[species] = SYMBOL_OF_Z[z]
        return tuple(cols)
    return None


def _looks_like_atom(line: str) -> bool:
    tokens = line.split()
    if len(tokens) < 4:
        return False
    try:
        [float(t) for t in tokens[1:4]]
    except ValueError:
        return False
    return True


def _check_xyz(where: _Where, lines: list[str]) -> tuple[list[_Frame], list[str]]:
    """The frames of an xyz file, validated line by line, and the text to hand to ASE.

    The text has the blank lines between frames removed (ASE stops at the first one), plain
    frames' comments emptied (ASE would parse free text such as ``Lattice=`` as key=value data),
    and atomic numbers in the element column replaced by symbols (ASE reads symbols only).
    """
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    if end == 0:
        raise where(1, "the file is empty (no molecules)")
    frames: list[_Frame] = []
    out: list[str] = []
    i = 0
    while i < end:
        if not lines[i].strip():
            i += 1
            continue
        head = i + 1  # 1-based line of this frame's count
        tokens = lines[i].split()
        if len(tokens) != 1 or not _COUNT.fullmatch(tokens[0]):
            if frames and _looks_like_atom(lines[i]):
                prev = frames[-1]
                raise where(
                    head,
                    f"expected the atom count of a new frame, found an atom line "
                    f"{_short(lines[i])}: the frame at line {prev.head + 1} declares {prev.n} "
                    f"atom{'s' if prev.n != 1 else ''} but has more atom lines",
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
        layout, extended = _layout(where, head + 1, lines[i + 1])
        frame = _Frame(i, n, layout, extended)
        out += [str(n), lines[i + 1] if extended else ""]
        first = i + 2  # 0-based index of the first atom line
        for k in range(n):
            j = first + k
            if j >= end:
                raise where(
                    head,
                    f"the frame declares {n} atoms but the file ends after {k} atom lines "
                    f"(line {end}): the last frame is cut short",
                )
            renamed = _check_atom(where, lines[j], j + 1, k, frame)
            out.append(lines[j] if renamed is None else " ".join(renamed))
        frames.append(frame)
        i = first + n
    return frames, out


def read_xyz(path: str | Path) -> list[Molecule]:
    """Read a (multi-frame) xyz or extended-xyz file strictly, parsed by ASE.

    Each frame is a line holding only the atom count (an integer >= 1), a comment line, then that
    many atom lines. Plain xyz: ``element x y z`` in Å, the element a symbol of H, C, N, O, F in
    any case (``c``, ``C``) or its atomic number (``6``); the comment is free text. Extended xyz:
    the comment's ``Properties=`` (which must include ``species:S:1`` and ``pos:R:3``) gives the
    columns, in any order; other columns are read by ASE and ignored here. Blank lines are allowed
    between frames and at the end. EDM and GeoLDM write this layout (``molecule_NNN.txt``).

    Args:
        path: the file (any suffix; :func:`~molfff.molecules.io.read_molecules` dispatches).

    Returns:
        One ``(pos (n, 3) float64, z (n,) int64)`` pair per frame, in file order.

    Raises:
        UserError: the first problem found, as ``"<file>, line <n>: <what>"``: an empty file, a
            count line that is not one positive integer, an unknown element, a missing,
            unparsable, NaN or infinite coordinate, a count that disagrees with the atom lines,
            a last frame cut short, or ``Properties=`` without species and positions.
    """
    path = Path(path)
    where = _Where(path)
    frames, text = _check_xyz(where, _read_lines(path))
    try:
        from ase.io import read
    except ImportError:
        raise UserError(f"reading {path} needs ASE: pip install ase") from None
    try:
        atoms = read(io.StringIO("\n".join(text) + "\n"), index=":", format="extxyz")
    except Exception:  # noqa: BLE001 -- ASE raises many types; the frame is located below
        atoms = None
    if atoms is None or len(atoms) != len(frames):
        _locate_ase_error(where, frames, text)
    out = []
    for a, frame in zip(atoms, frames, strict=True):
        if len(a) != frame.n:  # the check above makes this impossible; never return a wrong set
            raise where(frame.head + 1, f"ASE read {len(a)} atoms where {frame.n} are declared")
        out.append((a.get_positions().astype(np.float64), a.get_atomic_numbers().astype(np.int64)))
    return out


def _locate_ase_error(where: _Where, frames: list[_Frame], text: list[str]) -> None:
    """Re-read frame by frame to name the frame ASE refused (only extended comments can fail)."""
    from ase.io import read

    start = 0
    for frame in frames:
        chunk = text[start : start + frame.n + 2]
        start += frame.n + 2
        try:
            read(io.StringIO("\n".join(chunk) + "\n"), format="extxyz")
        except Exception as err:  # noqa: BLE001 -- ASE raises many types for malformed data
            raise where(frame.head + 2, f"ASE cannot read this frame ({err})") from None
    raise where(1, "ASE cannot read this file as xyz")


# --- SDF ---------------------------------------------------------------------------------------


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
            raise where(start + 4 + k, f"unknown element {symbol!r}: only {ALLOWED} are accepted")


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
            if zk not in SYMBOL_OF_Z:
                symbol = mol.GetAtomWithIdx(k).GetSymbol()
                raise where(
                    start + 4 + k if v2000 else start,
                    f"unknown element {symbol!r} (atom {k + 1}): only {ALLOWED} are accepted",
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


# --- npz ---------------------------------------------------------------------------------------


def _whole(values: np.ndarray) -> bool:
    """Whether an array holds only whole numbers that fit an int32 (no NaN, inf, 7.6 or 1e30)."""
    if values.dtype.kind in "iu":
        return True
    return values.dtype.kind == "f" and bool(
        np.isfinite(values).all()
        and (np.abs(values) < 2**31).all()
        and (values == np.rint(values)).all()
    )


def read_npz(path: str | Path) -> list[Molecule]:
    """Molecules of an EDM/Cormorant-style ``.npz`` (numpy's own format: nothing to hand over).

    Padded: ``positions (M, n_max, 3)`` and ``charges (M, n_max)`` with charge 0 after each
    molecule's atoms, optionally ``num_atoms (M,)``. Flat: ``positions (N, 3)``, ``charges (N,)``
    and ``num_atoms (M,)``. Positions in Å, charges the atomic numbers of H, C, N, O, F.

    Raises:
        UserError: ``"molecule file <file>: <what>"`` for a file that is not a zip archive of
            arrays, missing, misshapen or complex arrays, charges or ``num_atoms`` that are not
            whole numbers, padding inside a molecule, other elements, non-finite positions.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"molecule file {path} does not exist")
    try:
        if not zipfile.is_zipfile(path):  # np.load would read a .npy or try it as a pickle
            raise UserError(
                f"molecule file {path} is not a .npz archive (numpy.savez's zip of arrays)"
            )
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files if k in ("positions", "charges", "num_atoms")}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"molecule file {path} is not a readable .npz ({err})") from None
    missing = [k for k in ("positions", "charges") if k not in data]
    if missing:
        raise UserError(f"molecule file {path}: missing array(s) {', '.join(missing)}")
    pos, charges = data["positions"], data["charges"]
    if not all(a.dtype.kind in "iuf" for a in (pos, charges)):
        raise UserError(
            f"molecule file {path}: positions and charges must be real numbers, got "
            f"{pos.dtype} and {charges.dtype}"
        )
    for name in ("charges", "num_atoms"):
        if name in data and not _whole(data[name]):
            raise UserError(f"molecule file {path}: {name} must be whole numbers")
    negative = sorted(set(charges[charges < 0].astype(np.int64).tolist()))
    if negative:
        raise UserError(f"molecule file {path}: atomic numbers {negative} are not H, C, N, O or F")
    if pos.ndim == 2 and charges.ndim == 1:  # flat
        if "num_atoms" not in data or pos.shape != (len(charges), 3):
            raise UserError(
                f"molecule file {path}: flat positions {pos.shape} / charges {charges.shape} "
                "need positions (N, 3), charges (N,) and num_atoms (M,)"
            )
        counts = data["num_atoms"].astype(np.int64)
        if counts.ndim != 1 or (counts < 0).any() or counts.sum() != len(charges):
            raise UserError(f"molecule file {path}: num_atoms does not sum to {len(charges)}")
        charges = np.rint(charges).astype(np.int64)
    else:
        if pos.ndim != 3 or pos.shape[2] != 3 or charges.shape != pos.shape[:2]:
            raise UserError(
                f"molecule file {path}: need positions (M, n_max, 3) and charges (M, n_max), "
                f"got {pos.shape} and {charges.shape}"
            )
        charges = np.rint(charges).astype(np.int64)
        mask = charges > 0
        counts = mask.sum(1)
        if "num_atoms" in data and not np.array_equal(data["num_atoms"].reshape(-1), counts):
            raise UserError(f"molecule file {path}: num_atoms disagrees with the non-zero charges")
        if not (np.sort(~mask, axis=1, kind="stable") == ~mask).all():
            raise UserError(f"molecule file {path}: padding (charge 0) must follow the atoms")
        charges, pos = charges[mask], pos[mask]
    empty = np.nonzero(counts == 0)[0]
    if len(empty):
        raise UserError(f"molecule file {path}: molecule {int(empty[0])} (from 0) has no atoms")
    bad = sorted(set(np.unique(charges).tolist()) - set(ATOMIC_NUMBERS))
    if bad:
        raise UserError(f"molecule file {path}: atomic numbers {bad} are not H, C, N, O or F")
    if not np.isfinite(pos).all():
        raise UserError(f"molecule file {path}: positions contain NaN or infinite values")
    ptr = np.concatenate([[0], np.cumsum(counts)])
    pos = pos.astype(np.float64)
    return [(pos[a:b], charges[a:b]) for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
