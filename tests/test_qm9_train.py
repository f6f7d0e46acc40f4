"""The molecule flow: likelihood bound, invariances, training and sampling commands."""

import importlib.util
import math

import pytest
import torch

from molfff.molecules.flow import MoleculeBatch, MoleculeFlow
from molfff.testing import random_orthogonal

needs_qm9 = pytest.mark.skipif(
    importlib.util.find_spec("qm9pack") is None or importlib.util.find_spec("rdkit") is None,
    reason="needs the molecules extra (qm9pack, rdkit)",
)


def _toy_batch(dtype=torch.float64):
    """Two small molecules: CH4-like (5 atoms) and H2O-like (3 atoms), zero CoM each."""
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(8, 3, generator=gen, dtype=dtype)
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    for b in (0, 1):
        pos[batch == b] -= pos[batch == b].mean(0)
    types = torch.tensor([1, 0, 0, 0, 0, 3, 0, 0])
    one_hot = torch.nn.functional.one_hot(types, 5).to(dtype)
    charge = torch.tensor([6, 1, 1, 1, 1, 8, 1, 1], dtype=dtype).unsqueeze(1)
    return MoleculeBatch(pos, one_hot, charge, batch, 2)


def _flow(dtype=torch.float64):
    torch.manual_seed(0)
    sizes = torch.zeros(30)
    sizes[[3, 5, 9]] = torch.tensor([0.2, 0.5, 0.3])
    flow = MoleculeFlow(5, sizes, hidden=16, blocks=2, dequantizer_blocks=1).to(dtype)
    for p in flow.parameters():  # leave the identity so the test sees a real network
        p.data += 0.05 * torch.randn_like(p)
    return flow


def test_nll_is_invariant_to_rotation_reflection_translation():
    flow, mol = _flow(), _toy_batch()
    q = random_orthogonal(3, reflection=True, generator=torch.Generator().manual_seed(1))
    moved = MoleculeBatch(mol.pos @ q.T, mol.one_hot, mol.charge, mol.batch, 2)
    a = flow.nll(mol, torch.Generator().manual_seed(3))
    b = flow.nll(moved, torch.Generator().manual_seed(3))
    for key in ("nll_exact", "nll_estimate", "residual", "reconstruction"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-8, msg=key)
    assert a["converged"].all() and b["converged"].all()
    # dims: (n-1)·3 positions + n·(K+1) features
    want = torch.tensor([4 * 3 + 5 * 6, 2 * 3 + 3 * 6], dtype=torch.float64)
    torch.testing.assert_close(a["dims"], want)


def test_nll_adds_size_and_dequantization_terms():
    flow, mol = _flow(), _toy_batch()
    out = flow.nll(mol, torch.Generator().manual_seed(3))
    size = -torch.log(torch.tensor([0.5, 0.2], dtype=torch.float64))
    for kind in ("exact", "estimate"):
        torch.testing.assert_close(out[f"nll_{kind}"] - out[f"nll_given_n_{kind}"], size)
        assert torch.isfinite(out[f"nll_{kind}"]).all()
    assert not out["nll_exact"].requires_grad  # the Newton solve is not differentiated


def test_loss_trains_every_part():
    flow, mol = _flow(), _toy_batch()
    terms = flow.loss(mol, beta=100.0, generator=torch.Generator().manual_seed(0))
    terms["loss"].mean().backward()
    parts = {"encoder": flow.flow.encoder, "decoder": flow.flow.decoder}
    for name, part in {**parts, "dequantizer": flow.dequantizer}.items():
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, name


def test_samples_have_sizes_from_the_distribution_and_zero_com():
    flow = _flow()
    mol = flow.sample(50, torch.Generator().manual_seed(0))
    sizes = torch.bincount(mol.batch, minlength=50)
    assert set(sizes.tolist()) <= {3, 5, 9}
    com = torch.zeros(50, 3, dtype=mol.pos.dtype).index_add(0, mol.batch, mol.pos)
    assert com.abs().max() < 1e-8
    assert mol.one_hot.sum(1).eq(1).all()


@needs_qm9
def test_train_sample_and_evaluate_commands(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from molfff.cli import main
    from molfff.molecules.io import read_xyz
    from molfff.train.config import load_config
    from molfff.train.sample_curve import read_sample_curve

    monkeypatch.chdir(tmp_path)
    overrides = [
        "logger.wandb=disabled",
        "trainer.progress_bar=false",
        "data.n_train=128",
        "evaluation.samples=20",
        "model.ema_decay=0.9",
        "evaluation.curve_every_n_steps=2",
        "evaluation.curve_samples=6",
    ]
    assert main(["train", "qm9", "--fast", *overrides]) == 0
    out = capsys.readouterr().out
    (grid,) = (tmp_path / "runs").glob("qm9/*/samples.png")
    curve = read_sample_curve(grid.parent / "sample_curve.jsonl")  # 128 / 32 = 4 steps
    assert [r["step"] for r in curve] == [2, 4]
    for row in curve:
        for which in ("raw", "ema"):
            assert row[which]["n_molecules"] == 6
            assert 0 <= row[which]["atom_stability"] <= 1
    assert (grid.parent / "sample_curve.png").is_file()
    assert f"figure: {grid.relative_to(tmp_path)}" in out
    assert Image.open(grid).size == (8 * 220, 4 * 220 + 36)  # 32 molecules, a title band
    assert "test NLL, exact (the density of the model that samples" in out
    assert "test NLL, paper estimate (eq. 135, at z = f(x)), dequantization bound" in out
    assert "molecule stability" in out
    for kind in ("exact", "estimate"):
        assert f"test NLL given n, {kind} (dequantization bound, nats per molecule, without" in out
    assert "% converged (the exact NLL and KL average over these), median residual" in out
    best = torch.load(grid.parent / "checkpoints" / "best.ckpt", weights_only=False)
    monitor = f"'monitor': 'val/nll_given_n_{load_config('qm9').trainer.select_on}'"
    assert any(monitor in key for key in best["callbacks"])
    assert "ms per molecule" in out
    assert main(["sample", "--n", "7"]) == 0
    captured = capsys.readouterr()
    assert "EMA weights" in captured.err
    (tmp_path / "s.xyz").write_text(captured.out)
    assert len(read_xyz(tmp_path / "s.xyz")) == 7
    assert main(["sample", "--n", "3", "--format", "sdf", "--out", "s.sdf"]) == 0
    assert (tmp_path / "s.sdf").read_text().count("$$$$") == 3
    code = main(["sample", "--n", "2", "--stable-only", "--batch-size", "50"])
    err = capsys.readouterr().err
    if code == 2:  # an untrained model rarely yields stable molecules: a clear message
        assert "were stable after 200 draws" in err and "--max-draws" in err
    else:
        assert "2 stable molecules kept;" in err
    assert main(["sample", "--n", "2", "--stable-only", "--max-draws", "1"]) == 2
    assert "--max-draws must be at least --n (2), got 1" in capsys.readouterr().err
    code = main(["sample", "--n", "1", "--stable-only", "--max-draws", "30", "--batch-size", "7"])
    err = capsys.readouterr().err
    assert "were stable after 30 draws" in err if code == 2 else "1 stable molecule kept;" in err


@needs_qm9
def test_size_distribution_is_fitted_to_the_capped_training_set():
    import numpy as np

    from molfff.train.config import load_config
    from molfff.train.tasks import build_task

    config = load_config("qm9", ["data.n_train=20", "model.blocks=1", "model.width=8"])
    task = build_task(config.data, config.seed)
    sizes = task.molecules["train"].num_atoms
    assert len(sizes) == 20
    want = np.bincount(sizes, minlength=30) / 20
    np.testing.assert_allclose(task.node_distribution, want, rtol=0, atol=1e-15)
    full = np.bincount(task._load_qm9()("train").num_atoms, minlength=30)
    assert (full > 0).sum() > (want > 0).sum()  # 20 molecules cover fewer sizes than 100,000
    module = task.new_module(config)
    p_n = module.flow.log_p_n.exp().double().numpy()
    np.testing.assert_allclose(p_n, want, rtol=1e-6, atol=0)
    # a dense network is not silently replaced by the EGNN (the run's record would be wrong)
    from molfff.errors import UserError

    for network in ("resnet", "mlp_resnet"):
        config.model.network = network
        with pytest.raises(UserError, match="model.network=egnn"):
            task.new_module(config)
    # labelled atoms (model.egnn_node_index) must tell apart every molecule validation scores
    config.model.network = "egnn"
    largest = max(int(m.num_atoms.max()) for m in task.molecules.values())
    config.model.egnn_node_index = largest - 1
    with pytest.raises(UserError, match=f"up to {largest}; use 0 or at least {largest}"):
        task.new_module(config)
    config.model.egnn_node_index = largest
    assert task.new_module(config).flow.flow.decoder.node_index == largest


def test_nll_metrics_leave_out_sizes_outside_p_n_and_count_them():
    from molfff.train.molecules import nll_metrics

    given_n = torch.tensor([10.0, 12.0, 20.0, 30.0], dtype=torch.float64)
    log_p_n = torch.tensor([-1.0, -2.0, -math.inf, -1.0], dtype=torch.float64)
    out = {
        "nll_exact": given_n - log_p_n,
        "nll_given_n_exact": given_n,
        "nll_estimate": given_n - 2 - log_p_n,
        "nll_given_n_estimate": given_n - 2,
        "converged": torch.tensor([True, True, False, True]),
        "residual": torch.tensor([1e-9, 3e-9, 0.5, 2e-9], dtype=torch.float64),
        "reconstruction": torch.tensor([0.1, 0.2, 0.3, 0.6], dtype=torch.float64),
    }
    m = nll_metrics(out, log_p_n.isfinite())
    assert (m["n"], m["n_nll"], m["n_size_outside_support"]) == (4, 3, 1)
    assert m["nll_exact"] == pytest.approx((11 + 14 + 31) / 3, abs=1e-12)
    assert m["nll_estimate"] == pytest.approx((9 + 12 + 29) / 3, abs=1e-12)
    want_err = torch.tensor([11.0, 14, 31]).std().item() / 3**0.5
    assert m["nll_exact_stderr"] == pytest.approx(want_err)
    assert m["nll_estimate_stderr"] == pytest.approx(want_err)
    # the exact NLLs average over the molecules whose preimage was found (not the third)
    assert m["nll_given_n_exact"] == pytest.approx(52 / 3, abs=1e-12)
    assert m["nll_given_n_estimate"] == pytest.approx(16.0, abs=1e-12)
    want = torch.tensor([10.0, 12, 30]).std().item() / 3**0.5
    assert m["nll_given_n_exact_stderr"] == pytest.approx(want)
    assert m["exact_converged"] == pytest.approx(0.75)
    assert m["exact_residual_median"] == pytest.approx(2e-9)  # torch: the lower of the middle two
    assert m["reconstruction"] == pytest.approx(0.3)
    none = nll_metrics(
        {**out, "nll_exact": given_n + math.inf, "nll_estimate": given_n + math.inf},
        torch.zeros(4, dtype=torch.bool),
    )
    assert math.isnan(none["nll_exact"]) and math.isnan(none["nll_estimate"])
    assert none["n_size_outside_support"] == 4


@needs_qm9
def test_small_cap_gives_finite_nlls_and_counts_the_sizes_left_out():
    """n_train=20: some held-out molecules have a size no training molecule has (p(n) = 0, full
    NLL +inf). Validation logs the NLL given n (which picks the best checkpoint), the full NLL
    over the other molecules and the count; the evaluation after training does the same."""
    from molfff.train.config import load_config
    from molfff.train.molecules import MoleculeModule
    from molfff.train.tasks import build_task

    overrides = ["data.n_train=20", "data.n_val=8", "data.n_test=8", "data.batch_size=8",
                 "model.blocks=1", "model.width=8", "evaluation.samples=0"]  # fmt: skip
    config = load_config("qm9", overrides)
    task = build_task(config.data, config.seed)
    outside = int((task.node_distribution[task.molecules["val"].num_atoms] == 0).sum())
    assert 0 < outside < 8  # the seeded subsets have both kinds
    torch.manual_seed(0)
    module = task.new_module(config)
    assert isinstance(module, MoleculeModule)
    assert module.checkpoint_monitor == f"val/nll_given_n_{config.trainer.select_on}"

    logged = {}
    module.log = lambda name, value, **kw: logged.update({name: (float(value), kw)})
    module.log_dict = lambda d, **kw: logged.update({k: (float(v), kw) for k, v in d.items()})
    batch = next(iter(task.datamodule(config).val_dataloader()))
    with torch.no_grad():
        module.validation_step(batch, 0)
    assert logged["val/n_size_outside_support"][0] == outside
    assert logged["val/n_size_outside_support"][1]["reduce_fx"] == "sum"
    assert 0 <= logged["val/exact_converged"][0] <= 1
    m = task.evaluate(module, "val", config)  # the same molecules, one batch
    assert (m["n"], m["n_nll"], m["n_size_outside_support"]) == (8, 8 - outside, outside)
    for kind in ("exact", "estimate"):
        assert logged[f"val/nll_{kind}"][1]["batch_size"] == 8 - outside
        for key in (f"nll_{kind}", f"nll_given_n_{kind}"):
            assert math.isfinite(logged[f"val/{key}"][0])
            assert m[key] == pytest.approx(logged[f"val/{key}"][0], rel=1e-5), key
        for key in (f"nll_{kind}_stderr", f"nll_given_n_{kind}_stderr"):
            assert math.isfinite(m[key]), key
    assert m["exact_converged"] == pytest.approx(logged["val/exact_converged"][0])
    assert m["reconstruction"] == pytest.approx(logged["val/reconstruction"][0], rel=1e-5)
    assert m["exact_residual_median"] >= 0
