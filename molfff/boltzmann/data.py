"""Sample sets of the particle benchmarks: the Klein et al. reference splits and local MCMC samples.

A sample set is a ``.npy`` array of shape ``(N, n·d)`` (``(N, n, d)`` is accepted too) in
particle-major order ``(x_1, ..., x_n)``, the layout of the energies in
:mod:`molfff.boltzmann.energies`. Every loaded array is re-centred to zero centre of mass per
sample,

    x_i <- x_i - (1/n) sum_j x_j,

because the flows live on that ``(n-1)·d``-dimensional subspace
(:class:`molfff.fff.layout.ParticleLayout`) and the DW4 reference data are not centred (centres of
mass up to ~16 in absolute value). The energies are translation invariant, so centring does not
change them.

File names follow the reference data of Klein, Krämer, Noé (2023): ``{split}_split_DW4.npy``,
``{split}_split_LJ13-1000.npy``; the plain ``{split}_split_{system}.npy`` is what
:func:`save_samples` is expected to write for locally generated sets (LJ13 train, LJ55).

Reference:
    Klein, Krämer, Noé, "Equivariant flow matching", NeurIPS 2023 (DW4, LJ13 MCMC data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molfff.boltzmann.energies import get_energy
from molfff.errors import UserError
from molfff.files import atomic_write

SPLITS = ("train", "val", "test")
REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "data" / "boltzmann"
LOCAL_DIR = REPO_ROOT / "data" / "boltzmann"

# Names used by the reference data, tried before the plain ``{split}_split_{system}.npy``.
_REFERENCE_STEMS = {"LJ13": ("LJ13-1000",), "LJ55": ("LJ55-1000-part1",)}


class SampleFileError(UserError, ValueError):
    """A sample file that is missing, unreadable, or does not fit the system."""


def default_roots() -> list[Path]:
    """Folders searched for sample files when no root is given, in order.

    First the shared reference data (``<repo>/../shared/data/boltzmann``), then the repository's
    own cache ``<repo>/data/boltzmann`` for locally generated samples. A split found in the first
    folder wins, so local samples fill only the splits the reference lacks (LJ13 train, LJ55).
    """
    return [REFERENCE_DIR, LOCAL_DIR]


def split_filenames(system: str, split: str) -> list[str]:
    """Candidate file names of one split of one system, in the order they are tried."""
    key = _system_key(system)
    _check_split(split)
    stems = (*_REFERENCE_STEMS.get(key, ()), key)
    return [f"{split}_split_{stem}.npy" for stem in stems]


def find_split(system: str, split: str, root: str | Path | None = None) -> Path:
    """Path of the file holding ``split`` of ``system``.

    Args:
        system: ``"DW4"``, ``"LJ13"`` or ``"LJ55"`` (case-insensitive).
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder to look in; ``None`` searches :func:`default_roots`.

    Raises:
        SampleFileError: (a ``UserError``) when the folder or the file does not exist; the message
            names every path tried.
    """
    names = split_filenames(system, split)
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise SampleFileError(f"sample folder {root} does not exist or is not a folder")
        roots = [root]
    else:
        roots = default_roots()
    tried = [r / name for r in roots for name in names]
    for path in tried:
        if path.is_file():
            return path
    raise SampleFileError(
        f"no {split} samples for {_system_key(system)}: none of "
        + ", ".join(str(p) for p in tried)
        + f" exists (generate them: molfff data generate {_system_key(system)} --split {split})"
    )


def recentre(x: Tensor, n_particles: int, spatial_dim: int) -> Tensor:
    """Subtract each sample's centre of mass ``(1/n) sum_j x_j``: ``(B, n·d) -> (B, n·d)``."""
    if x.dim() != 2 or x.shape[1] != n_particles * spatial_dim:
        raise ValueError(
            f"x must be (B, {n_particles * spatial_dim}) for n={n_particles}, d={spatial_dim}, "
            f"got {tuple(x.shape)}"
        )
    p = x.reshape(x.shape[0], n_particles, spatial_dim)
    return (p - p.mean(dim=1, keepdim=True)).reshape(x.shape)


def load_samples(path: str | Path, system: str, dtype: torch.dtype | None = None) -> Tensor:
    """Read one ``.npy`` sample file of ``system``, validated and re-centred.

    Args:
        path: the ``.npy`` file, ``(N, n·d)`` or ``(N, n, d)``, N >= 1, finite real numbers.
        system: ``"DW4"``, ``"LJ13"`` or ``"LJ55"``.
        dtype: dtype of the result; default ``torch.get_default_dtype()``. Centring is done in
            float64 before the cast.

    Returns:
        ``(N, n·d)`` positions with zero centre of mass per sample.

    Raises:
        SampleFileError: (a ``UserError``) naming the file, when it is missing or unreadable, has
            the wrong shape or dtype, or holds NaN or infinite values.
    """
    energy = get_energy(system)
    n, d = energy.n_particles, energy.spatial_dim
    path = Path(path)
    if not path.is_file():
        raise SampleFileError(f"sample file {path} does not exist")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise SampleFileError(f"cannot read sample file {path} as .npy: {err}") from err
    if not isinstance(a, np.ndarray):
        raise SampleFileError(f"sample file {path} holds an archive, not one array")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise SampleFileError(f"sample file {path} has dtype {a.dtype}; expected real numbers")
    if a.ndim == 3 and a.shape[1:] == (n, d):
        a = a.reshape(a.shape[0], n * d)
    if a.ndim != 2 or a.shape[1] != n * d or a.shape[0] == 0:
        raise SampleFileError(
            f"sample file {path} has shape {a.shape}; {energy.name} needs (N, {n * d}) "
            f"(n={n} particles in d={d} dimensions) with N >= 1"
        )
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise SampleFileError(
            f"sample file {path} has {int(bad.sum())} of {a.shape[0]} rows with NaN or "
            f"infinite values (first: row {int(np.argmax(bad))})"
        )
    x = recentre(torch.from_numpy(a), n, d)
    return x.to(dtype or torch.get_default_dtype())


def load_split(
    system: str,
    split: str,
    root: str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """One split of a benchmark's samples, ``(N, n·d)``, zero centre of mass per sample.

    Available as reference data (Klein, Krämer, Noé 2023): DW4 train/val/test (N = 100,000 /
    10,000 / 10,000) and LJ13 val/test (10,000 each). LJ13 train and LJ55 have to be generated
    (:func:`molfff.boltzmann.mcmc.generate`) and saved as ``{split}_split_{system}.npy``.

    Note that the DW4 reference splits are consecutive MCMC states: they repeat rows (rejected
    moves) and share rows across splits, so they are neither independent nor disjoint.

    Args:
        system: ``"DW4"``, ``"LJ13"`` or ``"LJ55"`` (case-insensitive).
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder holding the files; ``None`` searches :func:`default_roots`.
        dtype: dtype of the result; default ``torch.get_default_dtype()``.

    Returns:
        ``(N, n·d)`` positions.

    Raises:
        SampleFileError: (a ``UserError``) for a missing or bad file, naming it.
        UnknownEnergyError: (a ``UserError``) for an unknown system.
    """
    return load_samples(find_split(system, split, root), system, dtype)


def _system_key(system: str) -> str:
    return get_energy(system).name


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise SampleFileError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def save_samples(path: str | Path, x: Tensor | np.ndarray) -> Path:
    """Write ``(N, D)`` samples to a ``.npy`` file atomically (temporary file + ``os.replace``).

    An existing file at ``path`` is replaced only once the new one is completely written, so an
    interrupted or failed write leaves it as it was.

    Raises:
        ValueError: when ``x`` is not a non-empty 2-D array of finite values.
        UserError: when the folder cannot be created or written.
    """
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim != 2 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"x must be a non-empty (N, D) float array, got {a.shape} {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError("x holds NaN or infinite values; refusing to save")
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"path must end in .npy (np.save would append it), got {path}")
    try:
        with atomic_write(path) as fh:
            np.save(fh, a)
    except OSError as err:
        raise UserError(f"cannot write samples to {path}: {err}") from err
    return path
