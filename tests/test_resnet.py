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
