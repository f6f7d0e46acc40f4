"""A grid picture of molecules: 2D depictions from the inferred bonds, legends, a title.

Bonds come from :func:`molfff.molecules.metrics.to_rdkit` (EDM's distance rule); RDKit lays the
graph out in 2D (``rdDepictor``) and :func:`rdkit.Chem.Draw.MolsToGridImage` draws the cells.
Each legend gives the molecular formula (Hill order) and ``stable``/``unstable`` (every atom at its
valence). A molecule RDKit cannot sanitize is drawn unsanitized. Over-bonded molecules (typical of
an untrained model) can get a 2D layout with coincident atoms, on which RDKit's grid drawer raises
``Cannot normalize a zero length vector``: such a molecule is drawn from its 3D positions projected
on their two main axes (legend ``3D projection``), or, if atoms still coincide, becomes an empty
cell labelled ``not drawable``. Should the grid drawer still fail, the cells are drawn one by one,
each failing cell a labelled placeholder: drawing never raises for a bad molecule.
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
# closest two atoms may be in a 2D layout (RDKit lays bonds out 1.5 long); RDKit's grid drawer
# fails on coincident atoms
MIN_SEPARATION = 0.05


def hill_formula(z: ArrayLike) -> str:
    """Molecular formula in Hill order (C, H, then alphabetical), e.g. ``CH4O`` for methanol."""
    counts = Counter(SYMBOL_OF_Z.get(int(a), f"Z{int(a)}") for a in np.asarray(z))
    order = [s for s in ("C", "H") if s in counts] if "C" in counts else []
    order += sorted(s for s in counts if s not in order)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def _draw_options():
    from rdkit.Chem import Draw

    options = Draw.MolDrawOptions()
    options.prepareMolsBeforeDrawing = False  # done in _drawable, unsanitized where needed
    options.legendFontSize = 16
    return options


def _grid(mols: list, legends: list[str], per_row: int):
    """RDKit's grid drawing (a PIL image); raises what RDKit raises."""
    from rdkit.Chem import Draw

    return Draw.MolsToGridImage(
        mols,
        molsPerRow=per_row,
        subImgSize=(CELL, CELL),
        legends=legends,
        drawOptions=_draw_options(),
        returnPNG=False,
    )


def _separated(mol) -> bool:
    """Whether all atoms of ``mol``'s 2D layout are at least ``MIN_SEPARATION`` apart."""
    xy = mol.GetConformer().GetPositions()[:, :2]
    if len(xy) < 2:
        return True
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    return bool(d[np.triu_indices(len(xy), 1)].min() >= MIN_SEPARATION)


def _project_3d(mol, pos3d: np.ndarray) -> None:
    """Replace ``mol``'s layout by ``pos3d`` (Å) projected on its two main axes (PCA); one Å is
    about one depiction unit (RDKit lays bonds out 1.5 long)."""
    from rdkit.Geometry import Point3D

    centred = pos3d - pos3d.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T if len(vt) >= 2 else np.c_[centred @ vt.T, np.zeros(len(centred))]
    conf = mol.GetConformer()
    for i, (x, y) in enumerate(xy):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), 0.0))


def _drawable(pos: ArrayLike, z: ArrayLike):
    """``(mol, note)``: a 2D-depicted RDKit molecule ready for drawing (sanitized if RDKit can)
    and a legend note (``""`` or ``"3D projection"``), or ``(None, "not drawable")``.

    The molecule has been drawn once in a one-cell grid, the code path :func:`grid_image` uses.
    """
    from rdkit import Chem
    from rdkit.Chem import Draw, rdDepictor

    from molfff.molecules.metrics import to_rdkit

    try:
        mol = Chem.RWMol(to_rdkit(pos, z))
        try:
            Chem.SanitizeMol(mol)
            mol = Chem.RemoveHs(mol)
            kekulize = True
        except ValueError:  # valence or kekulization failures: draw the graph as it is
            mol.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(mol)
            mol = Chem.RemoveHs(mol, sanitize=False)
            kekulize = False
        pos3d = mol.GetConformer().GetPositions()  # of the atoms kept, in their order
        rdDepictor.Compute2DCoords(mol)
        note = ""
        if not _separated(mol):  # the layout collapsed atoms (an over-bonded graph)
            _project_3d(mol, pos3d)
            note = "3D projection"
            if not _separated(mol):
                return None, "not drawable"
        mol = Draw.PrepareMolForDrawing(mol, kekulize=kekulize, addChiralHs=False)
        _grid([mol], [""], 1)  # fails here rather than in the whole grid
        return mol, note
    except Exception:  # noqa: BLE001 - any RDKit failure on one odd molecule gives a placeholder
        return None, "not drawable"


def _cell_by_cell(mols: list, legends: list[str], per_row: int):
    """The grid pasted together from one-cell grids; a cell RDKit fails on is an empty cell
    whose legend ends in ``(not drawable)``."""
    from PIL import Image, ImageDraw

    rows = -(-len(mols) // per_row)
    out = Image.new("RGB", (per_row * CELL, rows * CELL), "white")
    for i, (mol, legend) in enumerate(zip(mols, legends, strict=True)):
        try:
            cell = _grid([mol], [legend], 1)
        except Exception:  # noqa: BLE001 - one odd molecule must not cost the picture
            cell = Image.new("RGB", (CELL, CELL), "white")
            ImageDraw.Draw(cell).text(
                (8, CELL - 24), f"{legend} (not drawable)", fill="black", font_size=12
            )
        out.paste(cell, ((i % per_row) * CELL, (i // per_row) * CELL))
    return out


def grid_image(molecules: Sequence[tuple[ArrayLike, ArrayLike]], title: str | None = None):
    """A PIL image of ``molecules`` (``(pos (n, 3) Å, z (n,))`` each), ``PER_ROW`` per row.

    Size: ``PER_ROW * CELL`` wide (fewer columns for fewer molecules), ``rows * CELL`` high, plus
    ``TITLE_HEIGHT`` with a title.

    Raises:
        ValueError: no molecules.
    """
    from PIL import Image, ImageDraw
    from rdkit import Chem

    from molfff.molecules.metrics import is_stable

    if len(molecules) == 0:
        raise ValueError("no molecules to draw")
    mols, legends = [], []
    for pos, z in molecules:
        mol, note = _drawable(pos, z)
        label = f"{hill_formula(z)} {'stable' if is_stable(pos, z) else 'unstable'}"
        mols.append(Chem.Mol() if mol is None else mol)
        legends.append(f"{label} ({note})" if note else label)
    per_row = min(PER_ROW, len(mols))
    try:
        grid = _grid(mols, legends, per_row)
    except Exception:  # noqa: BLE001 - RDKit failed on a molecule the one-cell test passed
        grid = _cell_by_cell(mols, legends, per_row)
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
