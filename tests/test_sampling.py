"""molfff.molecules.sampling: stable-only sampling counts what it drew."""

import torch

import molfff.molecules.metrics as metrics
from molfff.molecules.flow import MoleculeFlow
from molfff.molecules.sampling import sample_molecules, sample_stable


def small_flow() -> MoleculeFlow:
    torch.manual_seed(0)
    return MoleculeFlow(5, torch.tensor([0.0, 0.0, 0.5, 0.5]), hidden=8, blocks=1)


def test_stable_share_counts_every_stable_draw_not_only_the_kept(monkeypatch):
    flow = small_flow()
    # a deterministic stand-in for stability: molecules whose first atom's x is positive
    monkeypatch.setattr(metrics, "is_stable", lambda pos, z: bool(pos[0, 0] > 0))
    draws, stable = sample_stable(flow, 3, True, seed=1, batch_size=40, progress=False)[1:]
    every, _ = sample_molecules(flow, draws, seed=1 * 7919, batch_size=40)
    assert draws == 40  # one batch held the 3 asked for
    assert stable == sum(pos[0, 0] > 0 for pos, _ in every) > 3


def test_without_stable_only_nothing_is_counted_stable():
    kept, drawn, stable = sample_stable(small_flow(), 5, False, batch_size=4, progress=False)
    assert (len(kept), drawn, stable) == (5, 8, 0)
