"""EGNN: E(d) and permutation equivariance, near-identity start, graph independence, exact
log-det through vmap(jvp) against per-graph brute force, and the FFF loss with an EGNN pair."""

import pytest
import torch
from torch_geometric.utils import scatter

from molfff.fff import GraphLayout, StandardNormal, fff_loss, helmert_basis, log_abs_det_jacobian
from molfff.nn.egnn import EGNN, _mlp
from molfff.nn.egnn_flow import EGNNFlowNet
from molfff.nn.graph import edge_mlp, fully_connected_edges, subtract_graph_mean
from molfff.testing import (
    check_equivariance,
    check_invariance,
    random_group_element,
    random_orthogonal,
    random_permutation,
    rows_map,
    tolerance,
)

pytestmark = pytest.mark.usefixtures("float64")

SIZES = [3, 5, 2]
SMALL = {"hidden": 16, "blocks": 2}


def _batch(sizes=SIZES):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def _centred(pos, batch):
    return subtract_graph_mean(pos, batch, int(batch.max()) + 1)


def _com(pos, batch):
    return scatter(pos, batch, dim=0, reduce="mean")


def _perturb(net, std=0.3, seed=0):
    """Move all weights away from the near-identity start, so that tests see a nonlinear map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def _rows(batch, features=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = _centred(torch.randn(len(batch), 3, generator=g), batch)
    return torch.cat([pos, torch.randn(len(batch), features, generator=g)], dim=1)


# ---------------------------------------------------------------- graph construction, harness


def test_fully_connected_edges_pairs_nodes_of_one_graph_without_self_loops():
    batch = torch.tensor([1, 0, 1, 1, 2, 0])  # unsorted on purpose
    src, dst = fully_connected_edges(batch)
    assert src.numel() == 2 * 1 + 3 * 2 + 0
    assert bool((batch[src] == batch[dst]).all()) and bool((src != dst).all())
    pairs = {(int(a), int(b)) for a, b in zip(src, dst, strict=True)}
    assert len(pairs) == src.numel() and (3, 0) in pairs and (0, 3) in pairs
    with pytest.raises(ValueError, match="batch"):
        fully_connected_edges(torch.zeros(2, 2, dtype=torch.long))


def test_factorised_edge_mlp_equals_the_concatenated_form():
    torch.manual_seed(0)
    mlp = _mlp([2 * 8 + 2, 6, 5], "silu", True).double()
    h = torch.randn(7, 8, dtype=torch.float64, requires_grad=True)
    edge_index = fully_connected_edges(torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    source, target = edge_index
    attr = torch.randn(edge_index.shape[1], 2, dtype=torch.float64)
    reference = mlp(torch.cat([h[target], h[source], attr], dim=-1))  # (h_i, h_j, a_ij)
    fast = edge_mlp(mlp, h, edge_index, attr)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    # swapping the roles of source and target must change the result (the test can fail)
    swapped = edge_mlp(mlp, h, edge_index.flip(0), attr)
    assert (swapped - reference).abs().max() > 1e-3
    (g_fast,) = torch.autograd.grad(fast.sum(), h)
    (g_ref,) = torch.autograd.grad(reference.sum(), h)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)


def test_harness_group_elements():
    gen = torch.Generator().manual_seed(0)
    for refl, sign in ((True, -1.0), (False, 1.0)):
        r = random_orthogonal(3, reflection=refl, generator=gen)
        torch.testing.assert_close(r.T @ r, torch.eye(3))
        assert float(torch.linalg.det(r)) == pytest.approx(sign)
    batch = torch.tensor([0, 1, 0, 1, 1, 2])
    perm = random_permutation(batch, gen)
    assert torch.equal(batch[perm], batch) and torch.equal(perm.sort().values, torch.arange(6))
    assert tolerance(torch.float32) > tolerance(torch.float64)


def test_harness_catches_a_non_equivariant_map():
    batch = _batch()
    pos, h = torch.randn(len(batch), 3), torch.randn(len(batch), 2)
    with pytest.raises(AssertionError, match="equivariance"):
        check_equivariance(lambda p, f, b: (p + p[:, :1] ** 2, f), pos, h, batch)
    with pytest.raises(AssertionError, match="equivariance"):  # mixes nodes: not permutation-eq.
        check_equivariance(lambda p, f, b: (p, f + torch.arange(len(f))[:, None]), pos, h, batch)


# ---------------------------------------------------------------- EGNN


@pytest.mark.parametrize("coords_range", [None, 15.0])
def test_egnn_is_equivariant_and_features_invariant(coords_range):
    torch.manual_seed(0)
    batch = _batch()
    net = _perturb(EGNN(2, 4, coords_range=coords_range, **SMALL))
    pos, h = 2 * torch.randn(len(batch), 3), torch.randn(len(batch), 2)
    assert not torch.allclose(net(pos, h, batch)[0], pos, atol=1e-2)  # a real nonlinear map
    err = check_equivariance(net, pos, h, batch, trials=4)
    assert err["pos"] < 1e-10 and err["h"] < 1e-10


def test_egnn_positions_only_in_two_dimensions():
    """DW4-like: d = 2, no features (a constant is embedded)."""
    torch.manual_seed(1)
    batch = _batch([4, 4])
    net = _perturb(EGNN(0, **SMALL))
    pos, h = torch.randn(8, 2), torch.zeros(8, 0)
    assert net(pos, h, batch)[1].shape == (8, 0)
    check_equivariance(net, pos, h, batch)


def test_egnn_rejects_bad_shapes():
    net = EGNN(2, **SMALL)
    batch = _batch()
    with pytest.raises(ValueError, match="features"):
        net(torch.randn(10, 3), torch.randn(10, 3), batch)
    with pytest.raises(ValueError, match="batch"):
        net(torch.randn(10, 3), torch.randn(10, 2), batch[:-1])
    with pytest.raises(ValueError, match="activation"):
        EGNN(2, activation="nope")


# ---------------------------------------------------------------- EGNNFlowNet


def test_flow_net_starts_near_identity():
    torch.manual_seed(2)
    batch = _batch()
    net = EGNNFlowNet(2)  # full-size defaults: hidden 64, 2 sub-layers
    x = _rows(batch)
    y = net(x, None, GraphLayout(batch))
    torch.testing.assert_close(y[:, 3:], x[:, 3:], rtol=0, atol=0)
    assert 0 < float((y[:, :3] - x[:, :3]).detach().abs().max()) < 1e-3


def test_flow_net_default_init_and_egnn_options_reach_the_network():
    torch.manual_seed(2)
    batch = _batch()
    net = EGNNFlowNet(2, zero_init=False, normalization_factor=1.0)
    assert net.net.blocks[0].gcls[0].normalization_factor == 1.0
    x = _rows(batch)
    y = net(x, None, GraphLayout(batch))
    assert float((y[:, 3:] - x[:, 3:]).detach().abs().max()) > 1e-3  # features move at once
    err = check_equivariance(
        rows_map(lambda t: net(t, None, GraphLayout(batch))), x[:, :3], x[:, 3:], batch, trials=2
    )
    assert err["pos"] < 1e-10 and err["h"] < 1e-10


def test_flow_net_equivariance_and_zero_centre_of_mass():
    torch.manual_seed(3)
    batch = _batch()
    net = _perturb(EGNNFlowNet(2, **SMALL))
    layout = GraphLayout(batch)
    x = _rows(batch)
    y = net(x, None, layout)
    assert float((y - x).detach().abs().max()) > 1e-2
    torch.testing.assert_close(_com(y[:, :3], batch), torch.zeros(3, 3), rtol=0, atol=1e-13)
    err = check_equivariance(
        rows_map(lambda t: net(t, None, layout)), x[:, :3], x[:, 3:], batch, trials=4
    )
    assert err["pos"] < 1e-10 and err["h"] < 1e-10


def test_flow_net_jacobian_is_identity_on_centre_of_mass_directions():
    torch.manual_seed(4)
    batch = _batch()
    net = _perturb(EGNNFlowNet(2, **SMALL))
    layout = GraphLayout(batch)
    x = _rows(batch)
    t = torch.cat([torch.randn(3, 3)[batch], torch.zeros(len(batch), 2)], dim=1)
    _, jt = torch.func.jvp(lambda u: net(u, None, layout), (x,), (t,))
    torch.testing.assert_close(jt, t)


def test_graphs_in_a_batch_do_not_interact():
    torch.manual_seed(5)
    batch = _batch()
    net = _perturb(EGNNFlowNet(2, **SMALL))
    layout = GraphLayout(batch)
    x = _rows(batch)
    x2 = x.clone()
    x2[batch == 1] += torch.randn(5, 5)
    y, y2 = net(x, None, layout), net(x2, None, layout)
    assert torch.equal(y[batch != 1], y2[batch != 1])
    assert not torch.allclose(y[batch == 1], y2[batch == 1])


def test_encode_decode_and_latent_density_are_equivariant():
    torch.manual_seed(6)
    batch = _batch()
    enc = _perturb(EGNNFlowNet(2, **SMALL), seed=1)
    dec = _perturb(EGNNFlowNet(2, **SMALL), seed=2)
    layout = GraphLayout(batch)
    x = _rows(batch)
    check_equivariance(
        rows_map(lambda t: dec(enc(t, None, layout), None, layout)), x[:, :3], x[:, 3:], batch
    )

    def log_pz(pos, h, b):
        return StandardNormal().log_prob(enc(torch.cat([pos, h], 1), None, layout), layout)

    # the latent normal lives on zero-CoM positions: translations stay out of this check
    check_invariance(log_pz, x[:, :3], x[:, 3:], batch, translate=False)


def test_conditioning_and_layout_errors():
    torch.manual_seed(7)
    batch = _batch()
    layout = GraphLayout(batch)
    net = _perturb(EGNNFlowNet(2, cond_dim=1, **SMALL))
    x, c = _rows(batch), torch.randn(3, 1)
    check_equivariance(rows_map(lambda t: net(t, c, layout)), x[:, :3], x[:, 3:], batch)
    with pytest.raises(ValueError, match="conditioning"):
        net(x, None, layout)
    with pytest.raises(ValueError, match="GraphLayout"):
        net(x, c)
    with pytest.raises(ValueError, match="node rows"):
        net(x[:, :4], c, layout)
    with pytest.raises(ValueError, match="layout has 10 nodes"):
        net(x[:-1], c, layout)
    with pytest.raises(ValueError, match="pos_dim"):
        net(x, c, GraphLayout(batch, pos_dim=2))
    # the structure is the call's own: one network serves any batch, nothing is kept
    first = GraphLayout(torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(net(x[:3], c[:1], first), net(x, c, layout)[:3])
    assert not any(b.numel() for b in net.buffers())


# ---------------------------------------------------------------- exact log-det and the loss


def _brute_log_det(net, x, sizes, features=2):
    """Per graph: slogdet(Q^T J Q) from the full Jacobian of the graph run alone."""
    out, start, width = [], 0, 3 + features
    for n in sizes:
        xg, bg = x[start : start + n], torch.zeros(n, dtype=torch.long)
        lg = GraphLayout(bg)
        jac = torch.autograd.functional.jacobian(
            lambda t, n=n, lg=lg: net(t.reshape(n, width), None, lg).reshape(-1), xg.reshape(-1)
        )
        basis = torch.zeros(width * n, 3 * (n - 1) + features * n)
        rows = torch.arange(width * n).reshape(n, width)
        basis[rows[:, :3].reshape(-1), : 3 * (n - 1)] = torch.kron(helmert_basis(n), torch.eye(3))
        basis[rows[:, 3:].reshape(-1), 3 * (n - 1) :] = torch.eye(features * n)
        out.append(torch.linalg.slogdet(basis.T @ jac @ basis).logabsdet)
        start += n
    return torch.stack(out)


def test_exact_log_det_through_egnn_matches_brute_force_and_is_invariant():
    torch.manual_seed(8)
    batch = _batch()
    net = _perturb(EGNNFlowNet(2, **SMALL))
    x = _rows(batch)
    layout = GraphLayout(batch, pos_dim=3)
    with torch.no_grad():
        got = log_abs_det_jacobian(net, x, layout)  # vmap over jvp
    want = _brute_log_det(net, x, SIZES)
    assert float(want.abs().min()) > 1e-2  # far from the identity's log-det 0
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        loop = log_abs_det_jacobian(net, x, layout, vectorize=False)
    torch.testing.assert_close(got, loop, rtol=1e-12, atol=1e-12)

    def log_det(pos, h, b):
        with torch.no_grad():
            return log_abs_det_jacobian(net, torch.cat([pos, h], 1), layout)

    err = check_invariance(log_det, x[:, :3], x[:, 3:], batch, trials=2)
    assert err < 1e-10


@pytest.mark.parametrize("decoder_jvp", ["reverse", "forward"])
def test_fff_loss_with_egnn_pair_has_finite_gradients(decoder_jvp):
    torch.manual_seed(9)
    batch = _batch()
    enc = EGNNFlowNet(2, **SMALL)
    dec = EGNNFlowNet(2, **SMALL)
    x = _rows(batch)
    layout = GraphLayout(batch, pos_dim=3)
    terms = fff_loss(x, enc, dec, beta=10.0, layout=layout, decoder_jvp=decoder_jvp)
    assert terms.loss.shape == (3,) and bool(torch.isfinite(terms.loss).all())
    # latent positions keep the data's zero centre of mass
    torch.testing.assert_close(_com(terms.z[:, :3], batch), torch.zeros(3, 3), rtol=0, atol=1e-13)
    terms.loss.mean().backward()
    grads = [p.grad for p in [*enc.parameters(), *dec.parameters()]]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_group_element_acts_on_rows():
    batch = _batch()
    x = _rows(batch)
    g = random_group_element(batch, reflection=True, generator=torch.Generator().manual_seed(0))
    y = g.act_rows(x, batch)
    torch.testing.assert_close(y[:, 3:], x[g.permutation, 3:])
    same = batch[:, None] == batch[None, :]  # distances within a graph are kept
    d_x = torch.cdist(x[:, :3], x[:, :3])[g.permutation][:, g.permutation]
    torch.testing.assert_close(torch.cdist(y[:, :3], y[:, :3])[same], d_x[same])


def test_node_attributes_keep_e3_equivariance_and_break_permutation_equivariance():
    from molfff.nn import ParticleEGNN

    torch.manual_seed(8)
    n, b = 5, 3
    x = torch.randn(b, n * 3)
    x = (x.reshape(b, n, 3) - x.reshape(b, n, 3).mean(1, keepdim=True)).reshape(b, n * 3)
    batch = torch.arange(b).repeat_interleave(n)
    pos, h = x.reshape(b * n, 3), torch.zeros(b * n, 0)

    def as_rows(net):
        return rows_map(lambda t: net(t[:, :3].reshape(b, n * 3)).reshape(b * n, 3))

    labelled = _perturb(ParticleEGNN(n, 3, distinguishable=True, **SMALL))
    identical = _perturb(ParticleEGNN(n, 3, **SMALL))
    assert labelled.net.net.embedding.in_features == n  # the one-hot index is read
    check_equivariance(as_rows(identical), pos, h, batch)
    check_equivariance(as_rows(labelled), pos, h, batch, permute=False)
    with pytest.raises(AssertionError, match="equivariance error"):
        check_equivariance(as_rows(labelled), pos, h, batch, translate=False)

    # node_index: node k of every graph reads e_k, whatever the graph's size
    net = EGNNFlowNet(2, node_index=5, **SMALL)
    ranks = net._index_one_hot(GraphLayout(_batch())).argmax(1)
    assert ranks.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]
    empty = GraphLayout(torch.zeros(0, dtype=torch.long), num_graphs=0)
    assert net(torch.zeros(0, 5), None, empty).shape == (0, 5)
    with pytest.raises(TypeError, match="node_index must be an int"):
        EGNNFlowNet(2, node_index=2.5)
    with pytest.raises(ValueError, match="a graph has 5 nodes; node_index=4"):
        EGNNFlowNet(2, node_index=4, **SMALL)(_rows(_batch()), None, GraphLayout(_batch()))


def test_species_make_particles_interchangeable_within_an_element_only():
    from molfff.nn import ParticleEGNN

    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(11)
        n, b = 5, 3
        species = [6, 1, 1, 8, 1]  # C, H, H, O, H: atomic numbers as labels
        x = torch.randn(b, n, 3)
        x = (x - x.mean(1, keepdim=True)).reshape(b, n * 3)
        net = _perturb(ParticleEGNN(n, 3, species=species, **SMALL)).requires_grad_(False)
        assert net.net.attr_dim == 3 and net.net.net.embedding.in_features == 3
        y = net(x).reshape(b, n, 3)

        def permuted(order):
            return net(x.reshape(b, n, 3)[:, order].reshape(b, n * 3)).reshape(b, n, 3)

        swap_h = [0, 4, 1, 3, 2]  # the three H among themselves
        torch.testing.assert_close(permuted(swap_h), y[:, swap_h], rtol=1e-12, atol=1e-12)
        swap_c_o = [3, 1, 2, 0, 4]  # C <-> O: an element swap is another molecule
        assert float((permuted(swap_c_o) - y[:, swap_c_o]).abs().max()) > 1e-3

        batch = torch.arange(b).repeat_interleave(n)
        pos, h = x.reshape(b * n, 3), torch.zeros(b * n, 0)
        as_rows = rows_map(lambda t: net(t[:, :3].reshape(b, n * 3)).reshape(b * n, 3))
        check_equivariance(as_rows, pos, h, batch, permute=False)
    finally:
        torch.set_default_dtype(torch.float32)

    with pytest.raises(ValueError, match="either distinguishable=True or species"):
        ParticleEGNN(3, 3, distinguishable=True, species=[1, 1, 6])
    with pytest.raises(ValueError, match="species must be 3 ints"):
        ParticleEGNN(3, 3, species=[1, 6])
    with pytest.raises(ValueError, match="species must be 3 ints"):
        ParticleEGNN(3, 3, species=[1, 6, 1.0])
    with pytest.raises(ValueError, match="species must be 3 ints"):
        ParticleEGNN(3, 3, species=5)
    assert ParticleEGNN(3, 3, species=torch.tensor([1, 6, 1])).species == (1, 6, 1)
    with pytest.raises(ValueError, match=r"expected node attributes \(10, 2\), got None"):
        EGNNFlowNet(2, attr_dim=2, **SMALL)(_rows(_batch()), None, GraphLayout(_batch()))
    with pytest.raises(ValueError, match="without node attributes"):
        EGNNFlowNet(2, **SMALL)(_rows(_batch()), None, GraphLayout(_batch()), torch.ones(10, 1))
    with pytest.raises(TypeError, match="attr_dim must be an int"):
        EGNNFlowNet(2, attr_dim=True)
