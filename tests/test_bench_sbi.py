"""scripts/bench_sbi.py: the table and plot put sbibm's published NPE next to the run's numbers."""

import pytest

from tests.helpers import load_script

pytest.importorskip("matplotlib")
bench = load_script("bench_sbi")


def _summary():
    rows = []
    for budget, fff, npe in ((1000, 0.80, 0.71), (10000, 0.70, 0.60)):
        for method, c in (("fff", fff), ("npe", npe)):
            rows.append(
                {"task": "two_moons", "budget": budget, "method": method, "train_seconds": 3.0}
                | {"epochs": 5, "c2st": c, "observation": 1}
            )
    return bench.summarise(rows)


def test_table_has_the_published_npe_column(capsys):
    bench.print_table(_summary())
    out = capsys.readouterr().out
    line_1000 = next(
        line for line in out.splitlines() if line.startswith("two_moons") and " 1000 " in line
    )
    assert line_1000.split()[-1] == "0.725"  # sbibm's NPE, two_moons at 10^3
    assert "Lueckmann" in out


def test_published_lookup_and_plot(tmp_path):
    assert bench.published_npe("two_moons", 10000) == 0.606
    assert bench.published_npe("two_moons", 3000) is None
    assert bench.published_npe("no_such_task", 1000) is None
    path = tmp_path / "c2st.png"
    bench.plot(_summary(), path, "sbibm")
    assert path.stat().st_size > 1000


def test_npe_only_without_sbi_is_one_error_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "import_npe", lambda: None)
    monkeypatch.setattr(bench, "simulate_splits", lambda *a, **k: pytest.fail("simulated"))
    rc = bench.main(["--tasks", "two_moons", "--methods", "npe", "--out-dir", str(tmp_path)])
    assert rc == 2
    assert "nothing to run" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()
