"""scripts/sbi_off_support.py: the share of samples off the reference posterior's support."""

import pytest
import torch

from tests.helpers import load_script

off = load_script("sbi_off_support")


def test_nearest_distance_is_the_brute_force_minimum():
    x, y = torch.randn(300, 3, dtype=torch.float64), torch.randn(200, 3, dtype=torch.float64)
    brute = ((x[:, None] - y[None]) ** 2).sum(-1).sqrt().min(1).values
    torch.testing.assert_close(off.nearest_distance(x, y, chunk=64), brute)


def test_reference_half_is_one_percent_off_and_a_shifted_copy_all_off(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    reference = torch.randn(10_000, 2, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(off, "reference_posterior_samples", lambda task, k: reference)
    a, radius = off.support_radius(reference)
    held_out = reference[~torch.isin(reference[:, 0], a[:, 0])]  # half B
    assert len(held_out) == 5000
    assert off.off_support_share(held_out, "two_moons", 1) == pytest.approx(0.01, abs=2e-4)
    fresh = torch.randn(10_000, 2, generator=gen, dtype=torch.float64)  # same law, new draws
    assert off.off_support_share(fresh, "two_moons", 1) == pytest.approx(0.01, abs=0.005)
    assert off.off_support_share(reference + 10 * radius + 5, "two_moons", 1) == 1.0


def test_far_off_leaves_out_samples_that_only_blur_the_edge(monkeypatch):
    """A segment as the reference: a copy moved across it by three radii is off the
    support but not far off; one moved by twenty radii is both."""
    gen = torch.Generator().manual_seed(2)
    u = torch.rand(10_000, generator=gen, dtype=torch.float64)
    reference = torch.stack([u, torch.zeros_like(u)], 1)
    monkeypatch.setattr(off, "reference_posterior_samples", lambda task, k: reference)
    _, radius = off.support_radius(reference)
    for shift, near, far in ((3, 1.0, 0.0), (20, 1.0, 1.0)):
        moved = reference + torch.tensor([0.0, shift * radius])
        assert off.off_support_share(moved, "two_moons", 1) == near
        assert off.off_support_share(moved, "two_moons", 1, off.FAR) == far
