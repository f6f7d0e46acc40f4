"""The FFF authors' dense SBI architecture: an MLP composed with a ResNet on ``[x, c]``.

vislearn/FFF's SBI config (``configs/fff/sbi_base.yaml``) stacks two networks, each mapping data
dimension D to D: a plain MLP, then a ResNet whose residual stream is the conditioned vector
``[x, c]`` itself (D + C wide, the conditioning updated along with the data), closed by a linear
map back to D. The encoder and decoder mirror each other:

    f(x, c):  y = MLP_f([x, c]);   s = [y, c];   s <- s + B_k(s) for each block;   z = A_f s
    g(z, c):  s = A_g [z, c];      s <- s + B_k(s) for each block;   x = MLP_g([s[:D], c])

with ``MLP: D + C -> width (x pre_layers) -> D`` and blocks ``B_k: D + C -> width -> width ->
D + C``, the activation between every pair of linear layers, PyTorch's default initialisation
and no skip around the whole map (so it does not start at the identity). It differs from
:class:`molfff.nn.ResNet`, whose residual stream is ``width`` hidden units with a zero-started
global skip in data space and gates for the conditioning.
"""

from __future__ import annotations

from torch import Tensor, nn

from molfff.nn.resnet import ACTIVATIONS, cat_features, check_dense_input


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class MLPResNet(nn.Module):
    """``(B, D), (B, C) -> (B, D)``: the authors' SBI encoder or decoder (module docstring).

    Args:
        dim: D, data dimension.
        cond_dim: C, conditioning dimension (0: unconditional; the stream is then D wide).
        width: hidden width of the MLP and of every block.
        blocks: number of residual blocks on ``[x, c]``.
        pre_layers: hidden layers of the MLP (the authors' ``[256, 256]``: 2).
        activation: one of ``relu, silu, tanh, gelu``.
        role: ``"encoder"`` (MLP first) or ``"decoder"`` (MLP last).

    Raises:
        ValueError: on sizes below their minimum, an unknown activation or role.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int = 0,
        width: int = 256,
        blocks: int = 2,
        pre_layers: int = 2,
        activation: str = "silu",
        role: str = "encoder",
    ):
        super().__init__()
        if dim < 1 or cond_dim < 0 or width < 1 or blocks < 0 or pre_layers < 1:
            raise ValueError(
                f"invalid MLPResNet sizes: dim={dim}, cond_dim={cond_dim}, width={width}, "
                f"blocks={blocks}, pre_layers={pre_layers}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        if role not in ("encoder", "decoder"):
            raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
        self.dim, self.cond_dim, self.role = dim, cond_dim, role
        stream = dim + cond_dim
        self.mlp = _mlp([stream, *[width] * pre_layers, dim], activation)
        self.blocks = nn.ModuleList(
            _mlp([stream, width, width, stream], activation) for _ in range(blocks)
        )
        # encoder: [x, c] -> z after the blocks; decoder: [z, c] -> stream before them
        self.linear = nn.Linear(stream, dim if role == "encoder" else stream)

    def _with_c(self, x: Tensor, c: Tensor | None) -> Tensor:
        return cat_features(x, c) if self.cond_dim else x

    def _residual(self, s: Tensor) -> Tensor:
        for block in self.blocks:
            s = s + block(s)
        return s

    def forward(self, x: Tensor, c: Tensor | None = None, layout=None) -> Tensor:
        """``(B, D), (B, C) -> (B, D)``; ``layout`` (the flow's) is accepted and ignored."""
        check_dense_input(self, x, c)
        if self.role == "encoder":
            y = self.mlp(self._with_c(x, c))
            return self.linear(self._residual(self._with_c(y, c)))
        s = self._residual(self.linear(self._with_c(x, c)))
        return self.mlp(self._with_c(s[:, : self.dim], c))
