"""EDM's sample metrics for a file of molecules, for the command line and for scripts.

:func:`metrics_for_file` reads a file or a folder of xyz files (xyz, SDF, npz; see
:func:`~molfff.molecules.io.read_molecules`) and scores it with
:func:`~molfff.molecules.metrics.evaluate`: atom and molecule stability, validity, uniqueness
and, optionally, novelty against the SMILES of the QM9 training split (Hoogeboom et al. 2022,
EDM). :func:`format_metrics` renders the result for people; :func:`run_metrics` is the one call
a CLI subcommand needs.

A set without any hydrogen (a heavy-atom-only export, common for SDF) still scores, but EDM's
stability counts bonds to explicit hydrogens (a bare carbon is never stable) and RDKit's
validity adds implicit hydrogens to heavy atoms, so such numbers say nothing about the
molecules: the result then carries a warning, which the CLI prints on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from molfff.errors import UserError
from molfff.molecules.elements import HYDROGEN
from molfff.molecules.io import molecule_format, read_molecules, xyz_files
from molfff.molecules.metrics import METRICS_VERSION, evaluate, qm9_smiles

_SHARES = (
    ("atom_stability", "atom stability", "stable atoms / all atoms"),
    ("molecule_stability", "molecule stability", "molecules with all atoms stable"),
    ("validity", "validity", "RDKit sanitizes the inferred bonds"),
    ("uniqueness", "uniqueness", "distinct SMILES / valid"),
    ("valid_unique", "valid and unique", "distinct valid SMILES / all"),
    ("novelty", "novelty", "distinct valid SMILES not in QM9 train / distinct valid"),
)
_NEED_HYDROGENS = ("atom_stability", "molecule_stability", "validity", "valid_unique")


def _train_smiles_cached() -> bool:
    """Whether ``qm9_smiles("train")`` will find its cache (else it builds one, ~1.5 min)."""
    from rdkit import __version__ as rdkit_version

    from molfff.molecules.qm9 import cache_dir

    name = f"smiles_train_m{METRICS_VERSION}_rdkit{rdkit_version}.npz"
    return (cache_dir() / name).is_file()


def no_hydrogen_warning(path: str | Path) -> str:
    """The warning for a set without any hydrogen atom (see the module docstring)."""
    return (
        f"{path} has no hydrogen atoms at all (heavy atoms only?): atom and molecule stability "
        "count bonds to explicit hydrogens and validity lets RDKit add implicit ones, so these "
        "numbers do not describe the molecules; score a file with explicit hydrogens"
    )


def metrics_for_file(
    path: str | Path,
    train_smiles: bool = True,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Stability, validity, uniqueness and (optionally) novelty of the molecules in a file.

    Bonds are inferred from distances by EDM's rule; see :mod:`molfff.molecules.metrics`.

    Args:
        path: an xyz (``.xyz``, ``.txt``, ``.extxyz``), SDF (``.sdf``, ``.sd``, ``.mol``) or
            ``.npz`` file, suffix in any case, or a folder of xyz files (one molecule set).
        train_smiles: compute novelty against the valid SMILES of QM9's training split (needs
            qm9pack; the first call builds a cache of them, about 1.5 minutes).
        note: called with progress notes (e.g. ``print`` to stderr); silent when ``None``.

    Returns:
        ``file``, ``format`` (``xyz``, ``sdf``, ``npz``), ``n_files`` (1, or the xyz files of a
        folder), ``n_molecules``, ``n_atoms`` (ints), ``has_hydrogens`` (bool), ``warnings``
        (list of str: :func:`no_hydrogen_warning` when there is no hydrogen), and the shares
        (floats in [0, 1]) ``atom_stability``, ``molecule_stability``, ``validity``,
        ``uniqueness``, ``valid_unique``, plus ``novelty`` and ``novelty_reference`` when
        ``train_smiles`` is true.

    Raises:
        UserError: unreadable file, no molecules, an empty molecule, RDKit or qm9pack missing.
    """
    path = Path(path)
    try:
        import rdkit  # noqa: F401
    except ImportError:
        raise UserError("validity, uniqueness and novelty need RDKit: pip install rdkit") from None
    mols = read_molecules(path)
    n_files = len(xyz_files(path)) if path.is_dir() else 1
    if len(mols) == 0:
        raise UserError(f"molecule file {path} holds no molecules")
    empty = (mols.num_atoms == 0).nonzero()[0]
    if len(empty):
        raise UserError(f"molecule file {path}: molecule {int(empty[0])} (from 0) has no atoms")
    has_hydrogens = bool((mols.charges == HYDROGEN).any())
    reference = None
    if train_smiles:
        if note is not None and not _train_smiles_cached():
            note("building the SMILES of the QM9 training split for novelty (once, ~1.5 min)")
        reference = qm9_smiles("train")
    if note is not None:
        note(f"scoring {len(mols)} molecules from {path}")
    scores = evaluate(mols, train_smiles=reference)
    out: dict[str, Any] = {
        "file": str(path),
        "format": "xyz" if path.is_dir() else molecule_format(path),
        "n_files": n_files,
        "n_molecules": int(scores.pop("n_molecules")),
        "n_atoms": int(scores.pop("n_atoms")),
        "has_hydrogens": has_hydrogens,
        "warnings": [] if has_hydrogens else [no_hydrogen_warning(path)],
    }
    out.update(scores)
    if train_smiles:
        out["novelty_reference"] = "QM9 train"
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    """The result of :func:`metrics_for_file` as aligned lines of percentages, for people."""
    head = f"{metrics['file']}: {metrics['n_molecules']:,} molecules, {metrics['n_atoms']:,} atoms"
    if metrics.get("n_files", 1) > 1:
        head += f" in {metrics['n_files']:,} files"
    lines = [head]
    void = not metrics.get("has_hydrogens", True)
    for key, label, meaning in _SHARES:
        if key in metrics:
            if void and key in _NEED_HYDROGENS:
                meaning = "MEANINGLESS: no hydrogens in the file"
            lines.append(f"  {label:<19} {100 * metrics[key]:6.2f} %   ({meaning})")
    if "novelty" not in metrics:
        lines.append("  novelty             not computed (reference SMILES not requested)")
    return "\n".join(lines)


def run_metrics(
    path: str | Path,
    json_output: bool = False,
    train_smiles: bool = True,
    note: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], str]:
    """Score a file for the command line: the metrics and the text to print on stdout.

    Args:
        path: the molecule file.
        json_output: render as indented JSON instead of :func:`format_metrics`.
        train_smiles: compute novelty against QM9 train (see :func:`metrics_for_file`).
        note: progress notes (the CLI passes its stderr printer).

    Returns:
        ``(metrics, text)``.
    """
    metrics = metrics_for_file(path, train_smiles=train_smiles, note=note)
    text = json.dumps(metrics, indent=2) if json_output else format_metrics(metrics)
    return metrics, text
