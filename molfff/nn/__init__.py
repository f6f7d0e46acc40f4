"""Architectures: dense conditional ResNets; E(n)-equivariant GNNs in :mod:`molfff.nn.egnn`.

The EGNN is not imported here, so dense users do not pay for importing PyG.
"""

from molfff.nn.resnet import ResidualBlock, ResNet, resnet

__all__ = ["ResNet", "ResidualBlock", "resnet"]
