"""Dequantization: argmax/floor recover the data, log-dets against brute-force Jacobians,
densities integrate to one (quadrature), E(3)/permutation invariance with permuted noise,
gradients into the conditional EGNN, and input validation."""

import math

import pytest
import torch

from molfff.molecules.dequantization import (
    Dequantizer,
    argmax_log_prob,
    argmax_threshold,
    argmax_threshold_inverse,
    ordinal_dequantize,
    ordinal_dequantize_inverse,
    ordinal_log_prob,
)
from molfff.testing import check_equivariance, check_invariance

SIZES = [3, 5, 1, 4]
K = 5
SMALL = {"hidden": 16, "blocks": 2}


def _molecules(sizes=SIZES, k=K, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    n = batch.numel()
    pos = 1.5 * torch.randn(n, 3, generator=g, dtype=dtype)
    types = torch.randint(0, k, (n,), generator=g)
    one_hot = torch.nn.functional.one_hot(types, k).to(dtype)
    charge = torch.tensor([1, 6, 7, 8, 9, 3, 0, 2])[torch.randint(0, 8, (n,), generator=g)]
    return pos, one_hot, charge.to(dtype).unsqueeze(1), batch


def _perturbed(deq, std=0.1, seed=1):
    """Move every weight off the zero-output start so mu, sigma depend on the molecule."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in deq.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return deq


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("charge_scale", "margin"), [(1.0, 0.0), (10.0, 1e-3), (4.0, 0.2)])
def test_quantize_recovers_types_and_charges(charge_scale, margin):
    torch.manual_seed(0)
    deq = _perturbed(Dequantizer(K, charge_scale=charge_scale, margin=margin, **SMALL))
    pos, one_hot, charge, batch = _molecules()
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        v, log_q = deq(pos, one_hot, charge, batch, generator=g)
        assert v.shape == (pos.shape[0], K + 1) and log_q.shape == (len(SIZES),)
        assert torch.isfinite(log_q).all()
        got_one_hot, got_charge = deq.quantize(v)
        assert torch.equal(got_one_hot, one_hot)
        assert torch.equal(got_charge, charge)
        gap = v[:, :K].max(dim=1).values.unsqueeze(1) - v[:, :K]  # (N, K)
        assert (gap[one_hot == 0] > margin).all()


def test_quantize_is_exact_in_float32_at_saturation():
    """Saturated sigmoids / softpluses in float32 still decode exactly (thanks to the margin)."""
    k, n = 4, 200
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, k, (n,), generator=g)
    u = 60.0 * torch.randn(n, k, generator=g)  # gaps up to |u_k - u_i| ~ 300
    v, log_det = argmax_threshold(u, index, margin=1e-3)
    assert torch.equal(v.argmax(dim=1), index) and torch.isfinite(log_det).all()
    c = torch.randint(0, 10, (n, 1), generator=g).float()
    for u_c in (torch.full((n, 1), 40.0), torch.full((n, 1), -40.0)):  # sigma(u) = 1 or ~0
        vc, _ = ordinal_dequantize(u_c, c, scale=10.0, margin=1e-3)
        assert torch.equal(torch.floor(vc * 10.0), c)
    deq = Dequantizer(k, charge_scale=10.0, hidden=8, blocks=1)
    one_hot, charge = deq.quantize(torch.cat([v, vc], dim=1))
    assert torch.equal(one_hot.argmax(dim=1), index) and torch.equal(charge, c)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_threshold_logdet_matches_brute_force_jacobian(margin):
    g = torch.Generator().manual_seed(0)
    k = 4
    for trial in range(8):
        u = 3.0 * torch.randn(k, generator=g)
        index = torch.tensor([trial % k])
        jac = torch.autograd.functional.jacobian(
            lambda x, i=index: argmax_threshold(x.unsqueeze(0), i, margin)[0].squeeze(0), u
        )
        sign, want = torch.linalg.slogdet(jac)
        _, got = argmax_threshold(u.unsqueeze(0), index, margin)
        assert sign > 0
        torch.testing.assert_close(got, want.unsqueeze(0), atol=1e-12, rtol=1e-12)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("scale", "margin"), [(1.0, 0.0), (10.0, 1e-3)])
def test_ordinal_logdet_matches_brute_force_jacobian(scale, margin):
    g = torch.Generator().manual_seed(0)
    u = 4.0 * torch.randn(1, 3, generator=g)
    c = torch.tensor([[6.0, 0.0, -1.0]])
    jac = torch.autograd.functional.jacobian(
        lambda x: ordinal_dequantize(x, c, scale, margin)[0], u
    ).reshape(3, 3)
    _, want = torch.linalg.slogdet(jac)
    _, got = ordinal_dequantize(u, c, scale, margin)
    torch.testing.assert_close(got, want.unsqueeze(0), atol=1e-12, rtol=1e-12)


@pytest.mark.usefixtures("float64")
def test_inverses_undo_the_forward_maps():
    g = torch.Generator().manual_seed(0)
    u = 3.0 * torch.randn(50, 5, generator=g)
    index = torch.randint(0, 5, (50,), generator=g)
    v, log_det = argmax_threshold(u, index, margin=0.1)
    u2, index2, log_det2 = argmax_threshold_inverse(v, margin=0.1)
    torch.testing.assert_close(u2, u, atol=1e-9, rtol=1e-9)
    assert torch.equal(index2, index)
    torch.testing.assert_close(log_det2, log_det, atol=1e-9, rtol=1e-9)
    uc = 3.0 * torch.randn(50, 1, generator=g)
    c = torch.randint(-2, 10, (50, 1), generator=g).double()
    vc, ld = ordinal_dequantize(uc, c, scale=10.0, margin=0.01)
    uc2, c2, ld2 = ordinal_dequantize_inverse(vc, scale=10.0, margin=0.01)
    torch.testing.assert_close(uc2, uc, atol=1e-9, rtol=1e-9)
    assert torch.equal(c2, c)
    torch.testing.assert_close(ld2, ld, atol=1e-9, rtol=1e-9)


@pytest.mark.usefixtures("float64")
def test_outside_the_support_has_zero_density():
    mu, ls = torch.zeros(3, 3), torch.zeros(3, 3)
    v = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.95, 0.0], [2.0, 0.0, 1.0]])  # tie, in margin, fine
    lq, _ = argmax_log_prob(v, mu, ls, margin=0.1)
    assert lq[0] == -math.inf and lq[1] == -math.inf and torch.isfinite(lq[2])
    vc = torch.tensor([[0.6001], [0.6999], [0.65]])  # within margin 0.02 of the cell [6, 7) / 10
    lq, _ = ordinal_log_prob(vc, torch.zeros(3, 1), torch.zeros(3, 1), scale=10.0, margin=0.02)
    assert lq[0] == -math.inf and lq[1] == -math.inf and torch.isfinite(lq[2])


def _trapezoid_weights(x):
    w = torch.full_like(x, float(x[1] - x[0]))
    w[0] = w[-1] = 0.5 * float(x[1] - x[0])
    return w


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(
    ("mu", "sigma", "k", "margin"),
    [
        ([0.3, -0.5], [0.7, 1.3], 1, 0.0),
        ([0.3, -0.5, 1.0], [0.7, 1.3, 0.9], 1, 0.05),
        ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 2, 0.0),
    ],
)
def test_argmax_density_integrates_to_one(mu, sigma, k, margin):
    """∫ q(v) dv = 1 over {argmax v = k}, on the test's own coordinates (a, w_i):
    v_k = a, v_i = a - margin - exp(w_i), dv = exp(sum_i w_i) da dw."""
    n_types = len(mu)
    a = torch.linspace(mu[k] - 9 * sigma[k], mu[k] + 9 * sigma[k], 81)
    w = torch.linspace(-20.0, 4.0, 101)
    axes = [a] + [w] * (n_types - 1)
    grids = torch.meshgrid(*axes, indexing="ij")
    weights = math.prod(torch.meshgrid(*[_trapezoid_weights(x) for x in axes], indexing="ij"))
    cols, jac = [], torch.zeros_like(grids[0])
    others = iter(grids[1:])
    for i in range(n_types):
        if i == k:
            cols.append(grids[0])
        else:
            wi = next(others)
            cols.append(grids[0] - margin - torch.exp(wi))
            jac = jac + wi
    v = torch.stack([c.reshape(-1) for c in cols], dim=1)  # (P, K)
    mu_t = torch.tensor(mu).expand_as(v)
    ls_t = torch.tensor(sigma).log().expand_as(v)
    log_q, index = argmax_log_prob(v, mu_t, ls_t, margin)
    assert (index == k).all()
    total = (torch.exp(log_q + jac.reshape(-1)) * weights.reshape(-1)).sum()
    assert abs(float(total) - 1.0) < 1e-7, float(total)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("scale", "margin"), [(1.0, 0.0), (10.0, 1e-3), (0.5, 0.1)])
def test_ordinal_density_integrates_to_one(scale, margin):
    """∫ q(v) dv = 1 over the cell of charge c, in the test's coordinate v = (c + e^w) / a
    (lower half) and v = (c + 1 - e^w) / a (upper half), dv = e^w dw / a."""
    c, mu, sigma = 6.0, 0.4, 1.3
    w = torch.linspace(-40.0, math.log(0.5), 20001)
    wts = _trapezoid_weights(w)
    total = 0.0
    for v in ((c + torch.exp(w)) / scale, (c + 1 - torch.exp(w)) / scale):
        v = v.unsqueeze(1)
        log_q, cc = ordinal_log_prob(
            v, torch.full_like(v, mu), torch.full_like(v, math.log(sigma)), scale, margin
        )
        assert (cc[torch.isfinite(log_q)] == c).all()
        q = torch.where(torch.isfinite(log_q), torch.exp(log_q), 0.0)
        total += float((q * torch.exp(w) / scale * wts).sum())
    assert abs(total - 1.0) < 1e-6, total


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("type_offset", [0.0, 3.0])
def test_log_q_matches_log_prob_and_the_parts(type_offset):
    torch.manual_seed(0)
    deq = _perturbed(Dequantizer(K, charge_scale=10.0, type_offset=type_offset, **SMALL))
    pos, one_hot, charge, batch = _molecules()
    eps = torch.randn(pos.shape[0], K + 1, generator=torch.Generator().manual_seed(3))
    v, log_q = deq(pos, one_hot, charge, batch, eps=eps)
    torch.testing.assert_close(deq.log_prob(pos, v, batch), log_q, atol=1e-9, rtol=1e-9)
    mu, log_sigma = deq.conditional(pos, one_hot, charge, batch)
    u = mu + log_sigma.exp() * eps
    _, ld_t = argmax_threshold(u[:, :K], one_hot.argmax(dim=1), deq.margin)
    _, ld_c = ordinal_dequantize(u[:, K:], charge, 10.0, deq.margin)
    log_n = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(u).sum(dim=1)
    per_node = log_n - ld_t - ld_c
    want = torch.zeros(len(SIZES)).index_add(0, batch, per_node)
    torch.testing.assert_close(log_q, want, atol=1e-12, rtol=1e-12)
    # a trailing empty molecule gets log q = 0
    _, log_q5 = deq(pos, one_hot, charge, batch, eps=eps, num_graphs=5)
    torch.testing.assert_close(log_q5[:4], log_q)
    assert log_q5[4] == 0


@pytest.mark.usefixtures("float64")
def test_initial_q_is_standard_normal_in_u():
    """Zero output layer: mu = 0, sigma = 1; log q is then known in closed form from eps."""
    deq = Dequantizer(K, **SMALL)
    pos, one_hot, charge, batch = _molecules()
    mu, log_sigma = deq.conditional(pos, one_hot, charge, batch)
    assert torch.equal(mu, torch.zeros_like(mu)) and torch.equal(log_sigma, torch.zeros_like(mu))
    eps = torch.randn(pos.shape[0], K + 1, generator=torch.Generator().manual_seed(0))
    v, log_q = deq(pos, one_hot, charge, batch, eps=eps)
    k = one_hot.argmax(dim=1, keepdim=True)
    u_k = eps.gather(1, k)
    # closed form: log q = log N(eps) - sum_{i≠k} log σ(u_k - u_i) - log σ'(u_c) - log(1 - 2δ)
    lsig = torch.nn.functional.logsigmoid
    log_n = -0.5 * (eps**2).sum(dim=1) - 0.5 * (K + 1) * math.log(2 * math.pi)
    thr = (lsig(u_k - eps[:, :K]) * (1 - one_hot)).sum(dim=1)
    uc = eps[:, K]
    per_node = log_n - thr - (lsig(uc) + lsig(-uc)) - math.log(1 - 2 * deq.margin)
    want = torch.zeros(len(SIZES)).index_add(0, batch, per_node)
    torch.testing.assert_close(log_q, want, atol=1e-12, rtol=1e-12)


@pytest.mark.usefixtures("float64")
def test_type_offset_places_q_inside_the_true_types_cone():
    """mu starts at offset * one_hot on the type columns (0 on the charge), sigma at 1; with a
    large offset almost no threshold is active, so v is close to u and the log-det small."""
    deq = Dequantizer(K, type_offset=4.0, **SMALL)
    pos, one_hot, charge, batch = _molecules()
    mu, log_sigma = deq.conditional(pos, one_hot, charge, batch)
    torch.testing.assert_close(mu[:, :K], 4.0 * one_hot, atol=0, rtol=0)
    assert torch.equal(mu[:, K:], torch.zeros_like(mu[:, K:]))
    assert torch.equal(log_sigma, torch.zeros_like(log_sigma))
    eps = torch.randn(pos.shape[0], K + 1, generator=torch.Generator().manual_seed(0))
    v, _ = deq(pos, one_hot, charge, batch, eps=eps)
    u = mu + eps
    # v_i = u_k - delta - softplus(u_k - u_i) -> u_i - delta when u_k - u_i is large
    gap = (u[:, :K] * one_hot).sum(1, keepdim=True) - u[:, :K]
    far = (gap > 2) | one_hot.bool()
    assert far.float().mean() > 0.8
    err = (v[:, :K] - u[:, :K] + deq.margin * (1 - one_hot)).abs()
    assert bool((err[far] < torch.nn.functional.softplus(-gap[far]) + 1e-12).all())


@pytest.mark.usefixtures("float64")
def test_invariance_with_permuted_noise():
    """g = (R incl. reflections, t, P): v(g·x, P h, P eps) = P v(x, h, eps), log q unchanged."""
    torch.manual_seed(0)
    deq = _perturbed(Dequantizer(K, charge_scale=10.0, **SMALL))
    pos, one_hot, charge, batch = _molecules()
    eps = torch.randn(pos.shape[0], K + 1, generator=torch.Generator().manual_seed(4))
    h = torch.cat([one_hot, charge, eps], dim=1)  # the harness permutes noise with the atoms

    def sample(p, hh, b):
        v, _ = deq(p, hh[:, :K], hh[:, K : K + 1], b, eps=hh[:, K + 1 :])
        return p, v

    def log_q(p, hh, b):
        return deq(p, hh[:, :K], hh[:, K : K + 1], b, eps=hh[:, K + 1 :])[1]

    g = torch.Generator().manual_seed(5)
    check_equivariance(sample, pos, h, batch, trials=3, generator=g)
    check_invariance(log_q, pos, h, batch, trials=3, generator=g)
    # and the conditional really depends on the geometry (the test is not vacuous)
    mu, _ = deq.conditional(pos, one_hot, charge, batch)
    mu2, _ = deq.conditional(1.3 * pos, one_hot, charge, batch)
    assert (mu - mu2).abs().max() > 1e-3


@pytest.mark.usefixtures("float64")
def test_gradients_reach_the_conditional_network():
    torch.manual_seed(0)
    pos, one_hot, charge, batch = _molecules()
    deq = Dequantizer(K, **SMALL)
    v, log_q = deq(pos, one_hot, charge, batch, generator=torch.Generator().manual_seed(0))
    (log_q.sum() + (v**2).sum()).backward()
    assert deq.net.embedding_out.weight.grad.abs().sum() > 0  # zero start still learns
    deq = _perturbed(Dequantizer(K, **SMALL))
    v, log_q = deq(pos, one_hot, charge, batch, generator=torch.Generator().manual_seed(0))
    (log_q.sum() + (v**2).sum()).backward()
    last_coord = f"net.blocks.{SMALL['blocks'] - 1}.coord."  # positions of the last block unused
    for name, p in deq.named_parameters():
        if name.startswith(last_coord):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _bad(n=4, k=3):
    pos = torch.randn(n, 3)
    one_hot = torch.nn.functional.one_hot(torch.arange(n) % k, k).float()
    return pos, one_hot, torch.full((n, 1), 6.0), torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: (a[0][:, 0], *a[1:]), "pos"),
        (lambda a: (a[0].long(), *a[1:]), "pos"),
        (lambda a: (a[0], a[1][:, :2], *a[2:]), "one_hot"),
        (lambda a: (a[0], 0.5 * a[1], *a[2:]), "one_hot"),
        (lambda a: (a[0], a[1] + a[1].roll(1, dims=1), *a[2:]), "one_hot"),
        (lambda a: (a[0], a[1], a[2][:, 0], a[3]), "charge"),
        (lambda a: (a[0], a[1], a[2] + 0.5, a[3]), "charge"),
        (lambda a: (a[0], a[1], a[2] * math.nan, a[3]), "charge"),
        (lambda a: (*a[:3], a[3][:3]), "batch"),
        (lambda a: (*a[:3], a[3].float()), "batch"),
    ],
)
def test_bad_inputs_raise(change, match):
    deq = Dequantizer(3, hidden=8, blocks=1)
    with pytest.raises(ValueError, match=match):
        deq(*change(_bad()))


def test_bad_arguments_raise():
    deq = Dequantizer(3, hidden=8, blocks=1)
    pos, one_hot, charge, batch = _bad()
    with pytest.raises(ValueError, match="eps"):
        deq(pos, one_hot, charge, batch, eps=torch.randn(4, 3))
    with pytest.raises(ValueError, match="num_graphs"):
        deq(pos, one_hot, charge, torch.tensor([0, 0, 1, 1]), num_graphs=1)
    with pytest.raises(ValueError, match="v must be"):
        deq.quantize(torch.randn(4, 3))
    with pytest.raises(ValueError, match="v must be"):
        deq.log_prob(pos, torch.randn(4, 5), batch)
    for kwargs in (
        {"num_types": 0},
        {"charge_scale": 0.0},
        {"margin": 0.5},
        {"margin": -0.1},
        {"type_offset": math.inf},
    ):
        with pytest.raises(ValueError, match="num_types|charge_scale|margin|type_offset"):
            Dequantizer(**{"num_types": 3, **kwargs})
    with pytest.raises(ValueError, match="index"):
        argmax_threshold(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="index"):
        argmax_threshold(torch.randn(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        ordinal_dequantize(torch.randn(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        argmax_log_prob(torch.randn(2, 3), torch.zeros(2, 2), torch.zeros(2, 3))
