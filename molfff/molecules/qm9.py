"""QM9 molecules: offline loading from ``qm9pack``, the standard split, and PyG conversion.

Molecules are held flat (all atoms of all molecules concatenated, as PyG batches them):
``charges (N,)`` atomic numbers, ``pos (N, 3)`` in Å and ``ptr (M+1,)`` molecule boundaries.

Split (Cormorant / E-NF / EDM convention, Anderson et al. 2019; Hoogeboom et al. 2022): the
130,831 characterised molecules sorted by their GDB-9 index, ``np.random.seed(0)``,
``perm = np.random.permutation(130831)``; ``perm[:100000]`` is train, the next 17,748 valid and
the last 13,083 (``int(0.1 * 130831)``) test.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from molfff.errors import UserError
from molfff.files import atomic_write
from molfff.molecules.elements import ATOMIC_NUMBERS as ATOM_TYPES  # index = one-hot position
from molfff.molecules.elements import Z_OF_SYMBOL

if TYPE_CHECKING:
    from torch_geometric.data import Data

NUM_QM9 = 130_831
MAX_ATOMS = 29  # QM9's largest molecule, hydrogens included
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
CACHE_VERSION = 1  # bump when the cache's content or layout changes
REPO_ROOT = Path(__file__).resolve().parents[2]
_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


@dataclass(frozen=True)
class MoleculeSet:
    """Molecules stored flat: ``charges (N,)``, ``pos (N, 3)`` (Å), ``ptr (M+1,)``, ``smiles (M,)``.

    ``smiles`` holds the reference SMILES where the source has them (QM9), else ``None``.
    """

    charges: np.ndarray
    pos: np.ndarray
    ptr: np.ndarray
    smiles: np.ndarray | None = None

    def __post_init__(self):
        n, m = len(self.charges), len(self.ptr) - 1
        ok_ptr = (
            m >= 0 and self.ptr[0] == 0 and self.ptr[-1] == n and (np.diff(self.ptr) >= 0).all()
        )
        if self.pos.shape != (n, 3) or not ok_ptr:
            raise ValueError(
                f"inconsistent molecule set: charges {self.charges.shape}, pos {self.pos.shape}, "
                f"ptr {self.ptr[:3]}...{self.ptr[-2:]} (must rise from 0 to {n})"
            )
        if self.smiles is not None and len(self.smiles) != m:
            raise ValueError(f"{len(self.smiles)} SMILES for {m} molecules")

    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per molecule ``(M,)``."""
        return np.diff(self.ptr)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(n, 3)`` and atomic numbers ``(n,)`` of molecule ``i`` (not re-centred)."""
        a, b = self.ptr[i], self.ptr[i + 1]
        return self.pos[a:b], self.charges[a:b]

    def __iter__(self):
        return (self.molecule(i) for i in range(len(self)))

    def subset(self, idx: np.ndarray) -> MoleculeSet:
        """The molecules at ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.num_atoms[idx]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        atoms = np.arange(ptr[-1]) + np.repeat(self.ptr[idx] - ptr[:-1], counts)  # (N',)
        return MoleculeSet(
            charges=self.charges[atoms],
            pos=self.pos[atoms],
            ptr=ptr,
            smiles=None if self.smiles is None else self.smiles[idx],
        )

    def node_count_distribution(self, max_nodes: int | None = None) -> Tensor:
        """Empirical ``p(n)`` as a float64 tensor ``(max_nodes + 1,)`` indexed by atom count."""
        counts = np.bincount(self.num_atoms, minlength=(max_nodes or 0) + 1)
        if max_nodes is not None and len(counts) > max_nodes + 1:
            raise ValueError(
                f"molecules have up to {len(counts) - 1} atoms > max_nodes={max_nodes}"
            )
        return torch.as_tensor(counts / max(counts.sum(), 1), dtype=torch.float64)

    def to_pyg(self, dtype: torch.dtype = torch.float32) -> list[Data]:
        """One ``torch_geometric.data.Data`` per molecule (see :func:`to_pyg_data`)."""
        return [to_pyg_data(pos, z, dtype=dtype) for pos, z in self]


def to_pyg_data(
    pos: np.ndarray | Tensor, charges: np.ndarray | Tensor, dtype: torch.dtype = torch.float32
) -> Data:
    """A PyG ``Data`` for one molecule, positions centred at zero mean.

    Fields: ``pos (n, 3)`` centred at the unweighted centroid (the zero-centre-of-mass subspace of
    EDM, not mass-weighted), ``z (n,)`` atomic numbers, ``one_hot (n, 5)`` over H, C, N, O, F and
    ``charge (n, 1)`` = atomic number (raw, as in EDM; scaling is left to featurisation).
    """
    from torch_geometric.data import Data

    pos = torch.as_tensor(pos, dtype=torch.float64)
    z = torch.as_tensor(charges, dtype=torch.long)
    if pos.dim() != 2 or pos.shape[1] != 3 or z.shape != (pos.shape[0],):
        raise ValueError(f"need pos (n, 3) and charges (n,), got {tuple(pos.shape)}, {z.shape}")
    table = torch.full((max(ATOM_TYPES) + 1,), -1, dtype=torch.long)
    table[list(ATOM_TYPES)] = torch.arange(len(ATOM_TYPES))
    if (z < 0).any() or (z > max(ATOM_TYPES)).any() or (table[z] < 0).any():
        raise ValueError(f"atomic numbers must be in {ATOM_TYPES}, got {sorted(set(z.tolist()))}")
    pos = (pos - pos.mean(0, keepdim=True)).to(dtype)
    one_hot = torch.nn.functional.one_hot(table[z], len(ATOM_TYPES)).to(dtype)
    return Data(pos=pos, z=z, one_hot=one_hot, charge=z.to(dtype)[:, None], num_nodes=len(z))


def split_indices() -> dict[str, np.ndarray]:
    """Indices (into the index-sorted 130,831 molecules) of the standard train/valid/test split."""
    perm = np.random.RandomState(0).permutation(NUM_QM9)  # == np.random.seed(0); permutation
    a, b = SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["valid"]
    return {"train": perm[:a], "valid": perm[a:b], "test": perm[b:]}


def qm9pack_data_dir() -> Path:
    """The CSV folder of the installed ``qm9pack`` (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("QM9 needs the 'qm9pack' package: pip install qm9pack")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def cache_dir() -> Path:
    """Where processed QM9 files are kept: ``<repo>/data/qm9``."""
    return REPO_ROOT / "data" / "qm9"


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` through a temporary file in the same folder and rename it in place."""
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)


def load_qm9(split: str | None = None, cache: Path | None = None) -> MoleculeSet:
    """QM9 molecules (all 130,831 sorted by GDB-9 index, or one split), processed once and cached.

    Args:
        split: ``"train"``, ``"valid"``, ``"test"`` or ``None`` for all molecules.
        cache: folder of the processed file (default :func:`cache_dir`).
    """
    if split is not None and split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)} or None, got {split!r}")
    path = (cache or cache_dir()) / f"qm9pack_v{CACHE_VERSION}.npz"
    try:
        src = qm9pack_data_dir()
        source = _source_signature(src)
    except UserError:
        # no qm9pack here (e.g. a cluster node without the package index): a complete cache
        # processed on another machine and copied into the cache folder serves as it is
        mols = _read_cache(path, None)
        if mols is None:
            raise
        return mols if split is None else mols.subset(split_indices()[split])
    mols = _read_cache(path, source)
    if mols is None:
        mols = _parse_qm9pack(src)
        save_npz_atomic(
            path,
            version=np.array(CACHE_VERSION),
            source=np.array(source),
            charges=mols.charges,
            pos=mols.pos,
            ptr=mols.ptr,
            smiles=mols.smiles,
        )
    return mols if split is None else mols.subset(split_indices()[split])


def node_count_distribution(split: str = "train", max_nodes: int = MAX_ATOMS) -> Tensor:
    """``p(n)`` of the atom count in a QM9 split, ``(max_nodes + 1,)`` float64 (QM9: n <= 29)."""
    return load_qm9(split).node_count_distribution(max_nodes)


def _source_signature(src: Path) -> str:
    missing = [p for p in _PARTS if not (src / p).is_file()]
    if missing:
        raise UserError(f"qm9pack data folder {src} lacks {', '.join(missing)}; reinstall qm9pack")
    return ";".join(f"{p}:{(src / p).stat().st_size}" for p in _PARTS)


def _read_cache(path: Path, source: str | None) -> MoleculeSet | None:
    """The cached set if it is complete and was made from these source files (any source files
    when ``source`` is None), else ``None``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stale = source is not None and str(f["source"]) != source
            if int(f["version"]) != CACHE_VERSION or stale:
                return None
            mols = MoleculeSet(f["charges"], f["pos"], f["ptr"], f["smiles"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # unreadable or stale: rebuilt and replaced atomically
    return mols if len(mols) == NUM_QM9 else None


def _parse_qm9pack(src: Path) -> MoleculeSet:
    csv.field_size_limit(1 << 26)
    rows = []
    for part in _PARTS:
        with open(src / part, newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    symbols = ast.literal_eval(row["Elements"])
                    xyz = np.asarray(ast.literal_eval(row["XYZ_Ang"]), dtype=np.float64)
                    z = np.array([Z_OF_SYMBOL[s] for s in symbols], dtype=np.int64)
                    if xyz.shape != (len(z), 3) or len(z) != int(row["N_atoms"]):
                        raise ValueError(f"{len(z)} elements, coordinates {xyz.shape}")
                except (KeyError, ValueError, SyntaxError, TypeError) as err:
                    raise UserError(
                        f"{src / part}, line {line}: unreadable molecule ({err})"
                    ) from None
                rows.append((int(row["Index"]), z, xyz, row["SMILES"]))
    rows.sort(key=lambda r: r[0])
    if len(rows) != NUM_QM9 or len({r[0] for r in rows}) != NUM_QM9:
        raise UserError(f"qm9pack in {src} has {len(rows)} molecules, expected {NUM_QM9}")
    counts = np.array([len(r[1]) for r in rows])
    return MoleculeSet(
        charges=np.concatenate([r[1] for r in rows]),
        pos=np.concatenate([r[2] for r in rows]),
        ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        smiles=np.array([r[3] for r in rows]),
    )


def load_molecule_file(path: str | Path) -> MoleculeSet:
    """Molecules from a user's file or folder: :func:`molfff.molecules.io.read_molecules`.

    Kept here for existing callers; the formats (xyz, SDF, npz, folders of xyz) are decided and
    read in :mod:`molfff.molecules.io`, the one place for molecule files.
    """
    from molfff.molecules.io import read_molecules  # io imports this module

    return read_molecules(path)
