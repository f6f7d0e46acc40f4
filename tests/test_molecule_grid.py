"""Grids of molecules: samples.png of QM9 runs and `molfff metrics --grid`."""

import importlib.util

import numpy as np
import pytest

from molfff.cli import main
from molfff.molecules.grid import CELL, TITLE_HEIGHT, hill_formula, write_grid
from molfff.molecules.io import write_xyz

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rdkit") is None, reason="needs RDKit (molecules extra)"
)

METHANE = (
    np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
              [0.63, -0.63, -0.63]]),
    np.array([6, 1, 1, 1, 1]),
)  # fmt: skip
WATER = (np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), np.array([8, 1, 1]))


def _broken(seed):
    """Atoms at random places: bonds RDKit will not sanitize (over-bonded carbons)."""
    pos = np.random.default_rng(seed).normal(size=(6, 3)) * 0.4
    return pos, np.array([6, 6, 6, 7, 8, 9])


def test_hill_formula():
    assert hill_formula(METHANE[1]) == "CH4"
    assert hill_formula(WATER[1]) == "H2O"
    assert hill_formula([6, 6, 6]) == "C3"
    assert hill_formula([7, 6, 1, 8, 9, 6]) == "C2HFNO"


def test_grid_has_one_cell_per_molecule_and_survives_bad_molecules(tmp_path):
    molecules = [METHANE, WATER] * 4 + [_broken(s) for s in range(3)]
    path = write_grid(molecules, tmp_path / "g.png", title="step 7")
    from PIL import Image

    assert Image.open(path).size == (8 * CELL, 2 * CELL + TITLE_HEIGHT)  # 11 cells: 2 rows of 8
    path = write_grid([METHANE, WATER, _broken(0)], tmp_path / "h.png")
    assert Image.open(path).size == (3 * CELL, CELL)


def test_metrics_grid_command(tmp_path, capsys):
    xyz = tmp_path / "m.xyz"
    with open(xyz, "w") as fh:
        write_xyz([METHANE, WATER, METHANE, _broken(1), WATER], fh)
    out = tmp_path / "grid.png"
    assert main(["metrics", str(xyz), "--no-novelty", "--grid", str(out), "--grid-n", "4"]) == 0
    from PIL import Image

    assert Image.open(out).size == (4 * CELL, CELL + TITLE_HEIGHT)
    assert "grid:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("grid", "message"),
    [("nowhere/g.png", "does not exist"), ("g.jpg", "must end in .png")],
)
def test_metrics_grid_bad_path_is_one_error_before_scoring(tmp_path, capsys, grid, message):
    xyz = tmp_path / "m.xyz"
    with open(xyz, "w") as fh:
        write_xyz([METHANE], fh)
    assert main(["metrics", str(xyz), "--no-novelty", "--grid", str(tmp_path / grid)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert captured.err.count("\n") == 1  # one line, nothing scored before it


def _crowded():
    """20 atoms within about an ångström (an untrained model's kind of sample): RDKit's 2D layout
    of this over-bonded graph puts atoms on top of each other, and its grid drawer then raised
    ``RuntimeError: Cannot normalize a zero length vector`` (RDKit 2026.09)."""
    rng = np.random.default_rng(3)
    n = int(rng.integers(6, 24))
    pos = rng.normal(size=(n, 3)) * 0.6
    return pos, rng.choice([1, 6, 7, 8, 9], size=n)


def test_coincident_layout_is_drawn_from_the_3d_projection(tmp_path, monkeypatch):
    from PIL import Image

    from molfff.molecules import grid

    mol, note = grid._drawable(*_crowded())
    assert mol is not None and note == "3D projection"
    path = write_grid([METHANE, _crowded(), WATER], tmp_path / "c.png")
    assert Image.open(path).size == (3 * CELL, CELL)
    # without the separation check RDKit's own layout is kept, and RDKit fails on it
    monkeypatch.setattr(grid, "_separated", lambda mol: True)
    assert grid._drawable(*_crowded()) == (None, "not drawable")


def test_grid_falls_back_to_cell_by_cell_drawing(tmp_path, monkeypatch):
    from PIL import Image

    from molfff.molecules import grid

    real = grid._grid
    drawn = []

    def fragile(mols, legends, per_row):  # the whole grid fails, and so does water's cell
        if len(mols) > 1 or legends[0] == "H2O stable":
            raise RuntimeError("Cannot normalize a zero length vector")
        drawn.append(legends[0])
        return real(mols, legends, per_row)

    monkeypatch.setattr(grid, "_grid", fragile)
    path = write_grid([METHANE, WATER, METHANE], tmp_path / "f.png", title="t")
    assert Image.open(path).size == (3 * CELL, CELL + TITLE_HEIGHT)
    assert drawn[-2:] == ["CH4 stable", "CH4 stable"]  # water: a placeholder cell
    water = np.asarray(Image.open(path).convert("L"))[TITLE_HEIGHT:, CELL : 2 * CELL]
    assert water.min() < 128  # its placeholder cell carries the label
