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
    with pytest.raises(SystemExit, match="--noise-std must be >= 0"):
        rung.main(["--noise-std", "-0.1"])
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
