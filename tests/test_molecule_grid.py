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
