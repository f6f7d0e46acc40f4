"""Importance weights, Kish ESS and reweighted expectations against closed forms."""

import math

import pytest
import torch

from molfff.boltzmann.reweight import (
    MIN_ESS_SAMPLES,
    kish_ess,
    log_importance_weights,
    low_ess_reason,
    mean_interatomic_distance,
    resolve_observable,
    reweighted_mean,
    snis_mean_and_stderr,
)
from molfff.errors import UserError


def _gaussian_case(n, s, seed=0):
    """Proposal q = N(0, 1), target p ∝ exp(-x^2 / (2 s^2)) in 1-D."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    log_q = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)
    u = 0.5 * x**2 / s**2  # unnormalised: the normaliser cancels in self-normalised weights
    return x, log_importance_weights(log_q, u)


def test_ess_matches_closed_form():
    """ESS fraction -> 1 / E_q[w^2] with w = p/q: for p = N(0, s^2), q = N(0, 1),
    E_q[w^2] = 1 / (s sqrt(2 - s^2))."""
    s = 0.8
    _, log_w = _gaussian_case(400_000, s)
    want = s * math.sqrt(2 - s**2)
    assert kish_ess(log_w) == pytest.approx(want, abs=0.01)


def test_reweighted_mean_and_error_bar():
    """E_p[x^2] = s^2 under the target; the delta-method error covers the deviation."""
    s = 0.7
    x, log_w = _gaussian_case(20_000, s, seed=1)
    est = reweighted_mean(x**2, log_w)
    assert abs(est.mean - s**2) < 4 * est.stderr
    assert 0 < est.stderr < 0.02
    assert est.ess == pytest.approx(20_000 * kish_ess(log_w))
    raw = reweighted_mean(x**2)
    assert abs(raw.mean - 1.0) < 4 * raw.stderr  # unweighted: the proposal's own moment
    assert raw.stderr == pytest.approx(float((x**2).std()) / 20_000**0.5, rel=1e-3)


def _snis_coverage(n_seeds, n, m_q, s_q, m_p, seed=0):
    """Self-normalised estimates of E_p[x] = m_p, p = N(m_p, 1), from n draws of
    q = N(m_q, s_q^2), for n_seeds independent seeds at once: (mean, stderr, ess), each
    (n_seeds,)."""
    g = torch.Generator().manual_seed(seed)
    x = m_q + s_q * torch.randn(n_seeds, n, generator=g, dtype=torch.float64)
    log_q = -0.5 * ((x - m_q) / s_q) ** 2 - math.log(s_q)
    log_w = -0.5 * (x - m_p) ** 2 - log_q  # p's normaliser cancels
    return snis_mean_and_stderr(x, log_w)


def test_error_bars_cover_the_true_mean():
    """+-2 delta-method error bars contain the true mean ~95 % of the time (1000 seeds of
    2000 draws of q = N(0, 1) for p = N(1, 1), ESS ~38 %). Measured alternatives that this
    band rejects: std / sqrt(n) covers 61 %, std / sqrt(ESS) 85 %."""
    mean, stderr, ess = _snis_coverage(1000, 2000, m_q=0.0, s_q=1.0, m_p=1.0)
    assert 0.3 < float(ess.median()) / 2000 < 0.45  # a moderate mismatch, as intended
    coverage = float(((mean - 1.0).abs() < 2 * stderr).double().mean())
    assert 0.93 <= coverage <= 0.97, coverage


def test_tiny_ess_is_flagged_and_its_error_bar_withheld():
    """q = N(0, 0.5^2) against p = N(3, 1): the weights have infinite variance, a few samples
    carry them, and the error bar would cover the truth almost never."""
    mean, stderr, ess = _snis_coverage(200, 2000, m_q=0.0, s_q=0.5, m_p=3.0)
    assert float(((mean - 3.0).abs() < 2 * stderr).double().mean()) < 0.2  # why: bars lie
    assert float((ess < MIN_ESS_SAMPLES).double().mean()) > 0.9  # nearly every run flagged
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(2000, generator=g, dtype=torch.float64)
    log_w = log_importance_weights(-0.5 * (x / 0.5) ** 2, 0.5 * (x - 3.0) ** 2)
    reason = low_ess_reason(log_w)
    assert reason is not None and "effective sample size" in reason
    est = reweighted_mean(x, log_w)
    assert est.stderr is None and est.ess < MIN_ESS_SAMPLES
    assert "no error bar" in str(est)
    good = _gaussian_case(2000, 0.9)[1]  # a well-matched proposal is not flagged
    assert low_ess_reason(good) is None
    assert reweighted_mean(torch.ones(2000, dtype=torch.float64), good).stderr < 1e-12


def test_ess_fraction_threshold():
    """10,000 samples with 60 effective ones: enough samples, but under 1 %."""
    log_w = torch.full((10_000,), -math.inf, dtype=torch.float64)
    log_w[:60] = 0.0
    assert "0.60%" in low_ess_reason(log_w)
    log_w[:101] = 0.0
    assert low_ess_reason(log_w) is None


def test_report_carries_the_flag():
    from molfff.boltzmann.report import reweight

    x = 0.5 * torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    u = 0.5 * (x[:, 0].double() - 3.0) ** 2
    log_w = log_importance_weights(-0.5 * (x[:, 0].double() / 0.5) ** 2, u)
    report = reweight(x, u, log_w, energy=None, observables={"x": lambda x, e: x[:, 0]})
    out = report.as_dict()
    assert out["ess_too_low"] is True and "effective sample size" in out["ess_warning"]
    assert out["x/reweighted_stderr"] is None and out["x/raw_stderr"] > 0
    assert out["ess_samples"] == pytest.approx(2000 * out["ess"])


def test_infinite_energies_get_zero_weight():
    log_w = log_importance_weights(torch.zeros(3), torch.tensor([0.0, math.inf, 1.0]))
    assert log_w[1] == -math.inf
    est = reweighted_mean(torch.tensor([1.0, float("nan"), 1.0]), log_w)
    assert est.mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all importance weights are zero"):
        kish_ess(torch.full((3,), -math.inf))


def test_mean_distance_of_a_square():
    square = torch.tensor([[0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    assert mean_interatomic_distance(square, 4, 2).item() == pytest.approx((4 + 2 * 2**0.5) / 6)


def test_observables_resolve():
    assert resolve_observable("energy")(torch.zeros(2, 1), lambda x: x.sum(1) + 3).tolist() == [
        3,
        3,
    ]
    assert resolve_observable("math:fabs") is math.fabs
    with pytest.raises(UserError, match="unknown observable"):
        resolve_observable("entropy")
    with pytest.raises(UserError, match="cannot be imported"):
        resolve_observable("nonexistent_pkg:f")


def test_samples_off_the_energy_axis_are_counted_with_their_weight():
    from molfff.boltzmann.report import outside_window

    u = torch.tensor([-1.0, 0.0, 2.0, 5.0, float("inf"), float("nan")], dtype=torch.float64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15, 0.0], dtype=torch.float64)
    count, mass = outside_window(u, w, lo=-1.0, hi=2.0)  # the window's ends are inside
    assert count == 3 and mass == pytest.approx(0.4)
    assert outside_window(u[:3], w[:3], -1.0, 2.0) == (0, 0.0)


def test_observable_module_in_the_working_folder(tmp_path, monkeypatch):
    """`--observable myobs:fn` finds myobs.py in the working folder without PYTHONPATH, and
    leaves sys.path as it was."""
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    (tmp_path / "molfff_test_myobs.py").write_text(
        "def first(x, energy):\n    return x[:, 0]\n\nnot_a_function = 3\n"
    )
    before = list(sys.path)
    fn = resolve_observable("molfff_test_myobs:first")
    assert fn(torch.tensor([[2.0, 1.0]]), None).tolist() == [2.0]
    assert sys.path == before
    with pytest.raises(UserError, match="not callable"):
        resolve_observable("molfff_test_myobs:not_a_function")
    with pytest.raises(UserError, match="cannot be imported.*AttributeError"):
        resolve_observable("molfff_test_myobs:missing")
    (tmp_path / "molfff_test_broken.py").write_text("def oops(:\n")
    with pytest.raises(UserError, match="cannot be imported.*SyntaxError"):
        resolve_observable("molfff_test_broken:f")


def test_broken_observable_is_caught_on_a_probe():
    from molfff.boltzmann.reweight import check_observable

    x = torch.zeros(2, 4)
    check_observable("ok", lambda x, e: x.sum(1), x, None)
    with pytest.raises(UserError, match=r"must return a \(2,\) tensor.*\(2, 4\)"):
        check_observable("rows", lambda x, e: x, x, None)
    with pytest.raises(UserError, match="fails on reference samples.*ZeroDivisionError"):
        check_observable("div", lambda x, e: 1 / 0, x, None)
    nan = torch.tensor([0.0, float("nan")])
    with pytest.raises(UserError, match="'nan' is NaN or infinite on 1 of 2 reference samples"):
        check_observable("nan", lambda x, e: nan, x, None)


def test_observable_broken_on_generated_samples_is_one_user_error():
    """An observable that passes the probe but is NaN, or raises, on the generated samples ends
    in a UserError naming it (it was a bare ValueError / the observable's own traceback)."""
    from molfff.boltzmann.report import reweight

    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    u, log_w = torch.zeros(50), torch.zeros(50)

    def positive_only(x, e):
        return torch.where(x[:, 0] > 0, x[:, 0], torch.nan)

    def raises_on_many(x, e):
        if len(x) > 2:
            raise RuntimeError("too many rows")
        return x[:, 0]

    with pytest.raises(UserError, match=r"'pos' is NaN or infinite on \d+ of 50 generated"):
        reweight(x, u, log_w, None, {"pos": positive_only})
    with pytest.raises(UserError, match="'many' fails on generated samples.*too many rows"):
        reweight(x, u, log_w, None, {"many": raises_on_many})
    with pytest.raises(UserError, match="'pos' is NaN or infinite on 50 of 50 reference"):
        reweight(x.abs() + 0.1, u, log_w, None, {"pos": positive_only}, reference=-x.abs())


def test_infinite_energy_sample_does_not_break_the_raw_mean():
    """A sample of infinite energy (overlapping LJ particles) has weight zero; the energy
    observable is then +inf there, and the raw mean (which used to raise) skips it too."""
    from molfff.boltzmann.report import reweight

    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0)).double()
    u = x[:, 0] ** 2
    u[3] = math.inf
    log_w = log_importance_weights(torch.zeros(100, dtype=torch.float64), u)
    report = reweight(x, u, log_w, None, {"u": lambda x, e: u})
    raw = report.estimates["u"]["raw"]
    assert raw.mean == pytest.approx(float(u[torch.isfinite(u)].mean()))
    assert raw.stderr is not None


def test_reweight_command_checks_arguments_before_loading(tmp_path, monkeypatch, capsys):
    """An unknown observable, a bad --n / --batch-size or an unwritable --plot ends in one
    message before any checkpoint is loaded or any sample drawn."""
    import molfff.boltzmann.report
    import molfff.train.runs
    from molfff.cli import main

    def never(*args, **kwargs):
        raise AssertionError("long work started before the arguments were checked")

    monkeypatch.setattr(molfff.train.runs, "load_model", never)
    monkeypatch.setattr(molfff.boltzmann.report, "sample_and_weigh", never)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["--observable", "nosuchname"], "unknown observable 'nosuchname'"),
        (["--observable", "energy", "--observable", "nosuch_module_xyz:f"], "cannot be imported"),
        (["--n", "1"], "--n must be at least 2"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--plot", str(blocker / "sub" / "r.png")], "is not a folder"),
        (["--plot", str(tmp_path / "r.nosuchformat")], "suffix must be one of"),
    ]
    for extra, message in cases:
        assert main(["reweight", str(run), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_unwritable_figure_is_one_user_error(tmp_path):
    """A figure path that passed the early check but cannot be written (a file in the way, a
    read-only mount) ends in a UserError, not an OSError traceback after sampling."""
    from molfff.boltzmann.energies import get_energy
    from molfff.boltzmann.report import plot_reweighting, reweight

    energy = get_energy("dw4")
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)).double()
    u = energy(x)
    report = reweight(x, u, -u, energy, ["energy"])
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot be written"):
        plot_reweighting(report, energy, None, tmp_path / "file" / "sub" / "r.png")
