"""scripts/sbi_posterior_offsets.py: a density's mean on a grid, in reference sds."""

import re

import pytest
import torch

from tests.helpers import load_script

offsets = load_script("sbi_posterior_offsets")


@pytest.mark.usefixtures("float64")
def test_grid_mean_of_a_gaussian_density_is_its_mean():
    """A correlated Gaussian 3 and -2 reference sds off the grid's centre: the normalised
    grid density has that mean, and rows with -inf (no preimage) are left out."""
    ref = torch.randn(20_000, 2) * torch.tensor([0.01, 0.3]) + torch.tensor([0.5, 2.0])
    centre, sd = ref.mean(0), ref.std(0)
    true_mean = centre + torch.tensor([3.0, -2.0]) * sd
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]]) * torch.outer(sd, sd)
    theta = offsets.grid(centre, sd, half_width=12.0, points=161)
    assert theta.shape == (161**2, 2)
    log_prob = torch.distributions.MultivariateNormal(true_mean, cov).log_prob(theta)
    log_prob[::7] = -torch.inf
    log_prob[3::7] = torch.nan  # a failed preimage may give nan: left out too
    mean, share = offsets.density_mean(theta, log_prob)
    assert share == pytest.approx(1 - 2 / 7, abs=1e-3)
    torch.testing.assert_close(
        offsets.in_reference_sds(mean, ref), torch.tensor([3.0, -2.0]), atol=1e-3, rtol=0
    )
    # a density integrates to one; the rows left out take their share of the mass with them
    full = torch.distributions.MultivariateNormal(true_mean, cov).log_prob(theta)
    assert offsets.grid_mass(full, sd, 12.0, 161) == pytest.approx(1.0, abs=1e-4)
    assert offsets.grid_mass(full + 2.0, sd, 12.0, 161) == pytest.approx(torch.e**2, rel=1e-4)
    assert offsets.grid_mass(log_prob, sd, 12.0, 161) == pytest.approx(5 / 7, abs=2e-3)


def test_grid_refuses_three_parameters():
    with pytest.raises(ValueError, match="at most 2 parameters"):
        offsets.grid(torch.zeros(3), torch.ones(3), 12.0, 11)


@pytest.mark.usefixtures("float64")
def test_location_summary_reads_shrinkage_offset_and_width():
    """Means pulled 20 % toward the origin give slope 0.8 whatever the offsets' signs, the
    median |offset| in reference sds, and the median sd ratio."""
    ref_means = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, 0.25]])
    ref_sds = torch.tensor([[0.1, 0.5, 0.25], [0.2, 1.0, 0.05]])
    means = 0.8 * ref_means
    sds = ref_sds * torch.tensor([[1.0, 1.5, 0.5], [2.0, 1.2, 0.9]])
    got = offsets.location_summary(means, ref_means, sds, ref_sds)
    assert got["slope"] == pytest.approx(0.8)
    # |0.2 m| / sd: 2, 0.8, 0.4 / 1, 0.6, 1 -> median of 0.4 0.6 0.8 1 1 2 is 0.9
    assert got["offset"] == pytest.approx(0.9)
    assert got["sd_ratio"] == pytest.approx(1.1)  # 0.5, 0.9, 1.0, 1.2, 1.5, 2.0 -> 1.1
    unbiased = offsets.location_summary(ref_means, ref_means, ref_sds, ref_sds)
    assert unbiased == {"slope": pytest.approx(1.0), "offset": 0.0, "sd_ratio": 1.0}


def test_kept_samples_need_task_and_budget(tmp_path, capsys):
    assert offsets.main([str(tmp_path), "--kept", "npe", "--task", "two_moons"]) == 2
    assert "--kept needs --task and --budget" in capsys.readouterr().err
    for bad in (["--observations", "11"], ["--points", "1"], ["--half-width", "0"]):
        with pytest.raises(SystemExit):
            offsets.parse_args([str(tmp_path), *bad])
    with pytest.raises(SystemExit):
        offsets.parse_args([str(tmp_path), "--task", "three_moons"])


def test_kept_samples_are_summarised_against_the_reference(tmp_path, monkeypatch, capsys):
    """bench_sbi.py's kept samples of two observations, means pulled 10 % toward the origin:
    the summary line reads slope 0.90 and sd ratio 1 (up to sampling noise)."""
    from sbi_results import samples_path, save_samples

    import molfff.dense.sbi as sbi

    gen = torch.Generator().manual_seed(3)
    centres = {1: torch.tensor([2.0, -1.0]), 2: torch.tensor([-3.0, 0.5])}
    sd = torch.tensor([0.1, 0.2])
    refs = {k: c + sd * torch.randn(10_000, 2, generator=gen) for k, c in centres.items()}
    monkeypatch.setattr(sbi, "reference_posterior_samples", lambda task, k: refs[k])
    for k, c in centres.items():
        path = samples_path(tmp_path, "two_moons", 1000, "npe", k)
        save_samples(path, 0.9 * c + sd * torch.randn(10_000, 2, generator=gen))
    argv = [str(tmp_path), "--kept", "npe", "--task", "two_moons", "--budget", "1000"]
    assert offsets.main([*argv, "--observations", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    slope = float(re.search(r"reference mean ([0-9.]+)", last).group(1))
    ratio = float(re.search(r"median sd ratio ([0-9.]+)", last).group(1))
    assert slope == pytest.approx(0.9, abs=0.005)
    assert ratio == pytest.approx(1.0, abs=0.03)
    assert offsets.main([*argv, "--observations", "3"]) == 2  # observation 3 was not kept
    out = capsys.readouterr()
    assert "no kept samples" in out.err and out.out == ""  # refused before any output


def test_unreadable_or_misshapen_kept_samples_are_refused(tmp_path):
    """The kept files are read by rescore_sbi.load_samples, which refuses each bad one with
    one message."""
    from rescore_sbi import load_samples

    from molfff.errors import UserError

    bad = tmp_path / "bad.pt"
    for junk in (b"not a tensor", b"hello", b".hello", b"X", b""):
        bad.write_bytes(junk)
        with pytest.raises(UserError, match="not a sample file"):
            load_samples(bad)
    for value, message in (
        ({"samples": torch.zeros(5, 2)}, "dict"),
        (torch.zeros(5, 3), r"\(n >= 5, 2\) tensor, got \(5, 3\)"),
        (torch.zeros(1, 2), r"got \(1, 2\)"),
        (torch.zeros(5, 2, dtype=torch.int64), "floating-point"),
        (torch.zeros(5, 2).to_sparse(), "dense floating-point"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 0.0]] * 3), "NaN or infinite"),
    ):
        torch.save(value, bad)
        with pytest.raises(UserError, match=message):
            load_samples(bad, "two_moons")
