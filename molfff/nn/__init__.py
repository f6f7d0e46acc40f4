"""Architectures: dense conditional ResNets (and, for molecules, E(n)-equivariant GNNs)."""

from molfff.nn.resnet import ResidualBlock, ResNet, resnet

__all__ = ["ResNet", "ResidualBlock", "resnet"]
