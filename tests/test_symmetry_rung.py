"""scripts/symmetry_rung.py: labellings of a rigid shape and its permutation-free RMSD."""

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tests.helpers import load_script

rung = load_script("symmetry_rung")


@pytest.mark.parametrize(
    ("name", "count"),
    [("tetrahedron", 1), ("square", 3), ("scalene4", 24), ("octahedron", 15), ("scalene6", 720)],
)
def test_labellings_are_n_factorial_over_the_point_group(name, count):
    """Td realises all 24 permutations of a tetrahedron's vertices, D4h 8 of a square's, Oh 48
    of an octahedron's; the scalene shapes realise only the identity."""
    assert rung.labellings(rung.shapes()[name]) == count


def test_aligned_rmsd_ignores_order_rotation_reflection_and_translation():
    ref = rung.shapes()["scalene6"]
    rng = np.random.default_rng(0)
    mirror = np.diag([1.0, 1.0, -1.0])
    copies, noisy = [], []
    for k in range(5):
        rot = Rotation.random(random_state=k).as_matrix() @ (mirror if k % 2 else np.eye(3))
        perm = rng.permutation(6)
        copies.append(ref[perm] @ rot.T + rng.normal(size=3))
        noisy.append(copies[-1] + 0.01 * rng.normal(size=(6, 3)))
    assert rung.aligned_rmsd(np.stack(copies), ref) == pytest.approx(np.zeros(5), abs=1e-6)
    # a perturbation can only be aligned away in part: 0 < RMSD <= its own RMS
    rms = [math.sqrt(((n - c) ** 2).sum() / 6) for n, c in zip(noisy, copies, strict=True)]
    got = rung.aligned_rmsd(np.stack(noisy), ref)
    assert np.all(got > 0) and np.all(got <= np.array(rms) + 1e-12)
    # a different shape is far whatever the labelling
    assert rung.aligned_rmsd(rung.shapes()["octahedron"][None], ref)[0] > 0.1


def test_refuses_bad_counts(tmp_path):
    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        rung.main(["--steps", "0"])
    with pytest.raises(SystemExit, match="--tolerance must be > 0"):
        rung.main(["--tolerance", "-1"])
    with pytest.raises(SystemExit, match="--noise-std and --noise-end must be finite and >= 0"):
        rung.main(["--noise-std", "-0.1"])
    with pytest.raises(SystemExit, match="--noise-std and --noise-end must be finite and >= 0"):
        rung.main(["--noise-end", "-0.1"])
    with pytest.raises(SystemExit, match="--types needs --molecule"):
        rung.main(["--types"])
    with pytest.raises(SystemExit, match="--molecule needs --types or --distinguishable"):
        rung.main(["--molecule", "62373"])
    with pytest.raises(SystemExit, match="more than the exhaustive score searches"):
        rung.main(["--molecule", "5009", "--types"])  # QM9's 29-atom molecule
    with pytest.raises(SystemExit, match=r"--molecule must be a training-split index"):
        rung.main(["--molecule", "-1", "--types"])
    with pytest.raises(SystemExit, match="must be finite"):
        rung.main(["--noise-end", "inf"])
    with pytest.raises(SystemExit, match="--shapes or --molecule"):
        rung.main(["--molecule", "62373", "--types", "--shapes", "square"])
    with pytest.raises(SystemExit, match="not both"):
        rung.main(["--molecule", "62373", "--types", "--distinguishable"])
    with pytest.raises(SystemExit, match="--beta must be > 0"):
        rung.main(["--beta", "nan"])
    with pytest.raises(SystemExit, match="is a folder"):
        rung.main(["--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="does not exist"):
        rung.main(["--out", str(tmp_path / "missing" / "x.jsonl")])


@pytest.mark.parametrize("labelled", [False, True])
def test_a_short_run_writes_one_scored_row_per_shape(tmp_path, labelled):
    out = tmp_path / "rows.jsonl"
    flags = [
        "--shapes",
        "square",
        "--steps",
        "2",
        "--batch",
        "4",
        "--samples",
        "20",
        "--width",
        "8",
    ]
    rung.main(
        flags + ["--blocks", "1", "--out", str(out)] + (["--distinguishable"] if labelled else [])
    )
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["shape"] == "square" and row["labellings"] == 3 and row["steps"] == 2
    assert row["distinguishable"] is labelled
    assert 0 <= row["share_is_shape"] <= 1 and row["median_rmsd"] > 0


def test_species_restrict_the_permutations_and_the_labellings():
    """A square coloured H C H C keeps 4 of its 8 realised permutations, all four that preserve
    the colours (1 labelling); coloured H H C C it keeps 2 of the 4 colour-preserving ones."""
    perms = rung.permutations([1, 1, 6, 1], 4)
    assert len(perms) == 6 and all(p[2] == 2 for p in perms)
    assert len({tuple(p) for p in perms}) == 6
    square = rung.shapes()["square"]
    assert rung.labellings(square, [1, 6, 1, 6]) == 1
    assert rung.labellings(square, [1, 1, 6, 6]) == 2
    # an element-preserving score: swapping two different elements is not the molecule
    swapped = square[[1, 0, 2, 3]]  # the same points, the species now on other corners
    assert rung.aligned_rmsd(square[None], square, [1, 1, 6, 6])[0] == pytest.approx(0, abs=1e-6)
    assert rung.aligned_rmsd(swapped[None], square, [1, 6, 1, 6])[0] > 0.1


def test_a_molecule_with_types_is_scored_with_its_elements(tmp_path, capsys):
    out = tmp_path / "ch4.jsonl"
    flags = ["--steps", "2", "--batch", "4", "--samples", "10", "--width", "8", "--blocks", "1"]
    rung.main(["--molecule", "62373", "--types", "--noise-end", "0.02", "--out", str(out)] + flags)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["shape"] == "qm9:62373" and row["n"] == 5 and row["types"] is True
    assert row["labellings"] == 1  # Td realises every permutation of CH4's hydrogens
    assert 0 <= row["molecule_stability"] <= row["atom_stability"] <= 1
    assert "molecule / atom stability" in capsys.readouterr().out
