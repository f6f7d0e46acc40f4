"""Architectures: dense conditional ResNets (and, for molecules, E(n)-equivariant GNNs)."""

from molfff.nn.resnet import ResNet, ResidualBlock, resnet

__all__ = ["ResNet", "ResidualBlock", "resnet"]
