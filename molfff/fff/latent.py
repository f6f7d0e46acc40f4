"""Latent distributions p_Z of the flow.

Both are standard normals on the space the layout describes. For full-dimensional data that is
``N(0, I_D)``. For particles with zero centre of mass it is the isotropic normal restricted to the
``m = (n-1)·d`` dimensional subspace ``{z : sum_i z_i = 0}``, with density with respect to the
Lebesgue measure of that subspace (Köhler et al. 2020; Satorras et al. 2021):

    log p_Z(z) = -||z||^2 / 2 - (m / 2) log(2π),      m = (n - 1)·d.

The normalising constant is the ``m``-dimensional one, which is what makes the density integrate
to one on the subspace (tested in ``tests/test_latent.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from molfff.fff.layout import Layout, ParticleLayout, standard_normal_log_norm


class StandardNormal:
    """``N(0, I)`` on the layout's space (full space or subspace).

    Methods take the layout describing the batch, so one object serves every batch shape.
    """

    def log_prob(self, z: Tensor, layout: Layout) -> Tensor:
        """``log p_Z(z) = -||z||^2/2 - (m/2) log 2π`` per sample, ``(B,)``."""
        return -0.5 * layout.sum_per_sample(z**2) + standard_normal_log_norm(layout.dims(z))

    def sample(
        self, like: Tensor, layout: Layout, generator: torch.Generator | None = None
    ) -> Tensor:
        """A sample shaped like ``like`` (which only provides shape, dtype and device)."""
        return layout.randn(like, generator=generator)

    def log_normalizer(self, z: Tensor, layout: Layout) -> Tensor:
        """The constant part ``-(m/2) log 2π`` per sample, ``(B,)``.

        Some papers (flow matching for Boltzmann generators, the FFF paper's Table 1) report NLLs
        without it; subtract it from ``log_prob`` to convert.
        """
        return standard_normal_log_norm(layout.dims(z))


class CenteredNormal(StandardNormal):
    """Zero-centre-of-mass normal over ``n`` particles in ``d`` dimensions, on ``(B, n·d)`` rows.

    Convenience wrapper owning its :class:`ParticleLayout`; ``log_prob`` checks that ``z`` is
    centred, since the density is zero (``-inf`` log-density) off the subspace.
    """

    def __init__(self, n_particles: int, spatial_dim: int):
        self.layout = ParticleLayout(n_particles, spatial_dim)

    def log_prob(self, z: Tensor, layout: Layout | None = None) -> Tensor:
        layout = self.layout if layout is None else layout
        com = z.reshape(z.shape[0], self.layout.n_particles, -1).mean(dim=1)
        scale = z.abs().amax().clamp(min=1.0)
        if bool((com.abs() > 1e-4 * scale).any()):
            raise ValueError(
                "CenteredNormal.log_prob: z has a non-zero centre of mass "
                f"(largest |mean| {com.abs().max().item():.3g})"
            )
        return super().log_prob(z, layout)

    def sample(
        self,
        like: Tensor | int,
        layout: Layout | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample; ``like`` may be an int B to draw ``(B, n·d)`` float tensors."""
        if isinstance(like, int):
            like = torch.empty(like, self.layout.n_particles * self.layout.spatial_dim)
        return super().sample(like, self.layout if layout is None else layout, generator)
