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

    def forward(self, x, c=None):
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
