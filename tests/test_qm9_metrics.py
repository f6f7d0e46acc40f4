"""QM9 loading and EDM's distance-based stability / validity metrics."""

import importlib.util

import numpy as np
import pytest
import torch

from molfff.errors import UserError
from molfff.molecules import metrics, qm9
from molfff.molecules.metrics import atom_stability, bond_orders, evaluate, is_stable
from molfff.molecules.qm9 import MoleculeSet, load_molecule_file, split_indices, to_pyg_data
from tests.molecules import ethylene, hcn, methane, pentavalent_carbon, water


def needs_qm9pack():
    """Skip without qm9pack; found, not imported (importing it needs pkg_resources)."""
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed")


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("mol", [methane, water, ethylene, hcn])
def test_small_molecules_are_stable(mol):
    pos, z = mol()
    assert atom_stability(pos, z).all()
    assert is_stable(pos, z)


def test_bond_orders_of_small_molecules():
    o = bond_orders(*ethylene())
    assert o[0, 1] == o[1, 0] == 2
    assert (o[2:, 2:] == 0).all() and o[[1, 1, 0, 0], [2, 3, 4, 5]].tolist() == [1, 1, 1, 1]
    o = bond_orders(*hcn())
    assert o.tolist() == [[0, 1, 0], [1, 0, 3], [0, 3, 0]]
    o = bond_orders(*methane())
    assert o[0, 1:].tolist() == [1, 1, 1, 1] and (o[1:, 1:] == 0).all()


@pytest.mark.parametrize(
    ("d", "order"), [(1.63, 1), (1.65, 0), (1.38, 2), (1.40, 1), (1.22, 3), (1.24, 2)]
)
def test_carbon_carbon_thresholds(d, order):
    """C-C: single < 154 + 10 pm, double < 134 + 5 pm, triple < 120 + 3 pm."""
    assert bond_orders(np.array([[0.0, 0, 0], [d, 0, 0]]), np.array([6, 6]))[0, 1] == order


def test_bond_tables_symmetric_and_nested():
    for a, b in metrics.SINGLE_PM:
        assert metrics._THRESHOLDS[0, metrics.ELEMENTS.index(a), metrics.ELEMENTS.index(b)] > 0
    for table, shorter in ((metrics.DOUBLE_PM, metrics.TRIPLE_PM), (metrics.SINGLE_PM, None)):
        for key, length in table.items():
            assert shorter is None or key not in shorter or shorter[key] < length
    assert np.array_equal(metrics._THRESHOLDS, metrics._THRESHOLDS.transpose(0, 2, 1))


def test_unstable_molecules():
    pos, z = methane()
    ok = atom_stability(pos[:4], z[:4])  # CH3: carbon lacks a bond
    assert ok.tolist() == [False, True, True, True] and not is_stable(pos[:4], z[:4])
    pos, z = methane(r=1.25)  # C-H beyond 109 + 10 pm: nothing is bonded
    assert not atom_stability(pos, z).any()
    r = evaluate([methane(), pentavalent_carbon()], rdkit=False)
    assert r["atom_stability"] == pytest.approx(10 / 11) and r["molecule_stability"] == 0.5


def test_invariance_and_torch_input():
    rng = np.random.default_rng(0)
    pos, z = ethylene()
    perm = rng.permutation(len(z))
    moved = pos @ random_rotation(rng).T + rng.normal(size=3)
    expected = bond_orders(pos, z)[np.ix_(perm, perm)]
    assert np.array_equal(bond_orders(moved[perm], z[perm]), expected)
    assert np.array_equal(bond_orders(torch.tensor(moved[perm]), torch.tensor(z[perm])), expected)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="atomic numbers"):
        bond_orders(np.zeros((2, 3)), np.array([6, 17]))
    with pytest.raises(ValueError, match="positions"):
        bond_orders(np.zeros((2, 2)), np.array([6, 6]))
    with pytest.raises(ValueError, match="NaN"):
        bond_orders(np.full((2, 3), np.nan), np.array([6, 6]))
    with pytest.raises(ValueError, match="at least one"):
        evaluate([], rdkit=False)


def test_rdkit_validity_uniqueness_novelty():
    pytest.importorskip("rdkit")
    assert metrics.smiles(*methane()) == "C"
    assert metrics.smiles(*water()) == "O"
    assert metrics.smiles(*ethylene()) == "C=C"
    assert metrics.smiles(*hcn()) == "C#N"
    assert metrics.smiles(*pentavalent_carbon()) is None
    pos_m, z_m = methane()
    pos_w, z_w = water()
    both = (np.vstack([pos_m, pos_w + 10.0]), np.concatenate([z_m, z_w]))
    assert metrics.smiles(*both) == "C"  # disconnected: valid, largest fragment kept
    rng = np.random.default_rng(1)
    moved = (pos_m @ random_rotation(rng).T + 3.0, z_m)
    r = evaluate([methane(), moved, water(), pentavalent_carbon()], train_smiles={"C"})
    assert r["validity"] == 0.75 and r["uniqueness"] == pytest.approx(2 / 3)
    assert r["valid_unique"] == 0.5 and r["novelty"] == 0.5
    mol = metrics.to_rdkit(*hcn())
    assert mol.GetNumBonds() == 2 and mol.GetConformer().GetAtomPosition(2).z == pytest.approx(
        1.156
    )


def test_to_pyg_data_centres_and_encodes():
    pytest.importorskip("torch_geometric")
    pos, z = ethylene()
    d = to_pyg_data(pos + 5.0, z)
    assert torch.allclose(d.pos.mean(0), torch.zeros(3), atol=1e-6)
    assert d.one_hot.argmax(1).tolist() == [1, 1, 0, 0, 0, 0]
    assert d.charge.squeeze(1).tolist() == [6, 6, 1, 1, 1, 1] and d.num_nodes == 6
    with pytest.raises(ValueError, match="atomic numbers"):
        to_pyg_data(pos, np.array([6, 6, 1, 1, 1, 16]))


def test_molecule_set_subset_and_node_counts():
    mols = [methane(), water(), hcn()]
    s = MoleculeSet(
        np.concatenate([z for _, z in mols]),
        np.vstack([p for p, _ in mols]),
        np.array([0, 5, 8, 11]),
    )
    sub = s.subset(np.array([2, 0]))
    assert sub.num_atoms.tolist() == [3, 5] and np.array_equal(sub.molecule(1)[0], mols[0][0])
    assert np.array_equal(sub.charges, np.concatenate([mols[2][1], mols[0][1]]))
    p = s.node_count_distribution(6)
    assert p.tolist() == [0, 0, 0, 2 / 3, 0, 1 / 3, 0]
    with pytest.raises(ValueError, match="max_nodes"):
        s.node_count_distribution(4)


def test_split_is_the_cormorant_edm_split():
    s = split_indices()
    assert {k: len(v) for k, v in s.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    assert len(np.unique(np.concatenate(list(s.values())))) == qm9.NUM_QM9
    # the legacy global generator that E-NF / EDM seed with np.random.seed(0)
    perm = np.random.RandomState(0).permutation(qm9.NUM_QM9)
    assert np.array_equal(s["train"], perm[:100_000]) and np.array_equal(s["test"], perm[-13_083:])


def test_read_edm_npz_padded_and_flat(tmp_path):
    (pm, zm), (pw, zw) = methane(), water()
    pos = np.zeros((2, 5, 3))
    charges = np.zeros((2, 5), dtype=np.int64)
    pos[0], charges[0] = pm, zm
    pos[1, :3], charges[1, :3] = pw, zw
    np.savez(tmp_path / "padded.npz", positions=pos, charges=charges, num_atoms=[5, 3])
    s = load_molecule_file(tmp_path / "padded.npz")
    assert s.num_atoms.tolist() == [5, 3] and np.array_equal(s.molecule(1)[1], zw)
    np.savez(
        tmp_path / "flat.npz",
        positions=np.vstack([pm, pw]),
        charges=np.r_[zm, zw],
        num_atoms=[5, 3],
    )
    assert np.array_equal(load_molecule_file(tmp_path / "flat.npz").pos, s.pos)


def test_read_xyz_frames(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    from ase import Atoms

    frames = [Atoms(numbers=z, positions=p) for p, z in (methane(), hcn())]
    ase_io.write(tmp_path / "two.xyz", frames)
    s = load_molecule_file(tmp_path / "two.xyz")
    assert s.num_atoms.tolist() == [5, 3] and np.allclose(s.molecule(1)[0], hcn()[0])
    (tmp_path / "bad.xyz").write_text("2\n\nC 0 0\n")
    with pytest.raises(UserError, match="bad.xyz"):
        load_molecule_file(tmp_path / "bad.xyz")


def test_bad_molecule_files_raise_user_error(tmp_path):
    cases = {
        "missing.npz": None,
        "garbage.npz": b"not a zip",
        "nokey.npz": {"positions": np.zeros((1, 2, 3))},
        "shape.npz": {"positions": np.zeros((1, 2, 3)), "charges": np.ones((1, 3))},
        "element.npz": {"positions": np.zeros((1, 2, 3)), "charges": np.array([[6, 17]])},
        "count.npz": {"positions": np.zeros((1, 2, 3)), "charges": [[6, 1]], "num_atoms": [1]},
        "gap.npz": {"positions": np.zeros((1, 3, 3)), "charges": [[6, 0, 1]]},
        "nan.npz": {"positions": np.full((1, 1, 3), np.nan), "charges": [[6]]},
        "file.txt": b"x",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, dict):
            np.savez(path, **content)
        with pytest.raises(UserError, match=name):
            load_molecule_file(path)


def test_stale_or_corrupt_cache_is_ignored(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert qm9._read_cache(tmp_path / "bad.npz", "sig") is None
    qm9.save_npz_atomic(tmp_path / "old.npz", version=np.array(0), source=np.array("sig"))
    assert qm9._read_cache(tmp_path / "old.npz", "sig") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_qm9_loads_with_edm_node_counts():
    needs_qm9pack()
    train = qm9.load_qm9("train")
    assert len(train) == 100_000 and set(np.unique(train.charges)) == set(qm9.ATOM_TYPES)
    counts = np.bincount(train.num_atoms)
    assert [counts[n] for n in (3, 17, 18, 19, 22, 29)] == [1, 13025, 13364, 13832, 3393, 25]
    d = to_pyg_data(*train.molecule(0))
    assert d.pos.shape[1] == 3 and d.one_hot.shape[1] == 5


@pytest.mark.slow
def test_qm9_test_split_reproduces_edm_data_row():
    """EDM Tables 1-3, "Data": atom stability 99.0 %, molecule stability 95.2 %, validity 97.7 %."""
    needs_qm9pack()
    pytest.importorskip("rdkit")
    r = evaluate(qm9.load_qm9("test"))
    assert r["atom_stability"] == pytest.approx(0.990, abs=0.005)
    assert r["molecule_stability"] == pytest.approx(0.952, abs=0.005)
    assert r["validity"] == pytest.approx(0.977, abs=0.005)
    assert r["uniqueness"] > 0.99
