"""The free-form flow surrogate loss (Draxler et al., AISTATS 2024, eq. 6-8).

Per sample, with encoder f, decoder g, ``z = f(x)``:

    L(x) = beta * ||x - g(z)||^2  -  log p_Z(z)  -  (1/K) sum_k  v_k^T J_f(x) SG[J_g(z) v_k]

where SG is stop-gradient and ``E[v v^T] = I`` on the data subspace. When g = f^{-1},
``J_g = J_f^{-1}`` and ``∇_θ log|det J_f| = tr(J_f^{-1} ∇_θ J_f) = E_v[v^T (∇_θ J_f) J_g v]``,
so the gradient of the bracket is an unbiased estimate of the gradient of the NLL
``-log p_Z(f(x)) - log|det J_f(x)|``. The bracket's *value* is not an NLL: monitor the exact NLL
(:func:`molfff.fff.logdet.log_abs_det_jacobian`) and the reconstruction instead.

``J_g v`` is one JVP of the decoder (forward-mode AD, or the VJP-of-VJP trick on the decoder's
forward graph), ``v^T J_f`` one reverse-mode VJP of the encoder with ``create_graph=True``.
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
    residual_scale: Tensor | None = None,
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
        residual_scale: optional positive scale, broadcastable to x, that divides the residual:
            the reconstruction is then ``||(x - g(z)) / scale||^2``, the same sum measured in
            units of ``scale`` (e.g. a learned conditional width; see
            :meth:`molfff.nn.LocScaleOutput.scale`). Treated as a constant: no gradient flows
            into it.

    Returns:
        :class:`FFFTerms` with per-sample values.

    Raises:
        ValueError: for a negative ``beta`` or ``noise_std``, an unknown ``decoder_jvp``, more
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
    if noise_std < 0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    if noise_std > 0:
        x = x + noise_std * layout.randn(x, generator=generator)
    if not x.requires_grad:  # data: differentiate w.r.t. a fresh leaf
        x = x.detach().requires_grad_(True)
    # else x comes from a differentiable map (e.g. a dequantizer) and keeps its graph: the
    # surrogate's gradient w.r.t. x is then also an unbiased estimate of ∇_x log|det J_f(x)|

    z = encode(x, c, layout)
    if z.shape != x.shape:
        raise ValueError(f"encoder must preserve shape: {tuple(x.shape)} -> {tuple(z.shape)}")

    trace = torch.zeros(layout.num_samples(x), dtype=x.dtype, device=x.device)
    vs = hutchinson_vectors(z, layout, hutchinson_samples, generator, hutchinson_sphere)
    if decoder_jvp == "forward":
        x_hat = None
        jvs = []
        for v in vs:
            with fwAD.dual_level():
                primal, jv = fwAD.unpack_dual(
                    decode(fwAD.make_dual(z, v), c, layout)
                )  # g(z), J_g v
            x_hat = primal if x_hat is None else x_hat
            jvs.append(jv.detach())
    else:
        # J_g v as the VJP of the VJP ("double-backward trick"): reuses the decoder's plain
        # forward pass, which the reconstruction needs anyway.
        x_hat = decode(z, c, layout)
        u = torch.zeros_like(x_hat, requires_grad=True)
        (ut_j,) = torch.autograd.grad(x_hat, z, u, create_graph=True)  # u^T J_g, linear in u
        jvs = [torch.autograd.grad(ut_j, u, v, retain_graph=True)[0] for v in vs]
        del u, ut_j  # frees the double-backward graph before the encoder's VJPs are built
    for v, jv in zip(vs, jvs, strict=True):
        (vjp,) = torch.autograd.grad(z, x, v, create_graph=True)  # v^T J_f(x)
        trace = trace + layout.dot(vjp, jv) / len(vs)

    residual = x - x_hat
    if residual_scale is not None:
        residual = residual / residual_scale.detach()
    reconstruction = layout.sum_per_sample(residual**2)
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
