"""The free-form flow object: encoder f, decoder g, latent p_Z, and the batch layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from molfff.fff.inverse import implicit_preimage, invert_decoder
from molfff.fff.latent import StandardNormal
from molfff.fff.layout import DenseLayout, Layout
from molfff.fff.logdet import log_abs_det_jacobian
from molfff.fff.loss import FFFTerms, fff_loss


@dataclass
class Inversion:
    """Both log-densities of a batch under a free-form flow; every tensor is ``(B,)`` except ``z``.

    Attributes:
        z: the decoder's preimage ``z*`` of ``x`` (shaped like ``x``).
        log_prob: exact ``log q(x) = log p_Z(z*) - log|det J_g(z*)|`` (the model that samples);
            NaN where no preimage was found (``converged`` False): the value at the last iterate
            would be the density of another point, often near a fold where it diverges.
        log_prob_estimate: the paper's ``log p_Z(f(x)) - log|det J_g(f(x))|`` (eq. 135).
        residual: ``||g(z*) - x||`` in data units.
        converged: whether Newton reached the tolerance.
        iterations: Newton steps taken.
        residual_start: ``||g(f(x)) - x||``, the reconstruction error the estimate ignores.
    """

    z: Tensor
    log_prob: Tensor
    log_prob_estimate: Tensor
    residual: Tensor
    converged: Tensor
    iterations: Tensor
    residual_start: Tensor


class FreeFormFlow(nn.Module):
    """A normalizing flow made of any dimension-preserving encoder/decoder pair.

    ``encoder`` and ``decoder`` are modules called as ``net(x, c, layout)`` (see
    :class:`~molfff.fff.FlowNetwork`) that map a batch to a batch of the same shape (``c`` may be
    None). Every method passes the layout on to them: the flow's own (dense data, particles) or
    the one given per call (graph batches, whose structure changes from batch to batch).
    Training uses :meth:`loss`; sampling is one decoder pass; the density of that sampler is
    :meth:`log_prob` (the decoder's Jacobian at the decoder's preimage of ``x``), next to the
    paper's cheaper :meth:`log_prob_estimate` (at ``f(x)``).

    No method but :meth:`invert` changes gradient mode: :meth:`log_prob`, :meth:`sample` and
    :meth:`sample_with_log_prob` are differentiable in the parameters (e.g. to train by maximum
    likelihood on the exact density, or through samples); wrap evaluation in ``torch.no_grad()``
    to save the memory of the graph.

    Args:
        encoder: f, data -> latent.
        decoder: g, latent -> data; trained to invert f.
        latent: p_Z; standard normal on the layout's space by default.
        layout: batch structure for dense data and particles (graphs pass theirs per call).
        event_shape: shape of one dense sample, used by ``sample(n)``.

    Example:
        >>> import torch
        >>> from molfff.nn import ResNet
        >>> flow = FreeFormFlow(ResNet(2, width=8, blocks=1), ResNet(2, width=8, blocks=1),
        ...                     event_shape=(2,))
        >>> x = torch.randn(16, 2)
        >>> terms = flow.loss(x, beta=10.0)
        >>> terms.loss.mean().backward()
        >>> with torch.no_grad():
        ...     nll = -flow.log_prob(x)
        ...     samples = flow.sample(5, generator=torch.Generator().manual_seed(0))
        >>> nll.shape, samples.shape
        (torch.Size([16]), torch.Size([5, 2]))
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

    def _layout(self, layout: Layout | None) -> Layout:
        return self.layout if layout is None else layout

    def encode(self, x: Tensor, c: Tensor | None = None, layout: Layout | None = None) -> Tensor:
        """``z = f(x)``, shaped like ``x``."""
        return self.encoder(x, c, self._layout(layout))

    def decode(self, z: Tensor, c: Tensor | None = None, layout: Layout | None = None) -> Tensor:
        """``x = g(z)``, shaped like ``z``."""
        return self.decoder(z, c, self._layout(layout))

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
            layout=self._layout(layout),
            latent=self.latent,
            **kwargs,
        )

    def log_prob(
        self,
        x: Tensor,
        c: Tensor | None = None,
        layout: Layout | None = None,
        *,
        tol: float | None = None,
        max_iter: int = 20,
        restarts: int = 0,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Exact log-density of the model that samples, ``(B,)``:
        ``log q(x) = log p_Z(z*) - log|det J_g(z*)|``.

        ``z*`` solves ``g(z*) = x`` (Newton from ``f(x)``,
        :func:`~molfff.fff.inverse.invert_decoder`; see there for when it fails). NaN for
        samples whose preimage was not found; :meth:`invert` says which. With gradients
        enabled the result is differentiable in ``x`` and the parameters through the implicit
        function theorem (:func:`~molfff.fff.inverse.implicit_preimage`); use :meth:`invert`
        to also get the convergence flags and the paper's estimate.

        Args:
            x: batch laid out as ``layout`` says.
            c: conditioning, one row per sample.
            layout: batch structure (defaults to the flow's).
            tol, max_iter: Newton tolerance (RMS residual per degree of freedom) and step cap.
            restarts: fresh starts from ``p_Z`` for samples that do not converge from ``f(x)``.
            chunk_size: Jacobian columns per vmap chunk (memory bound).
        """
        layout = self._layout(layout)
        result = self.invert(
            x, c, layout, tol=tol, max_iter=max_iter, restarts=restarts, chunk_size=chunk_size
        )
        if not torch.is_grad_enabled():
            return result.log_prob
        z = implicit_preimage(self.decoder, x, result.z, layout, c=c, chunk_size=chunk_size)
        log_det = log_abs_det_jacobian(self.decoder, z, layout, c=c, chunk_size=chunk_size)
        value = self.latent.log_prob(z, layout) - log_det
        return torch.where(result.converged, value, torch.full_like(value, float("nan")))

    def log_prob_estimate(
        self,
        x: Tensor,
        c: Tensor | None = None,
        layout: Layout | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """The paper's estimate ``log p_Z(f(x)) - log|det J_g(f(x))|``, ``(B,)``.

        Draxler et al. (2024), eq. 135: the exact density evaluated at ``z = f(x)`` instead of the
        decoder's preimage ``z*``. Equal to :meth:`log_prob` where ``g(f(x)) = x``; elsewhere it is
        the density of ``g(f(x))``, not a normalised density of ``x``. Kept for comparison with
        published tables; one Jacobian, differentiable when gradients are enabled.
        """
        layout = self._layout(layout)
        z = self.encode(x, c, layout)
        log_det = log_abs_det_jacobian(self.decoder, z, layout, c=c, chunk_size=chunk_size)
        return self.latent.log_prob(z, layout) - log_det

    def invert(
        self,
        x: Tensor,
        c: Tensor | None = None,
        layout: Layout | None = None,
        *,
        tol: float | None = None,
        max_iter: int = 20,
        restarts: int = 0,
        chunk_size: int | None = None,
    ) -> Inversion:
        """Both log-densities of ``x`` and how well the decoder was inverted (no gradients).

        Newton's method from ``z0 = f(x)`` (:func:`~molfff.fff.inverse.invert_decoder`); the
        estimate reuses the first iterate's Jacobian, so it costs nothing extra.

        Returns:
            :class:`Inversion` with ``(B,)`` tensors.
        """
        layout = self._layout(layout)
        with torch.no_grad():
            z0 = self.encode(x, c, layout)
            pre = invert_decoder(
                self.decoder,
                x,
                z0,
                layout,
                c=c,
                tol=tol,
                max_iter=max_iter,
                restarts=restarts,
                chunk_size=chunk_size,
            )
            return Inversion(
                z=pre.z,
                log_prob=torch.where(
                    pre.converged,
                    self.latent.log_prob(pre.z, layout) - pre.log_det,
                    torch.full_like(pre.log_det, float("nan")),
                ),
                log_prob_estimate=self.latent.log_prob(z0, layout) - pre.log_det_start,
                residual=pre.residual,
                converged=pre.converged,
                iterations=pre.iterations,
                residual_start=pre.residual_start,
            )

    def reconstruction(
        self, x: Tensor, c: Tensor | None = None, layout: Layout | None = None
    ) -> Tensor:
        """``||x - g(f(x))||^2`` summed per sample, ``(B,)``: how far f is from inverting g."""
        layout = self._layout(layout)
        return layout.sum_per_sample((self.decode(self.encode(x, c, layout), c, layout) - x) ** 2)

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
        (change of variables through the decoder): the same value as :meth:`log_prob` at ``x``
        without a Newton solve, since ``z`` is known. This is the ``q(x)`` of importance
        weights ``w = exp(-u(x)) / q(x)`` (Noé et al. 2019, Boltzmann generators).

        Args: as :meth:`sample`, plus ``chunk_size`` of the Jacobian's columns.

        Returns:
            ``x`` shaped like z, and ``log q(x)`` ``(B,)``.
        """
        layout = self._layout(layout)
        z = self._draw_latent(n, like, layout, generator)
        x = self.decode(z, c, layout)
        log_det = log_abs_det_jacobian(self.decoder, z, layout, c=c, chunk_size=chunk_size)
        return x, self.latent.log_prob(z, layout) - log_det

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
            like: template tensor providing shape, dtype and device of z (graphs: node rows).
            layout: batch structure of ``like`` (defaults to the flow's).
            generator: random generator for z.
        """
        layout = self._layout(layout)
        return self.decode(self._draw_latent(n, like, layout, generator), c, layout)

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
