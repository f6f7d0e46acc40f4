"""The free-form flow surrogate loss (Draxler et al., AISTATS 2024, eq. 6-8).

Per sample, with encoder f, decoder g, ``z = f(x)``:

    L(x) = beta * ||x - g(z)||^2  -  log p_Z(z)  -  (1/K) sum_k  v_k^T J_f(x) SG[J_g(z) v_k]

where SG is stop-gradient and ``E[v v^T] = I`` on the data subspace. When g = f^{-1},
``J_g = J_f^{-1}`` and ``∇_θ log|det J_f| = tr(J_f^{-1} ∇_θ J_f) = E_v[v^T (∇_θ J_f) J_g v]``,
so the gradient of the bracket is an unbiased estimate of the gradient of the NLL
``-log p_Z(f(x)) - log|det J_f(x)|``. The bracket's *value* is not an NLL: monitor the exact NLL
(:func:`molfff.fff.logdet.log_abs_det_jacobian`) and the reconstruction instead.

``J_g v`` is one JVP of the decoder (forward-mode AD, or the VJP-of-VJP trick on the decoder's
forward graph). The encoder side, ``v^T J_f w`` with ``w = SG(J_g v)``, is computed one of two
ways with the same value and gradient (``encoder_mode``):

- ``"vjp"`` (the paper's description): ``v^T J_f`` by a reverse-mode VJP with
  ``create_graph=True``, dotted with w. The VJP's graph (the double-backward graph) is kept until
  ``backward``; for the EGNN it is about four times the encoder's forward graph.
- ``"jvp"``: ``J_f w`` by forward-mode AD through the encoder, dotted with v. Needs w before the
  encoder pass, so ``z = f(x)`` is first computed without a graph, ``w = J_g(z) v`` without a
  graph, and then one dual-number encoder pass gives both ``z`` and ``J_f w`` with their graph
  (reverse-over-forward). One more encoder forward and one more decoder forward (the
  reconstruction's) than ``"vjp"``; no double-backward graph is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from molfff.fff.latent import StandardNormal
from molfff.fff.layout import DenseLayout, Layout
from molfff.fff.network import FlowNetwork


@dataclass
class FFFTerms:
    """Per-sample terms of the surrogate, all ``(B,)`` except ``z`` and ``x_hat``.

    Attributes:
        loss: ``beta * reconstruction + nll_surrogate``; average it and call ``backward``.
        nll_surrogate: ``-log p_Z(z) - trace_surrogate``; right gradient, meaningless value.
        trace_surrogate: ``(1/K) sum_k v_k^T J_f SG(J_g v_k)``; ≈ dimension when g ≈ f^{-1}.
        reconstruction: ``||x - g(f(x))||^2`` summed over the sample.
        log_prob_z: ``log p_Z(z)``.
        z: latent codes, shaped like x.
        x_hat: reconstructions ``g(z)``, shaped like x.
    """

    loss: Tensor
    nll_surrogate: Tensor
    trace_surrogate: Tensor
    reconstruction: Tensor
    log_prob_z: Tensor
    z: Tensor
    x_hat: Tensor


def hutchinson_vectors(
    like: Tensor,
    layout: Layout,
    k: int = 1,
    generator: torch.Generator | None = None,
    sphere: bool = False,
) -> list[Tensor]:
    """Draw K Hutchinson vectors with ``E[v v^T] = I`` on the data subspace.

    K = 1: one standard normal vector on the subspace, or with ``sphere`` one uniform on the
    sphere of radius ``sqrt(m)`` (the authors' reference code; same expectation, lower variance
    of ``v^T A v`` in few dimensions: for ``A = I`` it is exact). K > 1: per sample, K vectors with
    orthonormal directions (uniformly random K-frame, by Gram-Schmidt under the layout's
    per-sample inner product) scaled to norm ``sqrt(m)``, m the subspace dimension. Then
    ``(1/K) sum_k v_k^T A v_k`` is unbiased for ``tr(A)``, with lower variance than independent
    Gaussians, and exact for K = m.

    Returns:
        list of K tensors shaped like ``like``.
    """
    if k < 1:
        raise ValueError(f"need at least one Hutchinson sample, got {k}")
    vs = [layout.randn(like, generator=generator) for _ in range(k)]
    if k == 1 and not sphere:
        return vs
    dims = layout.dims(like)
    if bool((dims < k).any()):
        raise ValueError(f"{k} Hutchinson vectors exceed the sample dimension {int(dims.min())}")
    frame: list[Tensor] = []
    for v in vs:
        for q in frame:
            v = v - layout.broadcast(layout.dot(v, q), v) * q
        frame.append(v / layout.broadcast(layout.dot(v, v).sqrt(), v))
    scale = layout.broadcast(dims.sqrt(), like)
    return [q * scale for q in frame]


def _decoder_jvps(
    z: Tensor, vs: list[Tensor], decode: FlowNetwork, c, layout: Layout, mode: str
) -> tuple[Tensor, list[Tensor]]:
    """``g(z)`` (with the graph it was computed with) and the detached ``J_g(z) v`` per v."""
    if mode == "forward":
        x_hat, jvs = None, []
        for v in vs:
            with fwAD.dual_level():
                primal, jv = fwAD.unpack_dual(decode(fwAD.make_dual(z, v), c, layout))
            x_hat = primal if x_hat is None else x_hat
            jvs.append(jv.detach())
        return x_hat, jvs
    # J_g v as the VJP of the VJP ("double-backward trick"): reuses the decoder's plain forward
    # pass, which the reconstruction needs anyway
    x_hat = decode(z, c, layout)
    u = torch.zeros_like(x_hat, requires_grad=True)
    (ut_j,) = torch.autograd.grad(x_hat, z, u, create_graph=True)  # u^T J_g, linear in u
    jvs = [torch.autograd.grad(ut_j, u, v, retain_graph=True)[0].detach() for v in vs]
    return x_hat, jvs  # the double-backward graph (u, ut_j) is freed on return


def _trace_by_encoder_vjp(x, encode, decode, c, layout, k, sphere, generator, decoder_jvp):
    """``z``, ``g(z)``, ``(1/K) sum_k (v_k^T J_f) · SG(J_g v_k)`` with one VJP graph per v."""
    z = _encode(encode, x, c, layout)
    vs = hutchinson_vectors(z, layout, k, generator, sphere)
    x_hat, jvs = _decoder_jvps(z, vs, decode, c, layout, decoder_jvp)
    trace = torch.zeros(layout.num_samples(x), dtype=x.dtype, device=x.device)
    for v, jv in zip(vs, jvs, strict=True):
        (vjp,) = torch.autograd.grad(z, x, v, create_graph=True)  # v^T J_f(x)
        trace = trace + layout.dot(vjp, jv) / len(vs)
    return z, x_hat, trace


def _trace_by_encoder_jvp(x, encode, decode, c, layout, k, sphere, generator, decoder_jvp):
    """``z``, ``g(z)``, ``(1/K) sum_k v_k · (J_f SG(J_g v_k))`` by forward-mode AD through the
    encoder (reverse-over-forward); see the module docstring."""
    with torch.no_grad():
        z0 = _encode(encode, x, c, layout)
    vs = hutchinson_vectors(z0, layout, k, generator, sphere)
    with torch.enable_grad():  # the reverse trick needs a graph; it is freed right away
        z0.requires_grad_(decoder_jvp == "reverse")
        _, ws = _decoder_jvps(z0, vs, decode, c, layout, decoder_jvp)
    del z0
    z = None
    trace = torch.zeros(layout.num_samples(x), dtype=x.dtype, device=x.device)
    for v, w in zip(vs, ws, strict=True):
        with fwAD.dual_level():
            primal, jf_w = fwAD.unpack_dual(encode(fwAD.make_dual(x, w), c, layout))
        z = primal if z is None else z  # f(x) with its graph, from the first pass
        trace = trace + layout.dot(v, jf_w) / len(vs)
    x_hat = decode(z, c, layout)
    return z, x_hat, trace


def _encode(encode: FlowNetwork, x: Tensor, c, layout: Layout) -> Tensor:
    z = encode(x, c, layout)
    if z.shape != x.shape:
        raise ValueError(f"encoder must preserve shape: {tuple(x.shape)} -> {tuple(z.shape)}")
    return z


def fff_loss(
    x: Tensor,
    encode: FlowNetwork,
    decode: FlowNetwork,
    beta: float,
    *,
    c: Tensor | None = None,
    layout: Layout | None = None,
    latent: StandardNormal | None = None,
    hutchinson_samples: int = 1,
    hutchinson_sphere: bool = False,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    decoder_jvp: str = "reverse",
    encoder_mode: str = "vjp",
) -> FFFTerms:
    """Free-form flow training loss (see module docstring for the equation).

    Args:
        x: data batch, ``(B, D)`` or laid out as ``layout`` says (e.g. ``(N, F)`` node rows).
        encode: ``f(x, c, layout) -> z`` shaped like x (:class:`~molfff.fff.FlowNetwork`).
        decode: ``g(z, c, layout) -> x`` shaped like z.
        beta: reconstruction weight; the reconstruction is a per-sample *sum* of squares.
        c: optional conditioning, passed unchanged to both networks.
        layout: batch structure, passed to both networks on every call; dense
            full-dimensional if omitted.
        latent: latent distribution; standard normal on the layout's space if omitted.
        hutchinson_samples: K, the number of trace-estimator vectors.
        hutchinson_sphere: with K = 1, draw v on the sphere of radius sqrt(m) instead of from
            a standard normal (see :func:`hutchinson_vectors`).
        noise_std: std of Gaussian noise added to x (on the subspace) before encoding, the
            spread-divergence view of paper section 4.1; the noisy x is also the target.
        generator: optional RNG for the noise and v (reproducible, resumable runs).
        decoder_jvp: how ``J_g v`` is computed: ``"reverse"`` (default; two reverse passes over
            the decoder's plain forward graph, which the reconstruction needs anyway) or
            ``"forward"`` (forward-mode AD, whose primal is the reconstruction). Same values;
            ``scripts/bench_train_step.py`` times both (reverse was faster on CPU for the
            paper's ResNets, where forward-mode AD pays a large per-operation overhead).
        encoder_mode: ``"vjp"`` (default) or ``"jvp"``: how the encoder's side of the trace
            term is differentiated (module docstring). Same values and gradients;
            ``scripts/memory_qm9_step.py`` measures the memory and time of both.

    Returns:
        :class:`FFFTerms` with per-sample values.

    Raises:
        ValueError: for a negative ``beta`` or ``noise_std``, an unknown ``decoder_jvp`` or
            ``encoder_mode``, more
            Hutchinson vectors than dimensions, or an encoder that changes the shape.

    Example:
        A linear pair with ``g = f^{-1}``: the reconstruction vanishes.

        >>> import torch
        >>> a = torch.tensor([[2.0, 0.5], [0.0, 1.0]])
        >>> def f(x, c, layout):
        ...     return x @ a.T
        >>> def g(z, c, layout):
        ...     return z @ torch.linalg.inv(a).T
        >>> terms = fff_loss(torch.randn(8, 2), f, g, beta=10.0)
        >>> terms.loss.shape, bool(terms.reconstruction.max() < 1e-10)
        (torch.Size([8]), True)

    Reference:
        Draxler, Sorrenson, Zimmermann, Rousselot, Köthe, "Free-form Flows: Make Any
        Architecture a Normalizing Flow", AISTATS 2024, arXiv:2310.16624, section 3.
    """
    layout = DenseLayout() if layout is None else layout
    latent = StandardNormal() if latent is None else latent
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got {beta}")
    if decoder_jvp not in ("forward", "reverse"):
        raise ValueError(f"decoder_jvp must be 'forward' or 'reverse', got {decoder_jvp!r}")
    if encoder_mode not in ("vjp", "jvp"):
        raise ValueError(f"encoder_mode must be 'vjp' or 'jvp', got {encoder_mode!r}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    if noise_std > 0:
        x = x + noise_std * layout.randn(x, generator=generator)
    if not x.requires_grad:  # data: differentiate w.r.t. a fresh leaf
        x = x.detach().requires_grad_(True)
    # else x comes from a differentiable map (e.g. a dequantizer) and keeps its graph: the
    # surrogate's gradient w.r.t. x is then also an unbiased estimate of ∇_x log|det J_f(x)|

    if encoder_mode == "jvp":
        z, x_hat, trace = _trace_by_encoder_jvp(
            x,
            encode,
            decode,
            c,
            layout,
            hutchinson_samples,
            hutchinson_sphere,
            generator,
            decoder_jvp,
        )
    else:
        z, x_hat, trace = _trace_by_encoder_vjp(
            x,
            encode,
            decode,
            c,
            layout,
            hutchinson_samples,
            hutchinson_sphere,
            generator,
            decoder_jvp,
        )
    reconstruction = layout.sum_per_sample((x - x_hat) ** 2)
    log_prob_z = latent.log_prob(z, layout)
    nll_surrogate = -log_prob_z - trace
    return FFFTerms(
        loss=beta * reconstruction + nll_surrogate,
        nll_surrogate=nll_surrogate,
        trace_surrogate=trace,
        reconstruction=reconstruction,
        log_prob_z=log_prob_z,
        z=z,
        x_hat=x_hat,
    )
