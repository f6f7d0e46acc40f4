"""A grid picture of molecules: 2D depictions from the inferred bonds, legends, a title.

Bonds come from :func:`molfff.molecules.metrics.to_rdkit` (EDM's distance rule); RDKit lays the
graph out in 2D (``rdDepictor``) and :func:`rdkit.Chem.Draw.MolsToGridImage` draws the cells.
Each legend gives the molecular formula (Hill order) and ``stable``/``unstable`` (every atom at its
valence). A molecule RDKit cannot sanitize is drawn unsanitized; one it cannot draw at all becomes
an empty cell labelled ``not drawable``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from molfff.errors import UserError
from molfff.files import atomic_write
from molfff.molecules.elements import SYMBOL_OF_Z

CELL = 220  # pixels per cell side
PER_ROW = 8
GRID_MOLECULES = 32  # molecules in a run's samples.png and in `molfff metrics --grid`
TITLE_HEIGHT = 36  # pixels of the title band above the grid


def hill_formula(z: ArrayLike) -> str:
    """Molecular formula in Hill order (C, H, then alphabetical), e.g. ``CH4O`` for methanol."""
    counts = Counter(SYMBOL_OF_Z.get(int(a), f"Z{int(a)}") for a in np.asarray(z))
    order = [s for s in ("C", "H") if s in counts] if "C" in counts else []
    order += sorted(s for s in counts if s not in order)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def _drawable(pos: ArrayLike, z: ArrayLike):
    """A 2D-depicted RDKit molecule ready for drawing (sanitized if RDKit can), or None."""
    from rdkit import Chem
    from rdkit.Chem import Draw, rdDepictor

    from molfff.molecules.metrics import to_rdkit

    try:
        mol = Chem.RWMol(to_rdkit(pos, z))
        mol.RemoveAllConformers()
        try:
            Chem.SanitizeMol(mol)
            mol = Chem.RemoveHs(mol)
            kekulize = True
        except ValueError:  # valence or kekulization failures: draw the graph as it is
            mol.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(mol)
            mol = Chem.RemoveHs(mol, sanitize=False)
            kekulize = False
        rdDepictor.Compute2DCoords(mol)
        mol = Draw.PrepareMolForDrawing(mol, kekulize=kekulize, addChiralHs=False)
        drawer = Draw.rdMolDraw2D.MolDraw2DCairo(CELL, CELL)
        drawer.drawOptions().prepareMolsBeforeDrawing = False
        drawer.DrawMolecule(mol)  # some layouts (zero-length bonds) only fail when drawn
        return mol
    except Exception:  # noqa: BLE001 - any RDKit failure on one odd molecule gives a placeholder
        return None


def grid_image(molecules: Sequence[tuple[ArrayLike, ArrayLike]], title: str | None = None):
    """A PIL image of ``molecules`` (``(pos (n, 3) Å, z (n,))`` each), ``PER_ROW`` per row.

    Size: ``PER_ROW * CELL`` wide (fewer columns for fewer molecules), ``rows * CELL`` high, plus
    ``TITLE_HEIGHT`` with a title.

    Raises:
        ValueError: no molecules.
    """
    from PIL import Image, ImageDraw
    from rdkit import Chem
    from rdkit.Chem import Draw

    from molfff.molecules.metrics import is_stable

    if len(molecules) == 0:
        raise ValueError("no molecules to draw")
    mols, legends = [], []
    for pos, z in molecules:
        mol = _drawable(pos, z)
        label = f"{hill_formula(z)} {'stable' if is_stable(pos, z) else 'unstable'}"
        mols.append(Chem.Mol() if mol is None else mol)
        legends.append(label if mol is not None else f"{label} (not drawable)")
    options = Draw.MolDrawOptions()
    options.prepareMolsBeforeDrawing = False  # done per molecule above, unsanitized where needed
    options.legendFontSize = 16
    grid = Draw.MolsToGridImage(
        mols,
        molsPerRow=min(PER_ROW, len(mols)),
        subImgSize=(CELL, CELL),
        legends=legends,
        drawOptions=options,
        returnPNG=False,
    )
    if title is None:
        return grid
    out = Image.new("RGB", (grid.width, grid.height + TITLE_HEIGHT), "white")
    out.paste(grid, (0, TITLE_HEIGHT))
    ImageDraw.Draw(out).text((10, 8), title, fill="black", font_size=20)
    return out


def check_png_path(path: str | Path) -> Path:
    """``path`` if a PNG can be written there, else one UserError (checked before sampling)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"grid file {path} must end in .png")
    if not path.parent.is_dir():
        raise UserError(f"grid file {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"grid file {path} is a folder")
    return path


def write_grid(
    molecules: Sequence[tuple[ArrayLike, ArrayLike]], path: str | Path, title: str | None = None
) -> Path:
    """Draw :func:`grid_image` into the PNG ``path`` (written atomically); the path."""
    path = check_png_path(path)
    image = grid_image(molecules, title)
    with atomic_write(path) as fh:
        image.save(fh, format="PNG")
    return path
