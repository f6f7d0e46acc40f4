"""The molecule flow around the free-form flow: its checkpoint keys, and its NLL as the
free-form flow's density plus the size and dequantization terms (float64; the shared contract is
in ``test_flow_contract.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from molfff.fff import GraphLayout
from molfff.molecules.flow import MoleculeBatch, MoleculeFlow
from tests.test_flow_contract import SIZES, _graph_rows, _perturb, _subspace_basis

pytestmark = pytest.mark.usefixtures("float64")


def _molecules() -> MoleculeBatch:
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(SIZES))
    types = torch.tensor([1, 0, 1, 0, 0, 0, 3, 0, 0])
    charge = torch.tensor([6, 1, 6, 1, 1, 1, 8, 1, 1.0]).unsqueeze(1)
    one_hot = torch.nn.functional.one_hot(types, 5).double()
    return MoleculeBatch(_graph_rows(batch, 0, seed=2), one_hot, charge, batch, 3)


def _molecule_flow(seed: int) -> MoleculeFlow:
    torch.manual_seed(seed)
    p_n = torch.zeros(6)
    p_n[[2, 3, 4]] = 1.0
    return MoleculeFlow(5, p_n, hidden=8, blocks=1, dequantizer_blocks=1)


def test_molecule_flow_round_trip_and_former_checkpoint_keys():
    """MoleculeFlow's state dict holds flow.encoder.* / flow.decoder.*; a state dict of the
    former layout (encoder.* / decoder.* on the molecule flow) loads into the same weights."""
    model, mol = _molecule_flow(0), _molecules()
    _perturb(model, seed=1)
    keys = model.state_dict().keys()
    assert any(k.startswith("flow.encoder.") for k in keys)
    assert not any(k.startswith(("encoder.", "decoder.")) for k in keys)
    former = {k.removeprefix("flow."): v for k, v in model.state_dict().items()}
    assert any(k.startswith("encoder.") for k in former)

    def outputs(m: MoleculeFlow) -> list[Tensor]:
        with torch.no_grad():
            nll = m.nll(mol, torch.Generator().manual_seed(0), chunk_size=5)
            drawn = m.sample(4, torch.Generator().manual_seed(1))
        return [
            nll["nll_exact"],
            nll["nll_estimate"],
            nll["reconstruction"],
            drawn.pos,
            drawn.one_hot,
            drawn.charge,
        ]

    want = outputs(model)
    for state in (model.state_dict(), former):
        fresh = _molecule_flow(7)
        fresh.load_state_dict(state)  # strict: no missing or unexpected keys
        for a, b in zip(outputs(fresh), want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same inside a parent module, as in a Lightning checkpoint (prefix "flow.")
    parent = torch.nn.Module()
    parent.flow = _molecule_flow(8)
    parent.load_state_dict({f"flow.{k}": v for k, v in former.items()})
    torch.testing.assert_close(outputs(parent.flow)[0], want[0], rtol=0, atol=0)


def test_molecule_nll_is_the_free_form_flow_density_plus_size_and_dequantization():
    model, mol = _molecule_flow(0), _molecules()
    _perturb(model, seed=1)
    with torch.no_grad():
        out = model.nll(mol, torch.Generator().manual_seed(0))
        x, log_q, layout = model.dequantize(mol, torch.Generator().manual_seed(0))
        exact = model.flow.log_prob(x, layout=layout)
        estimate = model.flow.log_prob_estimate(x, layout=layout)
    log_p_n = model.log_p_n[torch.tensor(SIZES)]
    for kind, log_p in (("exact", exact), ("estimate", estimate)):
        torch.testing.assert_close(out[f"nll_given_n_{kind}"], -log_p + log_q, rtol=0, atol=1e-12)
        torch.testing.assert_close(out[f"nll_{kind}"], -log_p + log_q - log_p_n, rtol=0, atol=1e-12)
    assert out["converged"].all()
    with torch.no_grad():
        recon = model.flow.reconstruction(x, layout=layout)
    torch.testing.assert_close(out["reconstruction"], recon, rtol=1e-10, atol=1e-14)


def _preimage_by_scipy(decode, x: Tensor, basis: Tensor) -> Tensor:
    """``z*`` with ``decode(z*) = x`` by MINPACK's hybrid method (scipy) on the coordinates of
    the molecule's subspace, from ``z = x``: independent of molfff's Newton solver."""
    from scipy.optimize import root

    def residual(y):
        z = (basis @ torch.from_numpy(y)).reshape(x.shape)
        with torch.no_grad():
            return (basis.T @ (decode(z) - x).reshape(-1)).numpy()

    y0 = (basis.T @ x.reshape(-1)).numpy()
    # the caller checks the residual: MINPACK may report that a tiny xtol cannot be reached
    sol = root(residual, y0, method="hybr", options={"xtol": 1e-13})
    return (basis @ torch.from_numpy(sol.x)).reshape(x.shape)


def test_molecule_exact_nll_is_the_decoder_density_at_the_preimage():
    """With an encoder that does not invert the decoder, the exact NLL given n is
    ``-log p_Z(z*) + log|det Q^T J_g(z*) Q| + log q(v | h)`` at the preimage ``g(z*) = x`` found
    by scipy, Jacobian by autograd on a basis built without the layouts; the paper's estimate
    differs from it, and perturbing the encoder moves the estimate but not the exact NLL."""
    model, mol = _molecule_flow(0), _molecules()
    _perturb(model, seed=1)
    with torch.no_grad():
        out = model.nll(mol, torch.Generator().manual_seed(0))
        x, log_q, _ = model.dequantize(mol, torch.Generator().manual_seed(0))
    assert out["converged"].all() and float(out["residual"].max()) < 1e-10
    assert float(out["reconstruction"].min()) > 1e-3  # f is not g's inverse here
    want = []
    for b, n in enumerate(SIZES):
        rows = x[mol.batch == b]
        one = GraphLayout(torch.zeros(n, dtype=torch.long), 1, pos_dim=3)

        def decode(z, one=one):
            return model.flow.decode(z, layout=one)

        basis = _subspace_basis(n, 3, rows.shape[1] - 3)
        z_star = _preimage_by_scipy(decode, rows, basis)
        with torch.no_grad():
            assert float((decode(z_star) - rows).abs().max()) < 1e-10
        jac = torch.autograd.functional.jacobian(
            lambda t, d=decode, r=rows: d(t.reshape(r.shape)).reshape(-1), z_star.reshape(-1)
        )
        log_det = torch.linalg.slogdet(basis.T @ jac @ basis).logabsdet
        m = basis.shape[1]
        log_p_z = -0.5 * (z_star**2).sum() - 0.5 * m * math.log(2 * math.pi)
        want.append(-log_p_z + log_det + log_q[b])
    want = torch.stack(want)
    torch.testing.assert_close(out["nll_given_n_exact"], want, rtol=1e-9, atol=1e-9)
    gap = (out["nll_given_n_estimate"] - want).abs()
    assert float(gap.min()) > 1e-3, gap  # the estimate is another point's density

    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.flow.encoder.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        moved = model.nll(mol, torch.Generator().manual_seed(0))
    assert moved["converged"].all()
    torch.testing.assert_close(moved["nll_given_n_exact"], want, rtol=1e-9, atol=1e-9)
    shift = (moved["nll_given_n_estimate"] - out["nll_given_n_estimate"]).abs()
    assert float(shift.min()) > 1e-4, shift
