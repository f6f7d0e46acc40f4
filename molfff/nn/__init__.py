"""Architectures: dense conditional ResNets (optionally inside a learned conditional
location-scale), the FFF authors' SBI network (an MLP composed with a ResNet on ``[x, c]``);
E(n)-equivariant GNNs (PyG).

Every flow network is called as ``net(x, c, layout)`` (:class:`molfff.fff.FlowNetwork`).
The EGNN classes are imported on first access, so dense users do not pay for importing PyG.
"""

from importlib import import_module

from molfff.nn.loc_scale import LocScale, LocScaleInput, LocScaleOutput
from molfff.nn.mlp_resnet import MLPResNet
from molfff.nn.resnet import ResidualBlock, ResNet, resnet

_LAZY = {
    "EGNN": "molfff.nn.egnn",
    "EGNNFlowNet": "molfff.nn.egnn_flow",
    "ParticleEGNN": "molfff.nn.particles",
    "fully_connected_edges": "molfff.nn.graph",
}

__all__ = [
    "EGNN",
    "EGNNFlowNet",
    "LocScale",
    "LocScaleInput",
    "LocScaleOutput",
    "MLPResNet",
    "ParticleEGNN",
    "ResNet",
    "ResidualBlock",
    "fully_connected_edges",
    "resnet",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'molfff.nn' has no attribute {name!r}")
