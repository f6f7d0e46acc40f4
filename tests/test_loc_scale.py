"""The learned location-scale wrappers: start, Jacobian and surrogate gradient in closed form."""

import pytest
import torch
from torch import nn

from molfff.errors import UserError
from molfff.fff import fff_loss
from molfff.nn import ResNet
from molfff.nn.loc_scale import LocScaleInput, LocScaleOutput
from molfff.train.module import FFFModule
from tests.invertible import AffineCoupling


class _Inverse(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, z, c=None, layout=None):
        return self.f.inverse(z, c, layout)


def _log_abs_det(fn, x, c, create_graph=False):
    """``log|det d fn(x, c) / dx|`` per sample from the full Jacobian, ``(B,)``."""
    out = []
    for xi, ci in zip(x, c, strict=True):
        jac = torch.autograd.functional.jacobian(
            lambda t, ci=ci: fn(t[None], ci[None])[0], xi, create_graph=create_graph
        )
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


def _perturbed(module, std=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))
    return module


def test_wrappers_start_as_their_networks():
    torch.manual_seed(0)
    net = _perturbed(ResNet(3, cond_dim=2, width=8, blocks=1))
    x, c = torch.randn(5, 3), torch.randn(5, 2)
    for wrap in (LocScaleInput, LocScaleOutput):
        torch.testing.assert_close(wrap(net, 3, 2, width=8)(x, c), net(x, c))


@pytest.mark.usefixtures("float64")
def test_decoder_log_det_adds_the_log_scale():
    """``log|det J_g| = log|det J_net| + sum_d s_d(c)`` for ``g = mu(c) + exp(s(c)) * net``."""
    torch.manual_seed(1)
    net = AffineCoupling(4)
    dec = LocScaleOutput(net, 4, 3, width=8)
    _perturbed(dec.loc_scale)
    z, c = torch.randn(6, 4), torch.randn(6, 3)
    _, s = dec.loc_scale(c)
    assert s.abs().min() > 1e-3  # the scale is not trivially one
    torch.testing.assert_close(
        _log_abs_det(dec, z, c), _log_abs_det(net, z, c) + s.sum(-1), rtol=1e-10, atol=1e-10
    )


@pytest.mark.usefixtures("float64")
def test_surrogate_gradient_reaches_the_location_scale_exactly():
    """Encoder and decoder sharing one location-scale around an exactly invertible map form an
    exact inverse pair, so with K = D Hutchinson vectors the surrogate's gradient must equal the
    gradient of ``sum log|det J_f(x, c)|`` in every encoder parameter, the location-scale MLP's
    included (which acts through f's input, not its weights alone)."""
    torch.manual_seed(2)
    dim, cond = 4, 3
    coupling = AffineCoupling(dim)
    enc = LocScaleInput(coupling, dim, cond, width=8)
    _perturbed(enc.loc_scale)
    dec = LocScaleOutput(_Inverse(coupling), dim, cond, width=8)
    dec.loc_scale = enc.loc_scale
    x, c = torch.randn(5, dim), torch.randn(5, cond)
    torch.testing.assert_close(dec(enc(x, c), c), x)
    params = list(enc.parameters())
    terms = fff_loss(x, enc, dec, beta=0.0, c=c, hutchinson_samples=dim)
    got = torch.autograd.grad(terms.trace_surrogate.sum(), params)
    want = torch.autograd.grad(_log_abs_det(enc, x, c, create_graph=True).sum(), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)
    assert sum(g.abs().sum() for g in got[-4:]) > 1e-3  # the location-scale MLP is reached


def test_config_builds_the_wrappers_and_refuses_unconditional_data():
    cfg = {"name": "t", "model": {"width": 16, "blocks": 1, "loc_scale": True}}
    module = FFFModule(cfg, 2, 3)
    assert isinstance(module.flow.encoder, LocScaleInput)
    assert isinstance(module.flow.decoder, LocScaleOutput)
    with pytest.raises(UserError, match="model.loc_scale needs conditioning"):
        FFFModule(cfg, 2, 0)


@pytest.mark.usefixtures("float64")
def test_reconstruction_in_the_loc_scale_frame_is_the_inner_pairs():
    """Around one shared location-scale, ``x - g(f(x)) = exp(s) * (net_g(net_f(u)) - u)`` with
    ``u = (x - mu) * exp(-s)``: divided by the decoder's scale, the reconstruction is the inner
    pair's own, in units of the conditional width."""
    torch.manual_seed(3)
    dim, cond = 3, 2
    net_f = _perturbed(ResNet(dim, cond_dim=cond, width=8, blocks=1))
    net_g = _perturbed(ResNet(dim, cond_dim=cond, width=8, blocks=1))
    enc = LocScaleInput(net_f, dim, cond, width=8)
    _perturbed(enc.loc_scale, std=0.5)
    dec = LocScaleOutput(net_g, dim, cond, width=8)
    dec.loc_scale = enc.loc_scale
    x, c = torch.randn(7, dim), torch.randn(7, cond)
    mu, s = enc.loc_scale(c)
    u = (x - mu) * torch.exp(-s)
    inner = ((net_g(net_f(u, c), c) - u) ** 2).sum(-1)
    scale = dec.scale(c)
    torch.testing.assert_close(scale, torch.exp(s))
    plain = fff_loss(x, enc, dec, beta=1.0, c=c)
    framed = fff_loss(x, enc, dec, beta=1.0, c=c, residual_scale=scale)
    torch.testing.assert_close(framed.reconstruction, inner.detach(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(plain.reconstruction, framed.reconstruction)  # s is not zero
    # the scale is a constant weight: no gradient reaches it through the reconstruction
    probe = scale.detach().requires_grad_(True)
    fff_loss(x, enc, dec, beta=1.0, c=c, residual_scale=probe).loss.sum().backward()
    assert probe.grad is None


def test_reconstruction_frame_needs_the_location_scale():
    from molfff.train.config import build_config

    base = {"name": "t", "data": {"name": "toy2d"}}
    with pytest.raises(UserError, match="needs model.loc_scale"):
        build_config({**base, "loss": {"reconstruction_frame": "loc_scale"}})
    with pytest.raises(UserError, match="not one of data, loc_scale"):
        build_config({**base, "loss": {"reconstruction_frame": "posterior"}})


def test_module_trains_in_the_loc_scale_frame():
    """One training step's reconstruction is measured relative to the decoder's width."""
    torch.manual_seed(4)
    cfg = {
        "name": "t",
        "model": {"width": 16, "blocks": 1, "loc_scale": True},
        "loss": {"reconstruction_frame": "loc_scale"},
    }
    module = FFFModule(cfg, 2, 3)
    _perturbed(module.flow.decoder.loc_scale, std=0.5)
    c = torch.randn(4, 3)
    torch.testing.assert_close(module._residual_scale(c), module.flow.decoder.scale(c))
    assert module._residual_scale(c).sub(1).abs().max() > 1e-2
    assert FFFModule({**cfg, "loss": {}}, 2, 3)._residual_scale(c) is None
