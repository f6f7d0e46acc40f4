"""Dense conditional residual networks, as used for the FFF paper's SBI and tabular experiments.

Network ``y = x + W_out · h_L`` (global skip connection; ``W_out`` is zero at initialisation so
the map starts at the identity), with

    h_0 = act(W_in [x, c] + b),   h_{l+1} = h_l + GLU(W_g [r_l, c]),   r_l = W_2 act(W_1 act(h_l))

where ``GLU(a, b) = a ⊙ σ(b)`` (Dauphin et al. 2017) carries the conditioning ``c`` into the end of
every block. Presets (Draxler et al. 2024, appendix C.1): "S" = 10 residual blocks of width 50;
"L" = two linear layers of width 256 followed by 4 residual blocks of width 256; ReLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class ResidualBlock(nn.Module):
    """``h + GLU(W_g [W_2 act(W_1 act(h)), c])``."""

    def __init__(self, width: int, cond_dim: int = 0, activation: str = "relu"):
        super().__init__()
        self.act = ACTIVATIONS[activation]()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.gate = nn.Linear(width + cond_dim, 2 * width)

    def forward(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        r = self.fc2(self.act(self.fc1(self.act(h))))
        if c is not None:
            r = cat_features(r, c)
        a, b = self.gate(r).chunk(2, dim=-1)
        return h + a * torch.sigmoid(b)  # GLU, written out: functorch has no batched glu_jvp


def check_dense_input(net: nn.Module, x: Tensor, c: Tensor | None) -> None:
    """Raise ValueError unless ``x`` is ``(B, net.dim)`` and ``c`` matches ``net.cond_dim``."""
    name = type(net).__name__
    if x.dim() != 2 or x.shape[1] != net.dim:
        raise ValueError(f"{name} expects (B, {net.dim}) input, got {tuple(x.shape)}")
    if net.cond_dim:
        if c is None or c.shape[-1] != net.cond_dim:
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"{name} expects conditioning (B, {net.cond_dim}), got {got}")
    elif c is not None:
        raise ValueError(f"{name} built without conditioning (cond_dim=0) received c")


def cat_features(a: Tensor, b: Tensor) -> Tensor:
    """Concatenate features, broadcasting a single conditioning row over the batch."""
    if b.shape[0] != a.shape[0]:
        b = b.expand(a.shape[0], *b.shape[1:])
    return torch.cat([a, b], dim=-1)


class ResNet(nn.Module):
    """Conditional residual MLP ``(B, D), (B, C) -> (B, D)`` starting at the identity.

    Args:
        dim: D, data dimension.
        cond_dim: C, conditioning dimension (0: unconditional).
        width: hidden width.
        blocks: number of residual blocks.
        pre_layers: number of plain linear layers (input layer included) before the blocks.
        activation: one of ``relu, silu, tanh, gelu``.
        skip: global skip connection ``y = x + net(x)``.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int = 0,
        width: int = 50,
        blocks: int = 10,
        pre_layers: int = 1,
        activation: str = "relu",
        skip: bool = True,
    ):
        super().__init__()
        if dim < 1 or width < 1 or blocks < 0 or pre_layers < 1 or cond_dim < 0:
            raise ValueError(
                f"invalid ResNet sizes: dim={dim}, cond_dim={cond_dim}, "
                f"width={width}, blocks={blocks}, pre_layers={pre_layers}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        self.dim, self.cond_dim, self.skip = dim, cond_dim, skip
        layers: list[nn.Module] = [nn.Linear(dim + cond_dim, width)]
        for _ in range(pre_layers - 1):
            layers += [ACTIVATIONS[activation](), nn.Linear(width, width)]
        self.pre = nn.Sequential(*layers)
        self.blocks = nn.ModuleList(
            ResidualBlock(width, cond_dim, activation) for _ in range(blocks)
        )
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(width, dim)
        if skip:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c: Tensor | None = None, layout=None) -> Tensor:
        """``(B, D), (B, C) -> (B, D)``; ``layout`` (the flow's) is accepted and ignored."""
        check_dense_input(self, x, c)
        h = self.pre(cat_features(x, c) if self.cond_dim else x)
        for block in self.blocks:
            h = block(h, c if self.cond_dim else None)
        y = self.out(self.act(h))
        return x + y if self.skip else y


PRESETS = {
    "S": {"width": 50, "blocks": 10, "pre_layers": 1, "activation": "relu"},
    "L": {"width": 256, "blocks": 4, "pre_layers": 2, "activation": "relu"},
}


def resnet(preset: str, dim: int, cond_dim: int = 0, **overrides) -> ResNet:
    """Build a paper preset ("S" or "L"), optionally overriding its settings."""
    if preset not in PRESETS:
        raise ValueError(f"unknown ResNet preset {preset!r}; choose from {sorted(PRESETS)}")
    return ResNet(dim, cond_dim, **{**PRESETS[preset], **overrides})
