"""A linear FFF trained with the surrogate on a correlated Gaussian reaches its entropy."""

import math

import pytest
import torch

from molfff.fff import FreeFormFlow


class Linear(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)
        torch.nn.init.eye_(self.lin.weight)
        torch.nn.init.zeros_(self.lin.bias)

    def forward(self, x, c=None, layout=None):
        return self.lin(x)


@pytest.mark.usefixtures("float64")
def test_linear_fff_reaches_true_entropy():
    torch.manual_seed(0)
    dim = 3
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.4]])
    mean = torch.tensor([1.0, -2.0, 0.5])
    cov = a @ a.T
    entropy = 0.5 * torch.logdet(2 * math.pi * math.e * cov).item()
    data = torch.randn(20000, dim) @ a.T + mean
    test = torch.randn(20000, dim) @ a.T + mean

    flow = FreeFormFlow(Linear(dim), Linear(dim), event_shape=(dim,))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2000], gamma=0.1)
    for _ in range(3000):
        x = data[torch.randint(0, len(data), (256,))]
        opt.zero_grad()
        flow.loss(x, beta=10.0).loss.mean().backward()
        opt.step()
        sched.step()
    nll = -flow.log_prob(test).mean().item()
    # the true density's NLL on the same points removes most of the sampling noise
    true_nll = -torch.distributions.MultivariateNormal(mean, cov).log_prob(test).mean().item()
    assert abs(true_nll - entropy) < 0.03
    assert abs(nll - true_nll) < 0.05, (nll, true_nll, entropy)
    assert abs(nll - entropy) < 0.05


@pytest.mark.usefixtures("float64")
def test_sample_log_prob_is_the_decoder_pushforward_density():
    """log q of a sample is log N(z) - log|det A| at the z it came from, even if f ≠ g^-1."""
    torch.manual_seed(1)
    dim = 3
    encoder, decoder = Linear(dim), Linear(dim)
    a = torch.tensor([[2.0, 0.0, 0.0], [0.5, 0.7, 0.0], [-0.3, 0.2, 1.5]])
    with torch.no_grad():
        decoder.lin.weight.copy_(a)
        decoder.lin.bias.copy_(torch.tensor([1.0, -1.0, 0.5]))
        encoder.lin.weight.copy_(torch.linalg.inv(a))  # the exact inverse, bias below
        encoder.lin.bias.copy_(-torch.linalg.inv(a) @ torch.tensor([1.0, -1.0, 0.5]))
    flow = FreeFormFlow(encoder, decoder, event_shape=(dim,))
    g = torch.Generator().manual_seed(0)
    x, log_q = flow.sample_with_log_prob(500, generator=g)
    z = torch.linalg.solve(a, (x - decoder.lin.bias).T).T
    closed = -0.5 * (z**2).sum(1) - 0.5 * dim * math.log(2 * math.pi) - torch.logdet(a).abs().item()
    torch.testing.assert_close(log_q, closed, rtol=1e-10, atol=1e-10)
    # the same draws as `sample`, and with an exact inverse encoder the same density as log_prob
    x2 = flow.sample(500, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x2, rtol=0, atol=0)
    torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-10, atol=1e-10)
    # an encoder that does not invert the decoder changes the paper's estimate, but neither the
    # sampler's q nor the exact log_prob (Newton finds the decoder's preimage from f(x))
    with torch.no_grad():
        encoder.lin.weight.mul_(1.1)
    x3, log_q3 = flow.sample_with_log_prob(500, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_q3, closed, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert (flow.log_prob_estimate(x3) - closed).abs().max() > 1e-2
        torch.testing.assert_close(flow.log_prob(x3), closed, rtol=1e-10, atol=1e-10)
