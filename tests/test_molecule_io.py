"""Writing and strictly reading molecule files (xyz, SDF), and metrics of a file."""

import importlib.util
import io
import json
import re

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
    (XYZ_GOOD + "1\nc\nH 0 1_0 0\n", 7, "unparsable y coordinate '1_0'"),  # float() says 10
    (XYZ_GOOD + "1\nc\nH 0 0 1 7\n", 7, "5 columns"),
    (XYZ_GOOD + "3\nc\nH 0 0 0\nH 0 0 1\n1\nc\nH 0 0 0\n", 9, "larger than the number of atom"),
    (XYZ_GOOD + "1\nc\nH 0 0 0\nH 0 0 1\n1\nc\nH 0 0 0\n", 8, "has more atom lines"),
    ("1\nc\nH 0 0 0\nH 0 0 1\n", 4, "has more atom lines"),
    (XYZ_GOOD + "3\nc\nH 0 0 0\nH 0 0 1\n", 5, "cut short"),
    (XYZ_GOOD + "3\nc\nH 0 0 0\nH 0 0 1", 5, "cut short"),  # no final newline
    (XYZ_GOOD + "3\n", 5, "cut short"),
    (XYZ_GOOD + "3\nc\n", 5, "cut short"),
    (XYZ_GOOD + "2\nc\nH 0 0 0\n\nH 0 0 1\n", 8, "found an empty line"),
    ("1\nProperties=species:S:1\nH\n", 2, "lack species:S:1 or pos:R:3"),
    ("1\nProperties=species:S:1:pos:R:2\nH 0 0\n", 2, "lack species:S:1 or pos:R:3"),
    ("1\nProperties=species:S:1:pos:R:3:q:R:1\nH 0 0 0\n", 3, "expected 5 columns"),
    ("1\nProperties=species:S:1:pos:R:3\nH 0 0 0 1\n", 3, "more than its Properties="),
    ("1\nProperties=species:S:1:pos:R:3:q:I:1\nH 0 0 0 x\n", 2, "ASE cannot read"),
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


def test_one_table_of_elements():
    from molfff.molecules import elements, metrics, qm9, readers

    assert metrics.ELEMENTS is elements.ELEMENTS and metrics.VALENCE is elements.VALENCE
    assert qm9.ATOM_TYPES is elements.ATOMIC_NUMBERS and readers.SYMBOL_OF_Z is elements.SYMBOL_OF_Z
    assert [elements.VALENCE[elements.SYMBOL_OF_Z[z]] for z in (1, 6, 7, 8, 9)] == [1, 4, 3, 2, 1]


def test_suffixes_in_any_case(tmp_path):
    from molfff.molecules.io import molecule_format
    from molfff.molecules.qm9 import load_molecule_file

    mols = [methane(), hcn()]
    assert [molecule_format(f"a.{s}") for s in ("XYZ", "Txt", "EXTXYZ", "SDF", "Mol", "NPZ")] == [
        "xyz", "xyz", "xyz", "sdf", "sdf", "npz"
    ]  # fmt: skip
    save_molecules(tmp_path / "samples.XYZ", mols)
    save_molecules(tmp_path / "samples.SDF", mols)
    text = (tmp_path / "samples.XYZ").read_text()
    (tmp_path / "samples.EXTXYZ").write_text(text)
    (tmp_path / "molecule_000.TXT").write_text(text)
    pos = np.zeros((2, 5, 3))
    pos[0], pos[1, :3] = methane()[0], hcn()[0]
    with open(tmp_path / "samples.NPZ", "wb") as fh:  # np.savez would append ".npz"
        np.savez(fh, positions=pos, charges=[[6, 1, 1, 1, 1], [1, 6, 7, 0, 0]])
    for name in ("samples.XYZ", "samples.SDF", "samples.EXTXYZ", "molecule_000.TXT", "samples.NPZ"):
        got = read_molecules(tmp_path / name)
        assert got.num_atoms.tolist() == [5, 3], name
        np.testing.assert_allclose(got.molecule(1)[0], hcn()[0], atol=1e-4)
        assert load_molecule_file(tmp_path / name).num_atoms.tolist() == [5, 3]
    with pytest.raises(UserError, match=r"does not exist; unknown format '\.pdb'"):
        read_molecules(tmp_path / "x.pdb")
    (tmp_path / "x.PDB").write_text("")
    with pytest.raises(UserError, match=r"unknown format '\.PDB' \(use one of \.xyz, "):
        read_molecules(tmp_path / "x.PDB")


def _edm_txt(pos, z):
    """A file as EDM's and GeoLDM's save_xyz_file write it: empty comment, 9 decimals."""
    rows = "".join(
        f"{'HCNOF'[[1, 6, 7, 8, 9].index(zi)]} {x:.9f} {y:.9f} {w:.9f}\n"
        for zi, (x, y, w) in zip(z.tolist(), pos.tolist(), strict=True)
    )
    return f"{len(z)}\n\n{rows}"


def test_folder_of_edm_txt_files_in_natural_order(tmp_path):
    from molfff.molecules import io as mio

    sizes = {}
    rng = np.random.default_rng(1)
    for i in (0, 1, 2, 10, 11):  # plain sorting would put molecule_10 before molecule_2
        n = i + 1
        pos, z = rng.normal(scale=2.0, size=(n, 3)), rng.choice([1, 6, 7, 8, 9], size=n)
        (tmp_path / f"molecule_{i}.txt").write_text(_edm_txt(pos, z))
        sizes[i] = n
    (tmp_path / "molecule_3.xyz").write_text(_edm_txt(*methane()) + "\n" + _edm_txt(*hcn()))
    (tmp_path / "args.pickle").write_bytes(b"\x80\x04")  # other files in the folder are ignored
    (tmp_path / ".hidden.txt").write_text("not xyz")
    (tmp_path / "sub").mkdir()
    names = [p.name for p in mio.xyz_files(tmp_path)]
    assert names == [f"molecule_{i}.{'xyz' if i == 3 else 'txt'}" for i in (0, 1, 2, 3, 10, 11)]
    got = read_molecules(tmp_path)
    assert got.num_atoms.tolist() == [1, 2, 3, 5, 3, 11, 12]
    np.testing.assert_allclose(got.molecule(3)[0], methane()[0], atol=1e-9)
    metrics = metrics_for_file(tmp_path, train_smiles=False)
    assert metrics["n_files"] == 6 and metrics["n_molecules"] == 7 and metrics["format"] == "xyz"
    assert "in 6 files" in format_metrics(metrics)


def test_folder_problems_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=rf"folder {empty} holds no xyz-format .*: it is empty"):
        read_molecules(empty)
    sdfs = tmp_path / "sdfs"
    sdfs.mkdir()
    save_molecules(sdfs / "a.sdf", [hcn()])
    (sdfs / "notes").write_text("x")
    with pytest.raises(UserError) as err:
        read_molecules(sdfs)
    msg = str(err.value)
    assert str(sdfs) in msg and "(no suffix), .sdf files" in msg and "by its own path" in msg
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "molecule_1.txt").write_text(_edm_txt(*hcn()))
    (mixed / "molecule_2.txt").write_text("loss 0.3\nepoch 10\n")  # a log, not a molecule
    with pytest.raises(UserError, match=rf"{mixed / 'molecule_2.txt'}, line 1: the atom count"):
        read_molecules(mixed)
    with pytest.raises(UserError, match="does not exist"):
        read_molecules(tmp_path / "missing_folder")


def test_xyz_is_parsed_by_ase_behind_the_check(tmp_path):
    # columns in any order under Properties=; all frames read though blank lines separate them
    # (ASE alone stops at the first blank line); free comments never reach ASE's key=value parser
    text = "1\nProperties=pos:R:3:species:S:1 energy=-1.5\n0 0 1.5 c\n\n"
    text += "2\nLattice= broken comment\n1 0 0 0\nO 0 0 0.96\n"
    path = tmp_path / "m.xyz"
    path.write_text(text)
    (p1, z1), (p2, z2) = read_xyz(path)
    assert z1.tolist() == [6] and p1.tolist() == [[0, 0, 1.5]]
    assert z2.tolist() == [1, 8] and p2.tolist() == [[0, 0, 0], [0, 0, 0.96]]


def test_no_hydrogens_warns_on_stderr_and_in_json(tmp_path, capsys):
    from molfff.cli import main

    heavy = [(p[z != 1], z[z != 1]) for p, z in (methane(), ethylene(), hcn())]
    path = save_molecules(tmp_path / "heavy.sdf", heavy)
    assert main(["metrics", str(path), "--no-novelty", "--json"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)
    assert metrics["has_hydrogens"] is False and len(metrics["warnings"]) == 1
    assert "no hydrogen atoms" in metrics["warnings"][0]
    warning = [ln for ln in err.splitlines() if ln.startswith("molfff: warning:")]
    assert len(warning) == 1 and str(path) in warning[0] and "no hydrogen atoms" in warning[0]
    assert metrics["atom_stability"] < 0.5  # what the warning is about: bare C, C=C, C#N
    assert main(["metrics", str(path), "--no-novelty"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("MEANINGLESS: no hydrogens") == 4
    full = save_molecules(tmp_path / "full.sdf", [methane(), hcn()])
    assert main(["metrics", str(full), "--no-novelty", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == [] and json.loads(out)["has_hydrogens"] is True
    assert "warning" not in err and "MEANINGLESS" not in out


_NPZ_POS = np.array([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.96, 0.0, 0.0]]])
BAD_NPZ = [  # (arrays or raw bytes, fragment of the one error)
    ("npy", "not a .npz archive"),  # a .npy file renamed .npz
    (bytes(range(256)) * 4, "not a .npz archive"),
    ({"positions": _NPZ_POS, "charges": [[8, 1, np.nan]]}, "whole numbers"),
    ({"positions": _NPZ_POS, "charges": [[8, 1, 1e30]]}, "whole numbers"),
    ({"positions": _NPZ_POS, "charges": [[7.6, 1.4, 1]]}, "whole numbers"),
    ({"positions": _NPZ_POS, "charges": [[8, -1, 1]]}, "[-1]"),
    ({"positions": _NPZ_POS * (1 + 1j), "charges": [[8, 1, 1]]}, "real numbers"),
    ({"positions": _NPZ_POS[0], "charges": [8, 1, 1], "num_atoms": [1.5, 1.5]}, "num_atoms"),
    ({"positions": _NPZ_POS[0], "charges": [8, 1, 1], "num_atoms": ["3"]}, "num_atoms"),
]


@pytest.mark.parametrize(("content", "fragment"), BAD_NPZ)
def test_bad_npz_is_one_user_error_never_a_silent_guess(tmp_path, content, fragment):
    """A .npy renamed .npz, garbage, NaN / huge / fractional / negative charges, complex
    positions, fractional num_atoms: one UserError each (they raised a TypeError, blamed
    pickles, or rounded charges and dropped atoms silently)."""
    path = tmp_path / "bad.npz"
    if content == "npy":
        np.save(tmp_path / "plain.npy", np.zeros(3))
        (tmp_path / "plain.npy").rename(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with open(path, "wb") as fh:
            np.savez(fh, **content)
    with pytest.raises(UserError, match=re.escape(fragment)):
        read_molecules(path)
