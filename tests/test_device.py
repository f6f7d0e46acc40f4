"""Device-sensitive paths on the device given by ``--device`` (``pytest -m device --device cuda``).

Everything here must stay on that device: generators, buffers, size sampling, Jacobian bases,
and the molecule training step and evaluation.
"""

import importlib.util
import math

import pytest
import torch

from molfff.fff import DenseLayout, FreeFormFlow, ParticleLayout
from molfff.molecules.flow import MoleculeFlow
from molfff.nn import ResNet
from molfff.nn.particles import ParticleEGNN

pytestmark = pytest.mark.device


def _molecule_flow(device):
    torch.manual_seed(0)
    sizes = torch.zeros(30)
    sizes[[3, 5, 9]] = torch.tensor([0.2, 0.5, 0.3])
    return MoleculeFlow(5, sizes, hidden=16, blocks=1, dequantizer_blocks=1).to(device)


def test_molecule_flow_samples_scores_and_trains_on_device(device):
    flow = _molecule_flow(device)
    g = torch.Generator(device=device).manual_seed(0)
    mol = flow.sample(6, g)
    assert mol.pos.device.type == device.type and mol.batch.device.type == device.type
    out = flow.nll(mol, g, chunk_size=8)
    for key in ("nll_exact", "nll_estimate", "converged", "residual", "reconstruction"):
        assert out[key].device.type == device.type, key
    assert torch.isfinite(out["nll_exact"]).all() and torch.isfinite(out["nll_estimate"]).all()
    assert out["converged"].all()  # an untrained flow is near the identity: Newton converges
    terms = flow.loss(mol, 10.0, g)
    terms["loss"].mean().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(gr.device.type == device.type and gr.isfinite().all() for gr in grads)


def test_dense_and_particle_flows_on_device(device):
    torch.manual_seed(0)
    g = torch.Generator(device=device).manual_seed(0)
    dense = FreeFormFlow(ResNet(3, 0, width=8, blocks=1), ResNet(3, 0, width=8, blocks=1),
                         layout=DenseLayout(), event_shape=(3,)).to(device)  # fmt: skip
    x = torch.randn(4, 3, device=device)
    assert dense.loss(x, 10.0, generator=g).loss.device.type == device.type
    assert torch.isfinite(dense.log_prob(x)).all()
    particles = FreeFormFlow(ParticleEGNN(4, 2, hidden=8, blocks=1),
                             ParticleEGNN(4, 2, hidden=8, blocks=1),
                             layout=ParticleLayout(4, 2), event_shape=(8,)).to(device)  # fmt: skip
    x = particles.sample(3, generator=g)
    assert x.device.type == device.type and torch.isfinite(particles.log_prob(x)).all()


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="needs qm9pack")
def test_qm9_evaluation_runs_where_the_module_is(device):
    from molfff.train.config import load_config
    from molfff.train.tasks import build_task

    config = load_config(
        "qm9",
        ["data.n_train=16", "data.n_test=8", "data.batch_size=4", "model.blocks=1",
         "model.width=8", "evaluation.samples=4", "evaluation.novelty=false"],
    )  # fmt: skip
    task = build_task(config.data, config.seed)
    module = task.new_module(config).to(device)
    metrics = task.evaluate(module, "test", config)
    assert metrics["n"] == 8 and metrics["samples/n_molecules"] == 4
    assert metrics["exact_converged"] == 1.0
    assert all(math.isfinite(metrics[f"nll_given_n_{k}"]) for k in ("exact", "estimate"))
