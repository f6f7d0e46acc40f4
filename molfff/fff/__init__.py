"""The free-form flow method: surrogate loss, exact log-det, latent distributions, the flow.

Torch only (PyG's ``scatter`` for per-graph sums, imported when a graph layout needs it): no
Lightning, no file I/O. Networks are called as ``net(x, c, layout)`` (:class:`FlowNetwork`).
"""

from molfff.fff.flow import FreeFormFlow, Inversion
from molfff.fff.graph import fully_connected_edges
from molfff.fff.inverse import DecoderPreimage, implicit_preimage, invert_decoder
from molfff.fff.latent import CenteredNormal, StandardNormal
from molfff.fff.layout import DenseLayout, GraphLayout, Layout, ParticleLayout, helmert_basis
from molfff.fff.logdet import jacobian, log_abs_det_jacobian
from molfff.fff.loss import FFFTerms, fff_loss, hutchinson_vectors
from molfff.fff.network import FlowNetwork

__all__ = [
    "CenteredNormal",
    "DenseLayout",
    "FFFTerms",
    "FlowNetwork",
    "FreeFormFlow",
    "DecoderPreimage",
    "Inversion",
    "GraphLayout",
    "Layout",
    "ParticleLayout",
    "StandardNormal",
    "fff_loss",
    "fully_connected_edges",
    "helmert_basis",
    "hutchinson_vectors",
    "implicit_preimage",
    "invert_decoder",
    "jacobian",
    "log_abs_det_jacobian",
]
