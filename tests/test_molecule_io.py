"""Writing and strictly reading molecule files (xyz, SDF), and metrics of a file."""

import importlib.util
import io
import json

import numpy as np
import pytest
import torch

from molfff.errors import UserError
from molfff.molecules.io import (
    molecule_set,
    read_molecules,
    read_sdf,
    read_xyz,
    save_molecules,
    write_sdf,
    write_xyz,
)
from molfff.molecules.metrics import bond_orders, evaluate, is_stable
from molfff.molecules.report import format_metrics, metrics_for_file, run_metrics
from tests.molecules import ethylene, hcn, methane, pentavalent_carbon


def random_molecules(rng, m=20):
    out = []
    for _ in range(m):
        n = int(rng.integers(1, 30))
        out.append((rng.normal(scale=3.0, size=(n, 3)), rng.choice([1, 6, 7, 8, 9], size=n)))
    return out


def test_xyz_round_trip_to_1e6(tmp_path):
    mols = random_molecules(np.random.default_rng(0)) + [methane(), ethylene(), hcn()]
    mols.append((1e4 * np.ones((2, 3)) - 0.5e-7, np.array([1, 1])))  # wide numbers stay apart
    path = tmp_path / "m.xyz"
    with open(path, "w") as fh:
        assert write_xyz(mols, fh) == len(mols)
    back = read_xyz(path)
    assert len(back) == len(mols)
    for (pos, z), (pos2, z2) in zip(mols, back, strict=True):
        assert pos2.dtype == np.float64 and pos2.shape == pos.shape
        np.testing.assert_array_equal(z2, z)
        np.testing.assert_allclose(pos2, pos, rtol=0, atol=1e-6)
    lines = path.read_text().splitlines()
    assert lines[1] == f"molecule 0 stable={is_stable(*mols[0])}"
    i = len(mols) - 4
    assert f"molecule {i} stable=True" in lines  # methane


def test_xyz_accepts_torch_custom_comments_and_other_writers(tmp_path):
    pos, z = ethylene()
    buf = io.StringIO()
    write_xyz([(torch.as_tensor(pos), torch.as_tensor(z))], buf, comments=["sample a"])
    assert buf.getvalue().splitlines()[1] == "sample a"
    with pytest.raises(ValueError, match="several lines"):
        write_xyz([(pos, z)], io.StringIO(), comments=["a\nb"])
    with pytest.raises(ValueError, match="atomic numbers"):
        write_xyz([(pos, np.array([6, 6, 1, 1, 1, 17]))], buf := io.StringIO())
    assert buf.getvalue() == ""  # nothing half-written
    # EDM / GeoLDM style: empty comment, 9 decimals; lower case, atomic numbers, CRLF, blank lines
    text = "3\n\nH 0.000000000 0.000000000 -1.065000000\nC 0 0 0\nN 0 0 1.156\n"
    text += "\n2\r\ncomment\r\nc 0 0 0\r\n1 1.09 0 0\r\n\n\n"
    (tmp_path / "edm.xyz").write_text(text)
    (p1, z1), (p2, z2) = read_xyz(tmp_path / "edm.xyz")
    np.testing.assert_array_equal(z1, [1, 6, 7])
    np.testing.assert_array_equal(z2, [6, 1])
    np.testing.assert_allclose(p2, [[0, 0, 0], [1.09, 0, 0]])
    ext = '2\nProperties=species:S:1:pos:R:3:forces:R:3 pbc="F F F"\n'
    ext += "H 0 0 0 1 2 3\nH 0 0 0.74 1 2 3\n"
    (tmp_path / "ext.xyz").write_text(ext)
    assert read_xyz(tmp_path / "ext.xyz")[0][1].tolist() == [1, 1]


@pytest.mark.parametrize("make", [ethylene, hcn, methane])
def test_sdf_bonds_match_edm_and_rdkit_reads_them(tmp_path, make):
    from rdkit import Chem

    pos, z = make()
    path = tmp_path / "m.sdf"
    save_molecules(path, [(pos, z)])
    mol = next(iter(Chem.SDMolSupplier(str(path), removeHs=False)))  # sanitized: valid
    assert mol is not None and mol.GetProp("_Name") == "molecule 0"
    assert mol.GetProp("stable") == "True"
    assert [a.GetAtomicNum() for a in mol.GetAtoms()] == z.tolist()
    orders = np.zeros((len(z), len(z)), dtype=np.int64)
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        orders[i, j] = orders[j, i] = int(b.GetBondTypeAsDouble())
    np.testing.assert_array_equal(orders, bond_orders(pos, z))
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), pos, atol=1e-4)
    assert all(a.GetTotalNumHs() == 0 for a in mol.GetAtoms())  # no hydrogens invented
    ((pos2, z2),) = read_sdf(path)
    np.testing.assert_array_equal(z2, z)
    np.testing.assert_allclose(pos2, pos, atol=1e-4)


def test_sdf_writes_invalid_molecules_with_their_bonds(tmp_path):
    from rdkit import Chem

    buf = io.StringIO()
    assert write_sdf([pentavalent_carbon(), (np.zeros((1, 3)), np.array([6]))], buf) == 2
    path = tmp_path / "bad.sdf"
    path.write_text(buf.getvalue())
    mols = list(Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False))
    assert mols[0].GetNumBonds() == 5 and mols[0].GetProp("stable") == "False"
    mols[1].UpdatePropertyCache(strict=False)
    assert mols[1].GetAtomWithIdx(0).GetTotalNumHs() == 0  # a bare C stays bare: no implicit CH4
    assert [len(z) for _, z in read_sdf(path)] == [6, 1]


XYZ_GOOD = "2\nfirst\nC 0 0 0\nO 0 0 1.2\n"  # lines 1-4; a second frame starts at line 5

BAD_XYZ = [
    ("", 1, "empty"),
    ("\n  \n", 1, "empty"),
    ("two\nc\nH 0 0 0\n", 1, "one integer, found 'two'"),
    ("2.0\nc\nH 0 0 0\nH 0 0 1\n", 1, "one integer"),
    ("2 atoms\nc\nH 0 0 0\nH 0 0 1\n", 1, "one integer"),
    ("0\nc\n", 1, "at least 1"),
    (XYZ_GOOD + "2\nc\nH 0 0 0\nCl 0 0 1\n", 8, "unknown element 'Cl'"),
    (XYZ_GOOD + "2\nc\nH 0 0 0\nX 0 0 1\n", 8, "unknown element 'X'"),
    (XYZ_GOOD + "2\nc\nH 0 0 0\n17 0 0 1\n", 8, "unknown element '17'"),
    (XYZ_GOOD + "1\nc\nH 0 nan 0\n", 7, "'nan'"),
    (XYZ_GOOD + "1\nc\nH 0 0 -inf\n", 7, "not finite"),
    (XYZ_GOOD + "1\nc\nH 0 0 1e999\n", 7, "not finite"),
    (XYZ_GOOD + "1\nc\nH 0 0\n", 7, "'element x y z'"),
    (XYZ_GOOD + "1\nc\nH\n", 7, "'element x y z'"),
    (XYZ_GOOD + "1\nc\nH 0 0 1.0.0\n", 7, "unparsable z coordinate '1.0.0'"),
    (XYZ_GOOD + "1\nc\nH 0 0 1 7\n", 7, "5 columns"),
    (XYZ_GOOD + "3\nc\nH 0 0 0\nH 0 0 1\n1\nc\nH 0 0 0\n", 9, "larger than the number of atom"),
    (XYZ_GOOD + "1\nc\nH 0 0 0\nH 0 0 1\n1\nc\nH 0 0 0\n", 8, "has more atom lines"),
    ("1\nc\nH 0 0 0\nH 0 0 1\n", 4, "has more atom lines"),
    (XYZ_GOOD + "3\nc\nH 0 0 0\nH 0 0 1\n", 5, "cut short"),
    (XYZ_GOOD + "3\nc\nH 0 0 0\nH 0 0 1", 5, "cut short"),  # no final newline
    (XYZ_GOOD + "3\n", 5, "cut short"),
    (XYZ_GOOD + "3\nc\n", 5, "cut short"),
    (XYZ_GOOD + "2\nc\nH 0 0 0\n\nH 0 0 1\n", 8, "found an empty line"),
    ("1\nProperties=pos:R:3:species:S:1\n0 0 0 H\n", 2, ".extxyz"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD_XYZ)
def test_bad_xyz_is_one_user_error_with_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / "samples.xyz"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_xyz(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}, line {line}: "), msg
    assert fragment in msg and "\n" not in msg
    with pytest.raises(UserError, match=f"line {line}:"):
        read_molecules(path)


def test_unreadable_xyz_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_xyz(tmp_path / "missing.xyz")
    with pytest.raises(UserError, match="is not a file"):
        read_xyz(tmp_path)
    path = tmp_path / "binary.xyz"
    path.write_bytes(b"1\ncomment\n\xff\xfe\x00 0 0 0\n")
    with pytest.raises(UserError, match=rf"{path}, line 3: not a text file"):
        read_xyz(path)


def _sdf_text(mols):
    buf = io.StringIO()
    write_sdf(mols, buf)
    return buf.getvalue()


def test_bad_sdf_is_one_user_error_with_file_and_line(tmp_path):
    good = _sdf_text([hcn()])  # 14 lines: atoms at lines 5-7
    flat = _sdf_text([(hcn()[0][:, ::-1], hcn()[1])])  # all z = 0: a drawing when flagged 2D
    cases = [
        ("", 1, "empty"),
        (good + good.replace(" N ", " Cl", 1), 14 + 7, "unknown element 'Cl'"),
        (good + good.replace(" N ", " Xx", 1), 14 + 7, "unknown element 'Xx'"),
        (good + good.replace("1.1560", "1.15x0", 1), 14 + 7, "unreadable atom line"),
        (good + "garbage\n", 15, "record"),
        (flat.replace("RDKit          3D", "RDKit          2D"), 1, "no 3D coordinates"),
    ]
    path = tmp_path / "samples.sdf"
    for text, line, fragment in cases:
        path.write_text(text)
        with pytest.raises(UserError) as err:
            read_sdf(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}, line {line}: ") and fragment in msg, (text, msg)


def test_read_molecules_dispatch_and_save_molecules(tmp_path):
    mols = [methane(), hcn()]
    for suffix in ("xyz", "sdf"):
        path = save_molecules(tmp_path / f"out.{suffix}", mols)
        got = read_molecules(path)
        assert len(got) == 2 and got.num_atoms.tolist() == [5, 3]
        with pytest.raises(UserError, match="exists"):
            save_molecules(path, mols)
        save_molecules(path, mols[:1], overwrite=True)
        assert len(read_molecules(path)) == 1
    with pytest.raises(ValueError):  # bad molecule: no file, no temporary left behind
        save_molecules(tmp_path / "bad.xyz", [(np.zeros((2, 3)), np.array([6, 3]))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sdf", "out.xyz"]
    pos = np.zeros((2, 5, 3))
    pos[0, :5], pos[1, :3] = methane()[0], hcn()[0]
    charges = np.array([[6, 1, 1, 1, 1], [1, 6, 7, 0, 0]])
    np.savez(tmp_path / "edm.npz", positions=pos, charges=charges)
    assert read_molecules(tmp_path / "edm.npz").num_atoms.tolist() == [5, 3]
    with pytest.raises(UserError, match="unknown format '.pdb'"):
        read_molecules(tmp_path / "x.pdb")
    with pytest.raises(UserError, match=".xyz or .sdf"):
        save_molecules(tmp_path / "x.pdb", mols)


def test_metrics_of_a_small_file(tmp_path):
    path = save_molecules(tmp_path / "s.xyz", [methane(), hcn(), hcn(), pentavalent_carbon()])
    metrics, text = run_metrics(path, json_output=False, train_smiles=False)
    assert metrics["n_molecules"] == 4 and metrics["n_atoms"] == 17
    assert metrics["molecule_stability"] == 0.75 and metrics["validity"] == 0.75
    assert metrics["uniqueness"] == pytest.approx(2 / 3) and "novelty" not in metrics
    assert "molecule stability   75.00 %" in text and "not computed" in text
    again, as_json = run_metrics(path, json_output=True, train_smiles=False)
    assert json.loads(as_json) == again == metrics


def _qm9_test_subset(n=200):
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed")
    from molfff.molecules.qm9 import load_qm9

    test = load_qm9("test")  # builds the cache once (~30 s) if needed; later tests reuse it
    return test.subset(np.random.default_rng(0).choice(len(test), n, replace=False))


def test_qm9_molecules_written_and_scored_match_direct_scores(tmp_path):
    mols = _qm9_test_subset()
    path = save_molecules(tmp_path / "qm9_test.xyz", mols)
    from molfff.molecules import report

    novelty = report._train_smiles_cached()  # never build the 1.5-minute cache in a test
    reference = None
    if novelty:
        from molfff.molecules.metrics import qm9_smiles

        reference = qm9_smiles("train")
    direct = evaluate(mols, train_smiles=reference)
    from_file = metrics_for_file(path, train_smiles=novelty)
    for key, value in direct.items():
        assert from_file[key] == pytest.approx(value, abs=0), key
    assert from_file["molecule_stability"] > 0.95 and from_file["validity"] > 0.95
    assert from_file["n_molecules"] == 200
    sdf = save_molecules(tmp_path / "qm9_test.sdf", mols)
    assert evaluate(read_molecules(sdf))["molecule_stability"] == pytest.approx(
        direct["molecule_stability"], abs=0.02
    )  # SDF keeps 4 decimals: a bond at its threshold may flip
    assert "QM9 train" in format_metrics(from_file) or not novelty
    assert molecule_set(read_xyz(path)).num_atoms.tolist() == mols.num_atoms.tolist()
