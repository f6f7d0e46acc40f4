"""The decoder's preimage and the exact density of the model that samples (float64 identities)."""

import math

import pytest
import torch

from molfff.fff import (
    DenseLayout,
    FreeFormFlow,
    GraphLayout,
    ParticleLayout,
    StandardNormal,
    invert_decoder,
)

D64 = torch.float64


def softplus_map(a: torch.Tensor, b: torch.Tensor):
    """``g(z) = A (z + 0.5 tanh z) + b``: invertible, with a closed-form log-det."""

    def g(z, c=None, layout=None):
        return (z + 0.5 * torch.tanh(z)) @ a.T + b

    def log_det(z):
        return torch.linalg.slogdet(a).logabsdet + torch.log1p(0.5 / torch.cosh(z) ** 2).sum(1)

    return g, log_det


def std_normal_log_prob(z):
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, c=None, layout=None):
        return self.fn(x, c, layout)


def dense_case(seed=0, d=3):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=D64) + 2 * torch.eye(d, dtype=D64)
    b = torch.randn(d, generator=gen, dtype=D64)
    g, log_det = softplus_map(a, b)
    a_inv = torch.linalg.inv(a)

    def f(x, c=None, layout=None):  # deliberately wrong: scaled, shifted, ignores the tanh
        return 0.8 * (x - b) @ a_inv.T + 0.3

    z_true = torch.randn(64, d, generator=gen, dtype=D64)
    return FreeFormFlow(Fn(f), Fn(g)), g, log_det, z_true


def test_dense_preimage_and_exact_density_match_closed_form():
    flow, g, log_det, z_true = dense_case()
    x = g(z_true)
    res = flow.invert(x)
    assert bool(res.converged.all())
    assert (res.z - z_true).abs().max().item() < 1e-10
    assert res.residual.max().item() < 1e-10
    expected = std_normal_log_prob(z_true) - log_det(z_true)
    assert torch.allclose(res.log_prob, expected, atol=1e-10, rtol=0)
    # the paper's estimate is the density of g(f(x)) != x: visibly different here
    assert (res.log_prob_estimate - expected).abs().max().item() > 0.1
    assert res.residual_start.min().item() > 1e-3
    assert int(res.iterations.max()) <= 20
    # log_prob without gradients is the same number
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x), expected, atol=1e-10, rtol=0)


def test_converged_samples_leave_the_batch_and_stop_at_f_of_x():
    """Where the encoder already inverts the decoder, no Newton step is taken."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 2, generator=gen, dtype=D64) + 2 * torch.eye(2, dtype=D64)
    flow = FreeFormFlow(
        Fn(lambda x, c, layout: x @ torch.linalg.inv(a).T), Fn(lambda z, c, layout: z @ a.T)
    )
    x = torch.randn(8, 2, generator=gen, dtype=D64)
    res = flow.invert(x)
    assert int(res.iterations.max()) == 0
    assert torch.allclose(res.log_prob, res.log_prob_estimate, atol=1e-12, rtol=0)


def test_graph_preimage_on_zero_com_subspace():
    """Graphs of 2, 4 and 3 nodes, positions on the zero-CoM subspace plus 2 free features."""
    batch = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2])
    layout = GraphLayout(batch, pos_dim=3)

    def g(z, c, layout):
        return torch.cat([1.5 * z[:, :3], z[:, 3:] + 0.5 * torch.tanh(z[:, 3:])], dim=1)

    def f(x, c, layout):  # wrong scale everywhere
        return torch.cat([0.5 * x[:, :3], 0.9 * x[:, 3:]], dim=1)

    gen = torch.Generator().manual_seed(2)
    z_true = layout.project(torch.randn(9, 5, generator=gen, dtype=D64))
    x = g(z_true, None, layout)
    flow = FreeFormFlow(Fn(f), Fn(g), layout=layout)
    res = flow.invert(x)
    assert bool(res.converged.all())
    assert (res.z - z_true).abs().max().item() < 1e-10
    n = layout.counts.to(D64)
    dims = layout.dims(x)
    log_p = -0.5 * layout.sum_per_sample(z_true**2) - 0.5 * dims * math.log(2 * math.pi)
    log_det = (n - 1) * 3 * math.log(1.5) + layout.sum_per_sample(
        torch.log1p(0.5 / torch.cosh(z_true[:, 3:]) ** 2)
    )
    assert torch.allclose(res.log_prob, log_p - log_det, atol=1e-10, rtol=0)


def test_particle_preimage():
    layout = ParticleLayout(3, 2)
    flow = FreeFormFlow(
        Fn(lambda x, c, lay: 0.5 * x),
        Fn(lambda z, c, lay: 1.3 * z + 0.2 * lay.project(torch.tanh(z))),
        latent=StandardNormal(),
        layout=layout,
    )
    gen = torch.Generator().manual_seed(3)
    z_true = layout.project(torch.randn(16, 6, generator=gen, dtype=D64))
    x = flow.decode(z_true)
    res = flow.invert(x)
    assert bool(res.converged.all())
    assert (res.z - z_true).abs().max().item() < 1e-10


def test_density_of_the_model_that_samples_integrates_to_one():
    """A curved 2-D decoder (contractive residual map: a bijection) and a wrong encoder: the exact
    density integrates to 1 on a grid, the paper's estimate does not."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(2, 2, generator=gen, dtype=D64)
    w = 0.9 * w / torch.linalg.matrix_norm(w, ord=2)  # Lipschitz 0.9 < 1

    def g(z, c=None, layout=None):
        return 1.2 * z + torch.tanh(z @ w.T + 0.3) + 0.5

    flow = FreeFormFlow(Fn(lambda x, c, layout: 0.7 * x), Fn(g))
    side = torch.linspace(-9, 9, 361, dtype=D64)
    xx, yy = torch.meshgrid(side, side, indexing="ij")
    x = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    res = flow.invert(x)
    cell = (side[1] - side[0]) ** 2
    exact = (res.log_prob.exp().sum() * cell).item()
    estimate = (res.log_prob_estimate.exp().sum() * cell).item()
    assert bool(res.converged.all())
    assert abs(exact - 1) < 5e-3
    assert abs(estimate - 1) > 0.05


def test_gradients_are_the_implicit_functions():
    """d log q / d x and d log q / d(decoder parameter) against finite differences."""
    gen = torch.Generator().manual_seed(5)
    a0 = torch.randn(2, 2, generator=gen, dtype=D64) + 2 * torch.eye(2, dtype=D64)
    b = torch.randn(2, generator=gen, dtype=D64)
    x0 = torch.randn(3, 2, generator=gen, dtype=D64)

    def log_q(x, a):
        g, _ = softplus_map(a, b)
        flow = FreeFormFlow(Fn(lambda x, c, layout: 0.9 * x), Fn(g))
        return flow.log_prob(x)

    assert torch.autograd.gradcheck(
        log_q, (x0.requires_grad_(), a0.requires_grad_()), eps=1e-6, atol=1e-6
    )


def test_no_preimage_is_reported_not_hidden():
    """``g(z) = z^2 + 1`` has no preimage of x = 0; ``z^3`` has a singular Jacobian at 0."""
    flow = FreeFormFlow(Fn(lambda x, c, layout: x), Fn(lambda z, c, layout: z**2 + 1))
    res = flow.invert(torch.tensor([[0.0], [4.0]], dtype=D64))
    assert res.converged.tolist() == [False, True]
    assert res.residual[0].item() >= 1 - 1e-9
    assert torch.isfinite(res.z).all()
    assert math.isnan(res.log_prob[0].item()) and math.isfinite(res.log_prob[1].item())
    cube = FreeFormFlow(Fn(lambda x, c, layout: 0 * x), Fn(lambda z, c, layout: z**3))
    res = cube.invert(torch.tensor([[1.0]], dtype=D64), restarts=0)
    assert res.converged.tolist() == [False]
    assert int(res.iterations[0]) == 0
    res = cube.invert(torch.tensor([[1.0]], dtype=D64), restarts=2)  # starts off the singular point
    assert res.converged.tolist() == [True] and res.z.item() == pytest.approx(1.0, abs=1e-10)


def test_restarts_find_the_preimage_behind_a_fold():
    """``g(z) = z^3 - 3z`` folds at z = -1 (g = 2, g' = 0): Newton for x = 5 from the fold has no
    step; a restart from p_Z reaches the one preimage, z ≈ 2.279."""
    flow = FreeFormFlow(
        Fn(lambda x, c, layout: torch.full_like(x, -1.0)), Fn(lambda z, c, layout: z**3 - 3 * z)
    )
    x = torch.tensor([[5.0]], dtype=D64)
    stuck = flow.invert(x, restarts=0)
    assert stuck.converged.tolist() == [False]
    found = flow.invert(x, restarts=8)
    assert found.converged.tolist() == [True]
    z = found.z.item()
    assert abs(z**3 - 3 * z - 5) < 1e-10 and z > 2
    want = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - math.log(3 * z**2 - 3)
    assert found.log_prob.item() == pytest.approx(want, abs=1e-10)


def test_iteration_cap_and_bad_arguments():
    flow, g, _, z_true = dense_case(seed=6)
    x = g(z_true)
    res = flow.invert(x, max_iter=0, restarts=0)
    assert int(res.iterations.max()) == 0
    assert not bool(res.converged.any())
    assert bool(res.log_prob.isnan().all()) and bool(res.log_prob_estimate.isfinite().all())
    with pytest.raises(ValueError, match="same shape"):
        invert_decoder(g, x, z_true[:3])
    with pytest.raises(ValueError, match="max_iter"):
        invert_decoder(g, x, z_true, max_iter=-1)


@pytest.mark.parametrize(
    "layout, shape",
    [
        (DenseLayout(), (4, 3)),
        (ParticleLayout(4, 3), (5, 12)),
        (GraphLayout(torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2]), pos_dim=3), (9, 5)),
    ],
)
def test_from_coordinates_inverts_coordinates(layout, shape):
    t = layout.project(torch.randn(*shape, dtype=D64))
    back = layout.from_coordinates(layout.coordinates(t), t)
    assert torch.allclose(back, t, atol=1e-12)


def test_graph_select_keeps_whole_graphs():
    layout = GraphLayout(torch.tensor([0, 0, 1, 1, 1, 2, 2]), pos_dim=3)
    t = torch.arange(7.0).unsqueeze(1).expand(7, 4)
    rows, sub = layout.select(t, torch.tensor([True, False, True]))
    assert rows.tolist() == [True, True, False, False, False, True, True]
    assert sub.batch.tolist() == [0, 0, 1, 1] and sub.num_graphs == 2


def test_empty_batch_and_gradient_mode_agree_on_missing_preimages():
    """An empty batch gives empty results; with gradients on, a sample without a preimage is
    NaN as without them (not the density at the last iterate)."""
    flow, g, _, z_true = dense_case(seed=7)
    empty = torch.empty(0, 3, dtype=D64)
    res = flow.invert(empty)
    assert res.log_prob.shape == (0,) and res.z.shape == (0, 3)
    assert flow.log_prob_estimate(empty).shape == (0,)
    square = FreeFormFlow(Fn(lambda x, c, layout: x), Fn(lambda z, c, layout: z**2 + 1))
    x = torch.tensor([[0.0], [4.0]], dtype=D64, requires_grad=True)
    lp = square.log_prob(x)
    assert math.isnan(lp[0].item()) and math.isfinite(lp[1].item())
    with torch.no_grad():
        torch.testing.assert_close(square.log_prob(x), lp.detach(), equal_nan=True)
