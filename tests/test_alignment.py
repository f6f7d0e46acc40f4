"""RMSD after optimal atom matching and rigid alignment (molfff.molecules.alignment)."""

import numpy as np
import pytest

from molfff.molecules.alignment import match, type_agreement
from tests.molecules import ethylene, methane


def random_orthogonal(rng, proper: bool):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if proper and np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def chiral(rng):
    """Five atoms in general position (no symmetry, not planar): a mirror image differs."""
    return rng.normal(size=(5, 3)) * np.array([2.0, 1.0, 0.5])


@pytest.mark.parametrize("seed", range(5))
def test_a_rotated_permuted_translated_copy_has_zero_rmsd(seed):
    rng = np.random.default_rng(seed)
    pos = chiral(rng)
    perm = rng.permutation(len(pos))
    moved = (pos @ random_orthogonal(rng, proper=True).T + rng.normal(size=3))[perm]
    m = match(moved, pos, reflection=False)
    assert m.rmsd < 1e-8
    assert (m.perm == perm).all()  # atom i of the copy is atom perm[i] of the original
    assert not m.reflected


def test_mirror_images_are_equal_only_with_reflections():
    rng = np.random.default_rng(0)
    pos = chiral(rng)
    mirror = pos * np.array([1.0, 1.0, -1.0])
    with_reflection = match(mirror, pos)
    assert with_reflection.rmsd < 1e-8 and with_reflection.reflected
    assert match(mirror, pos, reflection=False).rmsd > 0.1


def test_rmsd_of_a_perturbed_copy_is_close_to_the_perturbation():
    rng = np.random.default_rng(1)
    pos, _ = ethylene()
    noise = rng.normal(scale=0.01, size=pos.shape)
    m = match(pos @ random_orthogonal(rng, True).T + noise, pos)
    # the alignment can only lower the RMSD below that of the noise itself
    assert m.rmsd <= np.sqrt((noise**2).sum(1).mean()) + 1e-12
    assert m.rmsd > 0.001


def test_type_agreement_counts_matched_atoms_of_equal_type():
    pos, z = methane()
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(z))
    m = match(pos[perm], pos)
    assert type_agreement(z[perm], z, m) == 1.0
    wrong = z[perm].copy()
    wrong[wrong == 6] = 7  # the carbon becomes a nitrogen
    assert type_agreement(wrong, z, m) == pytest.approx(1 - 1 / len(z))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        match(np.zeros((3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        match(np.zeros((0, 3)), np.zeros((0, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions_are_rejected(bad):
    pos = np.eye(3)
    broken = pos.copy()
    broken[1, 2] = bad
    for a, b in ((broken, pos), (pos, broken)):
        with pytest.raises(ValueError, match="finite"):
            match(a, b)


def test_at_least_one_assignment_is_made():
    with pytest.raises(ValueError, match="iterations"):
        match(np.eye(3), np.eye(3), iterations=0)


def test_one_and_two_atoms_and_coincident_atoms():
    assert match([[1, 2, 3]], [[4, 5, 6]]).rmsd == 0.0  # integers are positions too
    assert match([[0, 0, 0], [1, 0, 0]], [[2, 0, 0], [2, 1, 0]]).rmsd < 1e-12
    assert match(np.zeros((4, 3)), np.zeros((4, 3))).rmsd == 0.0
