"""The free-form flow method: surrogate loss, exact log-det, latent distributions, the flow.

Torch only: no Lightning, no file I/O.
"""

from molfff.fff.flow import FreeFormFlow
from molfff.fff.latent import CenteredNormal, StandardNormal
from molfff.fff.layout import DenseLayout, GraphLayout, Layout, ParticleLayout, helmert_basis
from molfff.fff.logdet import jacobian, log_abs_det_jacobian
from molfff.fff.loss import FFFTerms, fff_loss, hutchinson_vectors

__all__ = [
    "CenteredNormal",
    "DenseLayout",
    "FFFTerms",
    "FreeFormFlow",
    "GraphLayout",
    "Layout",
    "ParticleLayout",
    "StandardNormal",
    "fff_loss",
    "helmert_basis",
    "hutchinson_vectors",
    "jacobian",
    "log_abs_det_jacobian",
]
