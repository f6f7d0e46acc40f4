"""scripts/rescore_sbi.py: a bench_sbi.py run's kept samples scored again, resumably."""

import csv

import pytest
import torch

from tests.helpers import load_script

pytest.importorskip("matplotlib")
bench = load_script("bench_sbi")
rescore = load_script("rescore_sbi")


def _run_dir(tmp_path):
    """A bench_sbi.py out-dir: FFF scored early-stopped, NPE already with sbibm's classifier."""
    for method in ("fff", "npe"):
        bench.save_samples(
            bench.samples_path(tmp_path, "two_moons", 1000, method, 1), torch.zeros(5, 2)
        )
    with (tmp_path / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=bench.FIELDS)
        w.writeheader()
        w.writerow(
            {"task": "two_moons", "budget": 1000, "method": "fff", "observation": 1}
            | {"c2st": 0.9, "c2st_classifier": "early-stopping", "train_seconds": 12.0, "epochs": 7}
        )
        w.writerow(
            {"task": "two_moons", "budget": 1000, "method": "npe", "observation": 1}
            | {"c2st": 0.6, "c2st_classifier": "sbibm", "train_seconds": 3.0, "epochs": 40}
        )
    return tmp_path


def _rows(path):
    with (path / "results_sbibm.csv").open(newline="") as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def test_scores_what_is_missing_once_and_copies_sbibm_scores(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    calls = []

    def fake_c2st(task, k, samples, n_jobs=None):
        calls.append((task, k, tuple(samples.shape)))
        return 0.7

    monkeypatch.setattr(rescore, "posterior_c2st", fake_c2st)
    assert rescore.main([str(run)]) == 0
    assert calls == [("two_moons", 1, (5, 2))]  # NPE's sbibm score is copied, not recomputed
    rows = _rows(run)
    assert rows["fff"]["c2st"] == "0.7000" and rows["fff"]["c2st_classifier"] == "sbibm"
    assert float(rows["fff"]["train_seconds"]) == 12.0 and rows["fff"]["epochs"] == "7"
    assert rows["npe"]["c2st"] == "0.6000"
    assert (run / "c2st_sbibm.png").stat().st_size > 1000
    assert rescore.main([str(run)]) == 0  # a second call finds nothing to do
    assert len(calls) == 1 and len(_rows(run)) == 2


def test_bad_sample_file_and_empty_dir_are_one_message(tmp_path, capsys):
    with pytest.raises(rescore.UserError, match="no posterior samples"):
        rescore.main([str(tmp_path)])
    path = bench.samples_path(tmp_path, "two_moons", 1000, "fff", 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a tensor")
    with pytest.raises(rescore.UserError, match="not a sample file"):
        rescore.main([str(tmp_path)])
