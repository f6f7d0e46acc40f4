"""The E(3)-equivariant free-form flow for molecules: positions, atom types, charges, size.

A molecule of n atoms is the node rows ``x = [pos, v]`` ``(n, 3 + K + 1)``: positions in Å with
zero centre of mass, and continuous features ``v`` that dequantize the one-hot atom type (argmax
flow) and the charge (variational dequantization), see
:mod:`molfff.molecules.dequantization`. Encoder and decoder are
:class:`~molfff.nn.egnn.EGNNFlowNet` s. The per-molecule negative log-likelihood in nats is the
single-sample variational bound (Satorras et al. 2021, "E(n) Equivariant Normalizing Flows")

    -log p(x, h, n) <= -log p(n) - log p_Z(f(x)) + log|det J_g(f(x))| + log q(v | x, h),

with ``v ~ q``, p(n) the training set's size distribution, p_Z the standard normal on the
``(n-1)·3 + n·(K+1)`` dimensional subspace (its normalising constant included), and ``J_g`` the
exact decoder Jacobian on that subspace. Constants included: the latent normaliser, all
dequantization log-dets and Gaussian normalisers; positions are in Å (a change of length unit
shifts the NLL by ``(n-1)·3·log(scale)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from molfff.fff import GraphLayout, StandardNormal, fff_loss, log_abs_det_jacobian
from molfff.molecules.dequantization import Dequantizer
from molfff.nn.egnn import EGNNFlowNet


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
    """Free-form flow over molecules; see the module docstring for the likelihood.

    Args:
        num_types: K, number of atom types (QM9: H, C, N, O, F).
        node_distribution: ``(n_max + 1,)`` probabilities p(n) of the atom count.
        hidden: EGNN width.
        blocks: EGNN blocks of encoder and decoder each (paper: 16).
        dequantizer_blocks: EGNN blocks of the dequantizer's conditional network.
        charge_scale: the dequantized charge is ``(c + s) / charge_scale``.
    """

    def __init__(
        self,
        num_types: int,
        node_distribution: Tensor,
        hidden: int = 64,
        blocks: int = 16,
        dequantizer_blocks: int = 2,
        charge_scale: float = 10.0,
    ):
        super().__init__()
        if node_distribution.dim() != 1 or bool((node_distribution < 0).any()):
            raise ValueError("node_distribution must be a (n_max + 1,) probability vector")
        self.num_types = num_types
        features = num_types + 1
        self.encoder = EGNNFlowNet(features, pos_dim=3, hidden=hidden, blocks=blocks)
        self.decoder = EGNNFlowNet(features, pos_dim=3, hidden=hidden, blocks=blocks)
        self.dequantizer = Dequantizer(
            num_types, charge_scale=charge_scale, hidden=hidden, blocks=dequantizer_blocks
        )
        p = node_distribution.double() / node_distribution.sum()
        self.register_buffer("log_p_n", p.log().float())
        self.latent = StandardNormal()

    def _graph(self, batch: Tensor, num_graphs: int, nets=None) -> GraphLayout:
        for net in (self.encoder, self.decoder) if nets is None else nets:
            net.set_batch(batch, num_graphs)
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
        layout = self._graph(mol.batch, mol.num_graphs)
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
        """Per-molecule training terms ``(B,)``: FFF surrogate on ``[pos, v]`` plus ``log q``."""
        x, log_q, layout = self.dequantize(mol, generator)
        terms = fff_loss(
            x,
            self.encoder,
            self.decoder,
            beta,
            layout=layout,
            latent=self.latent,
            generator=generator,
            **kwargs,
        )
        return {
            "loss": terms.loss + log_q,
            "reconstruction": terms.reconstruction,
            "nll_surrogate": terms.nll_surrogate + log_q,
            "log_q": log_q,
        }

    def nll(
        self,
        mol: MoleculeBatch,
        generator: torch.Generator | None = None,
        chunk_size: int | None = 32,
    ) -> dict[str, Tensor]:
        """Exact single-sample NLL bound per molecule (nats) and its parts, ``(B,)`` each."""
        with torch.no_grad():
            x, log_q, layout = self.dequantize(mol, generator)
            z = self.encoder(x)
            log_det = log_abs_det_jacobian(self.decoder, z, layout, chunk_size=chunk_size)
            nll_xv = -self.latent.log_prob(z, layout) + log_det
            recon = layout.sum_per_sample((self.decoder(z) - x) ** 2)
            log_p_n = self.log_p_size(mol.batch, mol.num_graphs)
        return {
            "nll": nll_xv + log_q - log_p_n,
            "nll_given_n": nll_xv + log_q,
            "reconstruction": recon,
            "dims": layout.dims(x),
        }

    @torch.no_grad()
    def sample(
        self,
        num_molecules: int,
        generator: torch.Generator | None = None,
        sizes: Tensor | None = None,
    ) -> MoleculeBatch:
        """Sizes ``n ~ p(n)``, ``z ~ p_Z`` on the zero-CoM subspace, ``[pos, v] = g(z)``,
        types ``argmax``, charges ``floor``: one decoder evaluation."""
        device = self.log_p_n.device  # a generator must live on this device too
        if sizes is None:
            sizes = torch.multinomial(
                self.log_p_n.exp(), num_molecules, replacement=True, generator=generator
            )
        sizes = sizes.to(device)
        batch = torch.repeat_interleave(torch.arange(num_molecules, device=device), sizes)
        layout = self._graph(batch, num_molecules, nets=(self.decoder,))
        weight = next(self.decoder.parameters())
        like = torch.empty(
            len(batch), 3 + self.num_types + 1, dtype=weight.dtype, device=weight.device
        )
        z = self.latent.sample(like, layout, generator=generator)
        x = self.decoder(z)
        one_hot, charge = self.dequantizer.quantize(x[:, 3:])
        return MoleculeBatch(x[:, :3], one_hot, charge, batch, num_molecules)
