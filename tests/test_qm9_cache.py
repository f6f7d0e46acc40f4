"""A processed QM9 cache serves without qm9pack (a cluster node without the package index)."""

import pytest

from molfff.errors import UserError
from molfff.molecules import qm9


def test_cache_is_used_when_qm9pack_is_missing(monkeypatch, tmp_path):
    full = qm9.load_qm9()  # builds or reads the cache next to the installed qm9pack

    def missing():
        raise UserError("QM9 needs the 'qm9pack' package: pip install qm9pack")

    monkeypatch.setattr(qm9, "qm9pack_data_dir", missing)
    again = qm9.load_qm9("valid")
    assert len(again) == qm9.SPLIT_SIZES["valid"]
    assert (again.charges == full.subset(qm9.split_indices()["valid"]).charges).all()
    with pytest.raises(UserError, match="qm9pack"):  # no cache there: the clear message
        qm9.load_qm9(cache=tmp_path)


def test_molecule_figure_is_skipped_where_rdkit_drawing_cannot_load(monkeypatch, tmp_path, capsys):
    """A GPU node without libXrender: the run keeps its results, the figure is skipped."""
    import sys

    import rdkit.Chem

    from molfff.train.molecules import QM9Task

    monkeypatch.setitem(sys.modules, "rdkit.Chem.Draw", None)  # import raises ImportError
    monkeypatch.delattr(rdkit.Chem, "Draw", raising=False)  # also once imported elsewhere
    task = QM9Task.__new__(QM9Task)
    assert task.plot(None, tmp_path) == []
    assert "samples.png skipped" in capsys.readouterr().err
