"""The free-form flow object: encoder f, decoder g, latent p_Z, and the batch layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molfff.fff.latent import StandardNormal
from molfff.fff.layout import DenseLayout, Layout
from molfff.fff.logdet import log_abs_det_jacobian
from molfff.fff.loss import FFFTerms, fff_loss


class FreeFormFlow(nn.Module):
    """A normalizing flow made of any dimension-preserving encoder/decoder pair.

    ``encoder(x, c)`` and ``decoder(z, c)`` are modules mapping a batch to a batch of the same
    shape (``c`` may be None). Training uses :meth:`loss`; the exact density uses the decoder
    Jacobian; sampling is one decoder pass.

    Args:
        encoder: f, data -> latent.
        decoder: g, latent -> data; trained to invert f.
        latent: p_Z; standard normal on the layout's space by default.
        layout: batch structure for dense data (graphs pass theirs per call).
        event_shape: shape of one dense sample, used by ``sample(n)``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent: StandardNormal | None = None,
        layout: Layout | None = None,
        event_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent = StandardNormal() if latent is None else latent
        self.layout = DenseLayout() if layout is None else layout
        self.event_shape = event_shape

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """``z = f(x)``."""
        return self.encoder(x, c)

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """``x = g(z)``."""
        return self.decoder(z, c)

    def loss(
        self,
        x: Tensor,
        beta: float,
        c: Tensor | None = None,
        layout: Layout | None = None,
        **kwargs,
    ) -> FFFTerms:
        """Surrogate training terms; see :func:`molfff.fff.loss.fff_loss` for kwargs."""
        return fff_loss(
            x,
            self.encoder,
            self.decoder,
            beta,
            c=c,
            layout=self.layout if layout is None else layout,
            latent=self.latent,
            **kwargs,
        )

    def log_prob(
        self,
        x: Tensor,
        c: Tensor | None = None,
        layout: Layout | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Exact model log-density ``log p_Z(f(x)) - log|det J_g(f(x))|``, ``(B,)``.

        Exact for the model whose density is defined by the decoder g pushing p_Z forward, at
        points reconstructed by ``g(f(x)) ≈ x`` (paper eq. 4).
        """
        layout = self.layout if layout is None else layout
        with torch.no_grad():
            z = self.encode(x, c)
            log_det = log_abs_det_jacobian(
                lambda t: self.decode(t, c), z, layout, chunk_size=chunk_size
            )
            return self.latent.log_prob(z, layout) - log_det

    @torch.no_grad()
    def sample_with_log_prob(
        self,
        n: int | None = None,
        c: Tensor | None = None,
        *,
        like: Tensor | None = None,
        layout: Layout | None = None,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Samples ``x = g(z)`` with their exact log-density ``log p_Z(z) - log|det J_g(z)|``.

        The density of what the sampler produces, evaluated at the latent each sample came from
        (change of variables through the decoder); unlike :meth:`log_prob` it does not re-encode
        ``x``, so it stays exact where ``f(g(z)) ≠ z``. This is the ``q(x)`` of importance
        weights ``w = exp(-u(x)) / q(x)`` (Noé et al. 2019, Boltzmann generators).

        Args: as :meth:`sample`, plus ``chunk_size`` of the Jacobian's columns.

        Returns:
            ``x`` shaped like z, and ``log q(x)`` ``(B,)``.
        """
        layout = self.layout if layout is None else layout
        z = self._draw_latent(n, like, layout, generator)
        x = self.decode(z, c)
        log_det = log_abs_det_jacobian(
            lambda t: self.decode(t, c), z, layout, chunk_size=chunk_size
        )
        return x, self.latent.log_prob(z, layout) - log_det

    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        c: Tensor | None = None,
        *,
        like: Tensor | None = None,
        layout: Layout | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``x = g(z)``, ``z ~ p_Z``: one decoder evaluation.

        Args:
            n: number of dense samples (needs ``event_shape``); or give ``like``.
            c: conditioning, one row per sample.
            like: template tensor providing shape, dtype and device of z.
            layout: batch structure of ``like`` (defaults to the flow's).
        """
        layout = self.layout if layout is None else layout
        return self.decode(self._draw_latent(n, like, layout, generator), c)

    def _draw_latent(
        self,
        n: int | None,
        like: Tensor | None,
        layout: Layout,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``z ~ p_Z`` shaped like ``like``, or ``(n, *event_shape)`` in the parameters' dtype."""
        if like is None:
            if n is None or self.event_shape is None:
                raise ValueError("sample needs n with a known event_shape, or a template `like`")
            p = next(self.parameters())
            like = torch.empty(n, *self.event_shape, dtype=p.dtype, device=p.device)
        return self.latent.sample(like, layout, generator)
