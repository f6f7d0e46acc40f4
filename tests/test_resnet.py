import pytest
import torch

from molfff.nn import ResNet, resnet


def test_starts_at_identity():
    net = ResNet(5, cond_dim=3)
    x, c = torch.randn(4, 5), torch.randn(4, 3)
    torch.testing.assert_close(net(x, c), x)


def test_conditioning_reaches_every_block():
    torch.manual_seed(0)
    net = ResNet(3, cond_dim=2, width=16, blocks=2)
    torch.nn.init.normal_(net.out.weight)
    x = torch.randn(6, 3)
    a = net(x, torch.zeros(6, 2))
    b = net(x, torch.ones(6, 2))
    assert (a - b).abs().max() > 1e-3
    # and through the GLU gates, not only the input layer
    net.pre[0].weight.data[:, 3:] = 0
    assert (net(x, torch.zeros(6, 2)) - net(x, torch.ones(6, 2))).abs().max() > 1e-3


def test_presets_match_paper_sizes():
    s, large = resnet("S", 4), resnet("L", 4)
    assert len(s.blocks) == 10 and s.out.in_features == 50
    assert len(large.blocks) == 4 and large.out.in_features == 256
    assert sum(isinstance(m, torch.nn.Linear) for m in large.pre) == 2


def test_shape_errors():
    net = ResNet(3, cond_dim=2)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net(torch.zeros(2, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="conditioning"):
        net(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="without conditioning"):
        ResNet(3)(torch.zeros(2, 3), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="preset"):
        resnet("XL", 3)


def test_model_skip_config_builds_a_network_without_the_global_skip():
    """``model.skip=false``: default initialisation, not the identity at the start."""
    from molfff.train.config import load_config
    from molfff.train.module import build_network

    x = torch.randn(8, 2)
    for skip in (True, False):
        cfg = load_config("toy2d", [f"model.skip={str(skip).lower()}"])
        net = build_network(cfg, 2, 0)
        assert net.skip is skip
        assert torch.equal(net(x), x) is skip


def _manual_mlp(seq, v):
    """The Sequential's linear layers with SiLU between them, written out."""
    linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears):
        v = torch.nn.functional.linear(v, lin.weight, lin.bias)
        if i < len(linears) - 1:
            v = torch.nn.functional.silu(v)
    return v


def test_mlp_resnet_is_the_documented_composition():
    """Encoder: MLP on [x, c], residual blocks on [y, c], linear to D. Decoder: linear on
    [z, c], the blocks, the MLP on [s[:D], c]. Written out from the module docstring."""
    from molfff.nn import MLPResNet

    torch.manual_seed(0)
    x, c = torch.randn(5, 3), torch.randn(5, 2)
    enc = MLPResNet(3, 2, width=16, blocks=2, pre_layers=2, role="encoder")
    dec = MLPResNet(3, 2, width=16, blocks=2, pre_layers=2, role="decoder")
    assert sum(isinstance(m, torch.nn.Linear) for m in enc.mlp) == 3  # D+C -> 16 -> 16 -> D
    s = torch.cat([_manual_mlp(enc.mlp, torch.cat([x, c], 1)), c], 1)
    for block in enc.blocks:
        s = s + _manual_mlp(block, s)
    torch.testing.assert_close(enc(x, c), enc.linear(s))
    s = dec.linear(torch.cat([x, c], 1))
    assert s.shape == (5, 5)
    for block in dec.blocks:
        s = s + _manual_mlp(block, s)
    torch.testing.assert_close(dec(x, c), _manual_mlp(dec.mlp, torch.cat([s[:, :3], c], 1)))
    # not the identity at the start (PyTorch's default initialisation, no global skip)
    assert (enc(x, c) - x).abs().max() > 1e-2


def test_mlp_resnet_conditioning_reaches_the_residual_stream():
    from molfff.nn import MLPResNet

    torch.manual_seed(1)
    enc = MLPResNet(3, 2, width=16, blocks=1)
    with torch.no_grad():
        enc.mlp[0].weight[:, 3:] = 0  # the MLP no longer sees c
    x = torch.randn(6, 3)
    assert (enc(x, torch.zeros(6, 2)) - enc(x, torch.ones(6, 2))).abs().max() > 1e-3
    unconditional = MLPResNet(3, width=16, blocks=1, role="decoder")
    assert unconditional(x).shape == (6, 3)


def test_mlp_resnet_bad_input():
    from molfff.nn import MLPResNet

    with pytest.raises(ValueError, match="role"):
        MLPResNet(3, role="middle")
    with pytest.raises(ValueError, match="sizes"):
        MLPResNet(3, width=0)
    net = MLPResNet(3, cond_dim=2)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net(torch.zeros(2, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="conditioning"):
        net(torch.zeros(2, 3))


def test_model_network_mlp_resnet_builds_mirrored_networks():
    from molfff.errors import UserError
    from molfff.nn import LocScaleInput, MLPResNet
    from molfff.train.config import load_config
    from molfff.train.module import build_network

    cfg = load_config("sbi/two_moons", ["model.network=mlp_resnet"])
    enc, dec = (build_network(cfg, 2, 2, role=r) for r in ("encoder", "decoder"))
    assert isinstance(enc, MLPResNet) and isinstance(dec, MLPResNet)
    assert (enc.role, dec.role) == ("encoder", "decoder")
    assert enc.linear.out_features == 2 and dec.linear.out_features == 4
    assert len(enc.blocks) == cfg.model.blocks
    cfg = load_config("sbi/two_moons", ["model.network=mlp_resnet", "model.loc_scale=true"])
    assert isinstance(build_network(cfg, 2, 2).net, MLPResNet)
    assert isinstance(build_network(cfg, 2, 2), LocScaleInput)
    cfg = load_config("sbi/two_moons", ["model.network=mlp_resnet", "model.preset=L"])
    with pytest.raises(UserError, match="preset"):
        build_network(cfg, 2, 2)
