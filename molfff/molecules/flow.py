"""The E(3)-equivariant free-form flow for molecules: positions, atom types, charges, size.

A molecule of n atoms is the node rows ``x = [pos, v]`` ``(n, 3 + K + 1)``: positions in Å with
zero centre of mass, and continuous features ``v`` that dequantize the one-hot atom type (argmax
flow) and the charge (variational dequantization), see
:mod:`molfff.molecules.dequantization`. :class:`MoleculeFlow` is that dequantizer and the size
distribution p(n) around a :class:`~molfff.fff.FreeFormFlow` (``self.flow``) whose encoder and
decoder are :class:`~molfff.nn.egnn_flow.EGNNFlowNet` s; the batch's
:class:`~molfff.fff.GraphLayout` is the graph structure they receive. The per-molecule negative
log-likelihood in nats is the single-sample variational bound (Satorras et al. 2021, "E(n)
Equivariant Normalizing Flows")

    -log p(x, h, n) <= -log p(n) - log p_Z(z*) + log|det J_g(z*)| + log q(v | x, h),

with ``v ~ q``, ``u = [x, v]`` the node rows and ``z*`` the decoder's preimage, ``g(z*) = u``
(Newton's method from ``f(u)``, :func:`molfff.fff.inverse.invert_decoder`), p(n) the training
set's size distribution, p_Z the standard normal on the ``(n-1)·3 + n·(K+1)`` dimensional subspace
(its normalising constant included), and ``J_g`` the exact decoder Jacobian on that subspace.
This is the "exact" NLL: the density of ``(x, v)`` under the model that samples. The paper's
estimate (Draxler et al. 2024, eq. 135) takes ``z = f(u)`` instead of ``z*`` and is reported next
to it. Constants included: the latent normaliser, all dequantization log-dets and Gaussian
normalisers; positions are in Å (a change of length unit shifts the NLL by ``(n-1)·3·log(scale)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from molfff.fff import FreeFormFlow, GraphLayout, StandardNormal
from molfff.molecules.dequantization import Dequantizer
from molfff.nn.egnn_flow import EGNNFlowNet


@dataclass
class MoleculeBatch:
    """The tensors of a PyG batch the flow uses.

    Attributes:
        pos: ``(N, 3)`` positions (Å), zero centre of mass per molecule.
        one_hot: ``(N, K)`` atom types.
        charge: ``(N, 1)`` integer charges (atomic numbers for QM9).
        batch: ``(N,)`` molecule index, sorted.
        num_graphs: B.
    """

    pos: Tensor
    one_hot: Tensor
    charge: Tensor
    batch: Tensor
    num_graphs: int

    @classmethod
    def from_pyg(cls, data) -> MoleculeBatch:
        """From a ``torch_geometric`` ``Batch`` with ``pos``, ``one_hot``, ``charge``."""
        return cls(data.pos, data.one_hot, data.charge, data.batch, int(data.num_graphs))


class MoleculeFlow(nn.Module):
    """Dequantizer and size distribution p(n) around a free-form flow on ``[pos, v]`` node rows.

    See the module docstring for the likelihood. Loss, NLL and sampling are those of
    ``self.flow`` (a :class:`~molfff.fff.FreeFormFlow`) on the batch's
    :class:`~molfff.fff.GraphLayout`, plus the dequantization and size terms. Gradient mode is
    the caller's: wrap :meth:`sample` in ``torch.no_grad()`` for evaluation (:meth:`nll` runs
    without gradients).

    State-dict keys are ``flow.encoder.*``, ``flow.decoder.*``, ``dequantizer.*``, ``log_p_n``;
    checkpoints written before the flow was a :class:`~molfff.fff.FreeFormFlow` (``encoder.*``,
    ``decoder.*``) are renamed on load.

    Args:
        num_types: K, number of atom types (QM9: H, C, N, O, F).
        node_distribution: ``(n_max + 1,)`` probabilities p(n) of the atom count.
        hidden: EGNN width.
        blocks: EGNN blocks of encoder and decoder each (paper: 16).
        dequantizer_blocks: EGNN blocks of the dequantizer's conditional network.
        charge_scale: the dequantized charge is ``(c + s) / charge_scale``.
        type_offset: initial placement of q's type means, ``type_offset * one_hot``
            (:class:`~molfff.molecules.dequantization.Dequantizer`).
        egnn: further keyword arguments of both :class:`~molfff.nn.egnn_flow.EGNNFlowNet` s
            (e.g. ``normalization_factor``, ``zero_init``).

    Example:
        >>> import torch
        >>> p_n = torch.tensor([0.0, 0.0, 0.5, 0.5])  # molecules of 2 or 3 atoms
        >>> model = MoleculeFlow(5, p_n, hidden=8, blocks=1, dequantizer_blocks=1)
        >>> g = torch.Generator().manual_seed(0)
        >>> with torch.no_grad():
        ...     mol = model.sample(4, generator=g)
        ...     out = model.nll(mol, generator=g)
        >>> mol.pos.shape[1], out["nll_exact"].shape
        (3, torch.Size([4]))
        >>> model.loss(mol, beta=10.0, generator=g)["loss"].mean().backward()
    """

    def __init__(
        self,
        num_types: int,
        node_distribution: Tensor,
        hidden: int = 64,
        blocks: int = 16,
        dequantizer_blocks: int = 2,
        charge_scale: float = 10.0,
        type_offset: float = 0.0,
        egnn: dict | None = None,
    ):
        super().__init__()
        if node_distribution.dim() != 1 or bool((node_distribution < 0).any()):
            raise ValueError("node_distribution must be a (n_max + 1,) probability vector")
        self.num_types = num_types
        features = num_types + 1
        # registered first, as encoder and decoder were: optimizer states keep their order
        self.flow = FreeFormFlow(
            EGNNFlowNet(features, pos_dim=3, hidden=hidden, blocks=blocks, **(egnn or {})),
            EGNNFlowNet(features, pos_dim=3, hidden=hidden, blocks=blocks, **(egnn or {})),
            latent=StandardNormal(),
        )
        self.dequantizer = Dequantizer(
            num_types,
            charge_scale=charge_scale,
            type_offset=type_offset,
            hidden=hidden,
            blocks=dequantizer_blocks,
        )
        p = node_distribution.double() / node_distribution.sum()
        self.register_buffer("log_p_n", p.log().float())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the one place where checkpoints of the former layout (encoder.*, decoder.* directly
        # on this module) are renamed to flow.encoder.*, flow.decoder.*
        for old in ("encoder.", "decoder."):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + "flow." + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def graph_layout(batch: Tensor, num_graphs: int) -> GraphLayout:
        """The graph structure of a batch of molecules: positions are the first 3 columns."""
        return GraphLayout(batch, num_graphs, pos_dim=3)

    def dequantize(
        self, mol: MoleculeBatch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, GraphLayout]:
        """Node rows ``x = [pos, v]`` ``(N, 3 + K + 1)``, ``log q(v | ·)`` ``(B,)``, layout."""
        v, log_q = self.dequantizer(
            mol.pos,
            mol.one_hot,
            mol.charge,
            mol.batch,
            generator=generator,
            num_graphs=mol.num_graphs,
        )
        layout = self.graph_layout(mol.batch, mol.num_graphs)
        return torch.cat([mol.pos, v], dim=1), log_q, layout

    def log_p_size(self, batch: Tensor, num_graphs: int) -> Tensor:
        """``log p(n)`` per molecule, ``(B,)``."""
        n = torch.bincount(batch, minlength=num_graphs)
        if int(n.max()) >= self.log_p_n.numel():
            raise ValueError(
                f"a molecule has {int(n.max())} atoms; the size distribution "
                f"covers up to {self.log_p_n.numel() - 1}"
            )
        return self.log_p_n[n]

    def loss(
        self, mol: MoleculeBatch, beta: float, generator: torch.Generator | None = None, **kwargs
    ) -> dict[str, Tensor]:
        """Per-molecule training terms ``(B,)``: FFF surrogate on ``[pos, v]`` plus ``log q``.

        ``kwargs`` go to :func:`molfff.fff.fff_loss` (``hutchinson_samples``, ``noise_std``,
        ``decoder_jvp``); ``generator`` draws the dequantization noise, then v and the noise.
        """
        x, log_q, layout = self.dequantize(mol, generator)
        terms = self.flow.loss(x, beta, layout=layout, generator=generator, **kwargs)
        return {
            "loss": terms.loss + log_q,
            "reconstruction": terms.reconstruction,
            "nll_surrogate": terms.nll_surrogate + log_q,
            "log_q": log_q,
        }

    @torch.no_grad()
    def nll(
        self,
        mol: MoleculeBatch,
        generator: torch.Generator | None = None,
        chunk_size: int | None = 32,
        *,
        max_iter: int = 20,
        tol: float | None = None,
    ) -> dict[str, Tensor]:
        """Both single-sample NLL bounds per molecule (nats) and how well g was inverted.

        One dequantization draw ``v ~ q(v | x, h)`` and one :meth:`FreeFormFlow.invert
        <molfff.fff.FreeFormFlow.invert>` of the node rows ``u = [pos, v]``. The term
        ``log q(v | x, h)`` is the same in both NLLs: they are single-sample variational bounds
        over the dequantization, and "exact" refers to the flow density of ``(x, v)`` only.
        Runs without gradients (the Newton solve is not differentiated).

        Args:
            mol: the molecules.
            generator: draws the dequantization noise.
            chunk_size: Jacobian columns per vmap chunk (memory bound).
            max_iter: Newton steps at most (``trainer.newton_max_iter``).
            tol: Newton tolerance on the RMS residual per degree of freedom (Å and feature
                units); :func:`~molfff.fff.inverse.default_tol` of the dtype if None.

        Returns:
            ``(B,)`` tensors: ``nll_exact`` and ``nll_estimate`` (with ``-log p(n)``, +inf where
            p(n) = 0), ``nll_given_n_exact`` and ``nll_given_n_estimate`` (without it);
            ``nll_*_exact`` use ``-log p_Z(z*) + log|det J_g(z*)|`` with ``g(z*) = u``,
            ``nll_*_estimate`` the paper's eq. 135 at ``z = f(u)``; ``converged`` (bool: Newton
            reached ``tol``; else the exact NLLs are NaN), ``residual``
            ``||g(z*) - u||``, ``reconstruction`` ``||g(f(u)) - u||^2`` and ``dims`` (degrees of
            freedom per molecule).

        Raises:
            ValueError: if a molecule is larger than p(n) covers.
        """
        x, log_q, layout = self.dequantize(mol, generator)
        log_p_n = self.log_p_size(mol.batch, mol.num_graphs)
        res = self.flow.invert(x, layout=layout, tol=tol, max_iter=max_iter, chunk_size=chunk_size)
        given_exact = -res.log_prob + log_q
        given_estimate = -res.log_prob_estimate + log_q
        return {
            "nll_exact": given_exact - log_p_n,
            "nll_estimate": given_estimate - log_p_n,
            "nll_given_n_exact": given_exact,
            "nll_given_n_estimate": given_estimate,
            "converged": res.converged,
            "residual": res.residual,
            "reconstruction": res.residual_start**2,
            "dims": layout.dims(x),
        }

    def sample(
        self,
        num_molecules: int,
        generator: torch.Generator | None = None,
        sizes: Tensor | None = None,
    ) -> MoleculeBatch:
        """Sizes ``n ~ p(n)``, ``z ~ p_Z`` on the zero-CoM subspace, ``[pos, v] = g(z)``,
        types ``argmax``, charges ``floor``: one decoder evaluation."""
        z, batch = self.sample_latent(num_molecules, generator, sizes)
        return self.decode_latent(z, batch, num_molecules)

    def sample_latent(
        self,
        num_molecules: int,
        generator: torch.Generator | None = None,
        sizes: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The first half of :meth:`sample`: sizes ``n ~ p(n)`` (unless given) and node rows
        ``z ~ p_Z`` ``(N, 3 + K + 1)`` on the zero-CoM subspace, with their ``batch`` ``(N,)``."""
        device = self.log_p_n.device  # a generator must live on this device too
        if sizes is None:
            sizes = torch.multinomial(
                self.log_p_n.exp(), num_molecules, replacement=True, generator=generator
            )
        sizes = sizes.to(device)
        batch = torch.repeat_interleave(torch.arange(num_molecules, device=device), sizes)
        weight = next(self.flow.decoder.parameters())
        like = torch.empty(
            len(batch), 3 + self.num_types + 1, dtype=weight.dtype, device=weight.device
        )
        layout = self.graph_layout(batch, num_molecules)
        return self.flow.latent.sample(like, layout, generator), batch

    def decode_latent(self, z: Tensor, batch: Tensor, num_molecules: int) -> MoleculeBatch:
        """The second half of :meth:`sample`: ``[pos, v] = g(z)``, types ``argmax``, charges
        ``floor``."""
        x = self.flow.decode(z, None, self.graph_layout(batch, num_molecules))
        one_hot, charge = self.dequantizer.quantize(x[:, 3:])
        return MoleculeBatch(x[:, :3], one_hot, charge, batch, num_molecules)
