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

    def fake_c2st(task, k, samples, n_jobs=None):  # noqa: ARG001
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


def test_observations_are_scored_in_pairs_and_can_be_capped(tmp_path, monkeypatch):
    for method in ("fff", "npe"):
        for k in (1, 2, 3):
            bench.save_samples(
                bench.samples_path(tmp_path, "two_moons", 1000, method, k), torch.zeros(5, 2)
            )
    calls = []
    monkeypatch.setattr(
        rescore, "posterior_c2st", lambda t, k, s, n_jobs=None: calls.append(k) or 0.7
    )
    assert rescore.main([str(tmp_path), "--observations", "2"]) == 0
    assert calls == [1, 1, 2, 2]  # FFF and NPE of one observation in turn; observation 3 left
    with (tmp_path / "results_sbibm.csv").open(newline="") as f:
        assert [(r["observation"], r["method"]) for r in csv.DictReader(f)] == [
            ("1", "fff"),
            ("1", "npe"),
            ("2", "fff"),
            ("2", "npe"),
        ]
    assert rescore.main([str(tmp_path)]) == 0  # the rest, once
    assert calls == [1, 1, 2, 2, 3, 3]
    with pytest.raises(SystemExit):
        rescore.parse_args([str(tmp_path), "--observations", "11"])


def test_a_torn_last_row_is_scored_again(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    monkeypatch.setattr(rescore, "posterior_c2st", lambda *a, **k: 0.7)
    assert rescore.main([str(run)]) == 0
    path = run / "results_sbibm.csv"
    text = path.read_text()
    path.write_text(text[: text.rindex("sbibm")])  # a write interrupted within the last row
    assert rescore.main([str(run)]) == 0
    assert set(_rows(run)) == {"fff", "npe"} and len(path.read_text().splitlines()) == 3


def test_bad_inputs_are_one_message_before_any_score(tmp_path, monkeypatch):
    monkeypatch.setattr(rescore, "posterior_c2st", lambda *a, **k: pytest.fail("scored"))
    with pytest.raises(rescore.UserError, match="does not exist"):
        rescore.main([str(tmp_path)])
    (tmp_path / "samples").mkdir()
    torch.save(torch.zeros(5, 2), tmp_path / "samples" / "two_moons_01000_fff_obs01.pt")
    with pytest.raises(rescore.UserError, match="no sample files .* other files there"):
        rescore.main([str(tmp_path)])  # leading zeros would name a set twice
    good = bench.samples_path(tmp_path, "two_moons", 1000, "fff", 1)
    bench.save_samples(good, torch.zeros(5, 2))
    for k, bad, match in (
        (2, torch.zeros(5, 3), r"expected a \(n >= 5, 2\) tensor, got \(5, 3\)"),
        (2, torch.full((5, 2), float("nan")), "NaN"),
    ):
        bench.save_samples(bench.samples_path(tmp_path, "two_moons", 1000, "fff", k), bad)
        with pytest.raises(rescore.UserError, match=match):
            rescore.main([str(tmp_path)])  # obs 1 is fine, and was not scored first
    bench.samples_path(tmp_path, "two_moons", 1000, "fff", 2).write_bytes(b"not a tensor")
    with pytest.raises(rescore.UserError, match="not a sample file"):
        rescore.main([str(tmp_path)])
