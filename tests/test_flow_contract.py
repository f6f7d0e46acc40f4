"""The contract every flow of the package keeps, checked the same way for each (as zuko does).

Flows: dense ResNet pair, conditional dense ResNet pair, the authors' conditional MLPResNet pair,
particle EGNN on ``ParticleLayout``, EGNNFlowNet pair on a ``GraphLayout`` of graphs of different
sizes (plain and conditional), and the molecule flow's FreeFormFlow on dequantized molecules. For
each: output shapes, gradients of the loss and of the exact log-density reach every parameter, the
exact log-density against a brute-force Jacobian (``torch.autograd.functional.jacobian`` +
``slogdet`` on an independently built basis of each sample's subspace, float64), samples that do
not interact, the structure passed per call (sub-batches give the same per-sample values), and a
state-dict round trip into a fresh instance giving identical outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from molfff.fff import FreeFormFlow, GraphLayout, Layout, ParticleLayout
from molfff.molecules.flow import MoleculeBatch, MoleculeFlow
from molfff.nn import EGNNFlowNet, MLPResNet, ParticleEGNN, ResNet

pytestmark = pytest.mark.usefixtures("float64")

SIZES = [2, 4, 3]  # graphs of different sizes
KINDS = [
    "dense",
    "conditional",
    "mlp_resnet",
    "particles",
    "graph",
    "graph_conditional",
    "molecule",
]


@dataclass
class Case:
    """A flow, a batch for it, and each sample's structure: ``(n nodes, pos_dim, features)``."""

    flow: FreeFormFlow
    x: Tensor
    c: Tensor | None
    layout: Layout | None  # per call (graphs); None: the flow's own
    samples: list[tuple[Tensor, tuple[int, int, int]]]  # flat indices into x, structure
    fresh: FreeFormFlow  # same architecture, other initial weights
    subset: list[int]  # samples of a sub-batch
    sub: tuple[Tensor, Tensor | None, Layout | None]  # that sub-batch: x, c, layout


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Leave the identity-like start, so that every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _mildly_nonlinear(module: torch.nn.Module, gain: float = 0.4) -> None:
    """Shrink a network that does not start at the identity towards its linear part: Newton's
    method from ``f(x)`` then reaches the decoder's preimage (from a random start it need not)."""
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(gain)


def _graph_rows(batch: Tensor, features: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(len(batch), 3, generator=g)
    for b in batch.unique():
        pos[batch == b] -= pos[batch == b].mean(0)
    return torch.cat([pos, torch.randn(len(batch), features, generator=g)], dim=1)


def _graph_samples(batch: Tensor, width: int, pos_dim: int) -> list:
    out = []
    for b in range(int(batch.max()) + 1):
        nodes = torch.nonzero(batch == b).squeeze(1)
        flat = (nodes[:, None] * width + torch.arange(width)).reshape(-1)
        out.append((flat, (len(nodes), pos_dim, width - pos_dim)))
    return out


def _row_samples(batch_size: int, width: int, structure: tuple[int, int, int]) -> list:
    return [(b * width + torch.arange(width), structure) for b in range(batch_size)]


def _graph_sub(x: Tensor, batch: Tensor, keep: list[int], c: Tensor | None, pos_dim: int):
    mask = torch.isin(batch, torch.tensor(keep))
    new_batch = torch.searchsorted(torch.tensor(keep), batch[mask])
    return x[mask], None if c is None else c[keep], GraphLayout(new_batch, len(keep), pos_dim)


def build(kind: str) -> Case:
    torch.manual_seed(0)
    if kind in ("dense", "conditional"):
        cond = 2 if kind == "conditional" else 0

        def make():
            net = dict(cond_dim=cond, width=8, blocks=1, activation="silu")
            return FreeFormFlow(ResNet(3, **net), ResNet(3, **net), event_shape=(3,))

        flow = make()
        x = torch.randn(4, 3)
        c = torch.randn(4, cond) if cond else None
        samples = _row_samples(4, 3, (1, 0, 3))
        subset = [1, 3]
        sub = (x[subset], None if c is None else c[subset], None)
    elif kind == "mlp_resnet":

        def make():
            net = dict(cond_dim=2, width=8, blocks=1, pre_layers=2)
            return FreeFormFlow(
                MLPResNet(3, role="encoder", **net),
                MLPResNet(3, role="decoder", **net),
                event_shape=(3,),
            )

        flow = make()
        x, c = torch.randn(4, 3), torch.randn(4, 2)
        samples = _row_samples(4, 3, (1, 0, 3))
        subset = [0, 3]
        sub = (x[subset], c[subset], None)
    elif kind == "particles":

        def make():
            net = dict(hidden=8, blocks=1)
            return FreeFormFlow(
                ParticleEGNN(4, 2, **net),
                ParticleEGNN(4, 2, **net),
                layout=ParticleLayout(4, 2),
                event_shape=(8,),
            )

        flow = make()
        x, c = flow.layout.project(torch.randn(3, 8)), None
        samples = _row_samples(3, 8, (4, 2, 0))  # 4 particles in 2-D, zero CoM
        subset = [0, 2]
        sub = (x[subset], None, None)
    elif kind in ("graph", "graph_conditional"):
        cond = 1 if kind == "graph_conditional" else 0

        def make():
            net = dict(pos_dim=3, cond_dim=cond, hidden=8, blocks=1)
            return FreeFormFlow(EGNNFlowNet(2, **net), EGNNFlowNet(2, **net))

        flow = make()
        batch = torch.repeat_interleave(torch.arange(3), torch.tensor(SIZES))
        x, c = _graph_rows(batch, 2, seed=1), (torch.randn(3, 1) if cond else None)
        layout = GraphLayout(batch, pos_dim=3)
        samples = _graph_samples(batch, 5, 3)
        subset = [0, 2]
        sub = _graph_sub(x, batch, subset, c, 3)
    elif kind == "molecule":
        p_n = torch.zeros(6)
        p_n[[2, 3, 4]] = 1.0

        def make():
            model = MoleculeFlow(5, p_n, hidden=8, blocks=1, dequantizer_blocks=1)
            return model.flow

        flow = make()
        batch = torch.repeat_interleave(torch.arange(3), torch.tensor(SIZES))
        types = torch.tensor([1, 0, 1, 0, 0, 0, 3, 0, 0])
        charge = torch.tensor([6, 1, 6, 1, 1, 1, 8, 1, 1.0]).unsqueeze(1)
        model = MoleculeFlow(5, p_n, hidden=8, blocks=1, dequantizer_blocks=1)
        mol = MoleculeBatch(
            _graph_rows(batch, 0, seed=2),
            torch.nn.functional.one_hot(types, 5).double(),
            charge,
            batch,
            3,
        )
        _perturb(model.dequantizer, seed=5)
        with torch.no_grad():
            x, _, layout = model.dequantize(mol, torch.Generator().manual_seed(0))
        c = None
        samples = _graph_samples(batch, 9, 3)
        subset = [1, 2]
        sub = _graph_sub(x, batch, subset, None, 3)
    else:
        raise ValueError(kind)
    if kind in ("dense", "conditional", "mlp_resnet", "particles"):
        layout = None
    if kind == "mlp_resnet":
        _mildly_nonlinear(flow)
        with torch.no_grad():  # points the decoder reaches from typical latents
            x = flow.decode(torch.randn(x.shape), c)
        sub = (x[subset], c[subset], None)
    else:
        _perturb(flow, seed=3)
    torch.manual_seed(99)
    return Case(flow, x, c, layout, samples, make(), subset, sub)


def _subspace_basis(n: int, pos_dim: int, features: int) -> Tensor:
    """Orthonormal basis of one sample's subspace, from its projector (zero CoM of positions):
    built without the layouts, so that it checks them."""
    width = pos_dim + features
    p = torch.zeros(n * width, n * width)
    for i in range(n):
        for j in range(n):
            for a in range(width):
                if a < pos_dim:
                    p[i * width + a, j * width + a] = float(i == j) - 1.0 / n
                elif i == j:
                    p[i * width + a, j * width + a] = 1.0
    values, vectors = torch.linalg.eigh(p)
    basis = vectors[:, values > 0.5]
    assert basis.shape[1] == (n - 1) * pos_dim + n * features
    return basis


def _brute_log_det(case: Case, z: Tensor, create_graph: bool = False) -> Tensor:
    """Per sample ``log|det Q^T J_g Q|`` from the full Jacobian of the whole batch."""
    jac = torch.autograd.functional.jacobian(
        lambda t: case.flow.decode(t.reshape(z.shape), case.c, case.layout).reshape(-1),
        z.reshape(-1),
        create_graph=create_graph,
    )
    out = []
    for b, (idx, structure) in enumerate(case.samples):
        others = torch.cat([i for k, (i, _) in enumerate(case.samples) if k != b])
        assert float(jac[idx][:, others].detach().abs().max()) == 0.0, "samples interact"
        q = _subspace_basis(*structure)
        out.append(torch.linalg.slogdet(q.T @ jac[idx][:, idx] @ q).logabsdet)
    return torch.stack(out)


def _log_normal(case: Case, z: Tensor) -> Tensor:
    out = []
    for idx, structure in case.samples:
        m = _subspace_basis(*structure).shape[1]
        out.append(-0.5 * (z.reshape(-1)[idx] ** 2).sum() - 0.5 * m * math.log(2 * math.pi))
    return torch.stack(out)


@pytest.fixture(params=KINDS)
def case(request) -> Case:
    return build(request.param)


def test_shapes(case):
    flow, x, c, layout = case.flow, case.x, case.c, case.layout
    b = len(case.samples)
    terms = flow.loss(x, 10.0, c, layout, generator=torch.Generator().manual_seed(0))
    for name in ("loss", "nll_surrogate", "trace_surrogate", "reconstruction", "log_prob_z"):
        assert getattr(terms, name).shape == (b,), name
    assert terms.z.shape == x.shape and terms.x_hat.shape == x.shape
    with torch.no_grad():
        assert flow.log_prob(x, c, layout).shape == (b,)
        assert flow.reconstruction(x, c, layout).shape == (b,)
        assert flow.sample(c=c, like=x, layout=layout).shape == x.shape
        y, log_q = flow.sample_with_log_prob(c=c, like=x, layout=layout)
    assert y.shape == x.shape and log_q.shape == (b,)


def _assert_every_parameter_has_a_gradient(module: torch.nn.Module, what: str) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{what}: no gradient reaches {name}"
        assert bool(torch.isfinite(p.grad).all()), f"{what}: non-finite gradient of {name}"
        assert float(p.grad.abs().max()) > 0, f"{what}: zero gradient of {name}"


def test_loss_gradients_reach_every_parameter(case):
    terms = case.flow.loss(case.x, 10.0, case.c, case.layout)
    terms.loss.mean().backward()
    _assert_every_parameter_has_a_gradient(case.flow, "loss")


def test_log_prob_estimate_gradients_match_brute_force(case):
    """No ``no_grad`` inside: a user can train on the density (gradient mode is theirs). The
    paper estimate's parameter gradients equal those of the brute-force formula at z = f(x), and
    reach every encoder parameter (a decoder's output bias does not change its Jacobian)."""
    flow = case.flow
    params = dict(flow.named_parameters())
    got = torch.autograd.grad(
        flow.log_prob_estimate(case.x, case.c, case.layout).sum(),
        list(params.values()),
        allow_unused=True,
    )
    z = flow.encode(case.x, case.c, case.layout)
    brute = _log_normal(case, z) - _brute_log_det(case, z, create_graph=True)
    want = torch.autograd.grad(brute.sum(), list(params.values()), allow_unused=True)
    for name, g, w in zip(params, got, want, strict=True):
        g = torch.zeros_like(params[name]) if g is None else g
        w = torch.zeros_like(params[name]) if w is None else w
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10, msg=name)
        if name.startswith("encoder."):
            assert float(g.abs().max()) > 0, f"no gradient of log_prob_estimate reaches {name}"
    _, log_q = flow.sample_with_log_prob(c=case.c, like=case.x, layout=case.layout)
    grads = torch.autograd.grad(log_q.sum(), list(flow.decoder.parameters()), allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    with torch.no_grad():
        assert not flow.log_prob_estimate(case.x, case.c, case.layout).requires_grad


def test_exact_log_prob_gradients_are_the_decoders_only(case):
    """The exact density is the decoder's: no gradient reaches the encoder (it only picks Newton's
    start), and a finite difference along one decoder parameter matches autograd."""
    flow = case.flow
    enc = list(flow.encoder.parameters())
    dec = dict(flow.decoder.named_parameters())
    lp = flow.log_prob(case.x, case.c, case.layout).sum()
    grads = torch.autograd.grad(lp, enc + list(dec.values()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0 for g in grads[: len(enc)])
    name, p = max(dec.items(), key=lambda kv: kv[1].numel())
    g = grads[len(enc) + list(dec).index(name)]
    direction = torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype)
    eps = 1e-6
    with torch.no_grad():
        p += eps * direction
        up = flow.log_prob(case.x, case.c, case.layout).sum()
        p -= 2 * eps * direction
        down = flow.log_prob(case.x, case.c, case.layout).sum()
        p += eps * direction
    fd = (up - down) / (2 * eps)
    torch.testing.assert_close((g * direction).sum(), fd, rtol=1e-5, atol=1e-7)


def test_exact_log_density_against_brute_force(case):
    flow = case.flow
    with torch.no_grad():
        res = flow.invert(case.x, case.c, case.layout)
        got = flow.log_prob(case.x, case.c, case.layout)
        estimate = flow.log_prob_estimate(case.x, case.c, case.layout)
        z0 = flow.encode(case.x, case.c, case.layout)
    assert bool(res.converged.all()) and float(res.residual.max()) < 1e-10
    torch.testing.assert_close(flow.decode(res.z, case.c, case.layout), case.x)
    log_det = _brute_log_det(case, res.z)
    assert float(log_det.abs().max()) > 1e-3  # a real map, not the identity
    torch.testing.assert_close(got, _log_normal(case, res.z) - log_det, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(res.log_prob, got, rtol=0, atol=0)
    # the paper's estimate is the same formula at z = f(x)
    want = _log_normal(case, z0) - _brute_log_det(case, z0)
    torch.testing.assert_close(estimate, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(res.log_prob_estimate, want, rtol=1e-10, atol=1e-10)
    # the sampler's density at the latent it drew
    like = case.x
    with torch.no_grad():
        gen = torch.Generator().manual_seed(4)
        x, log_q = flow.sample_with_log_prob(c=case.c, like=like, layout=case.layout, generator=gen)
        z = flow.latent.sample(like, case.layout or flow.layout, torch.Generator().manual_seed(4))
        torch.testing.assert_close(x, flow.decode(z, case.c, case.layout), rtol=0, atol=0)
    torch.testing.assert_close(log_q, _log_normal(case, z) - _brute_log_det(case, z))


def test_structure_is_per_call(case):
    """A sub-batch, with its own structure, gives the same per-sample values: nothing about the
    first batch stays in the networks."""
    flow = case.flow
    with torch.no_grad():
        full = flow.log_prob(case.x, case.c, case.layout)
        part = flow.log_prob(*case.sub)
        again = flow.log_prob(case.x, case.c, case.layout)
    torch.testing.assert_close(part, full[case.subset], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(again, full, rtol=0, atol=0)
    assert not any(b.numel() for b in flow.buffers())


def test_state_dict_round_trip(case):
    flow, fresh = case.flow, case.fresh
    args = (case.x, case.c, case.layout)
    with torch.no_grad():
        assert not torch.equal(fresh.log_prob(*args), flow.log_prob(*args))
        fresh.load_state_dict(flow.state_dict())
        torch.testing.assert_close(fresh.log_prob(*args), flow.log_prob(*args), rtol=0, atol=0)
        draws = [
            f.sample(
                c=case.c,
                like=case.x,
                layout=case.layout,
                generator=torch.Generator().manual_seed(1),
            )
            for f in (flow, fresh)
        ]
    torch.testing.assert_close(*draws, rtol=0, atol=0)
    losses = [
        f.loss(*args[:1], 10.0, *args[1:], generator=torch.Generator().manual_seed(2)).loss
        for f in (flow, fresh)
    ]
    torch.testing.assert_close(*losses, rtol=0, atol=0)
