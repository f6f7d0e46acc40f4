"""LightningModule around a :class:`~molfff.fff.FreeFormFlow` on dense rows ``(B, D)``.

Trains with the surrogate loss, validates with the exact NLL (decoder Jacobian) and the
reconstruction error. Data are standardised by fixed :class:`~molfff.fff.standardize.Standardize`
buffers taken from the training split; reported NLLs are in the original units,
``-log p(x) = -log q(x') + sum log scale`` with ``x' = (x - shift) / scale``. Data with hard
bounds (``data.unconstrain``, e.g. a box prior) are first mapped to the reals by
:class:`~molfff.fff.support.Unconstrain`, ``x' = (T(x) - shift) / scale``, and the NLL gains
``-log |det dT/dx|``. Particle systems
``(B, n·d)`` use a zero-centre-of-mass :class:`~molfff.fff.ParticleLayout` and an equivariant
network, and are not standardised.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor

from molfff.errors import UserError
from molfff.fff import DenseLayout, FreeFormFlow, ParticleLayout
from molfff.fff.standardize import Standardize
from molfff.fff.support import Unconstrain
from molfff.nn import LocScaleInput, LocScaleOutput, MLPResNet, ResNet, resnet
from molfff.train.checkpoint import SavesClassPath
from molfff.train.config import Config, config_from_dict

NETWORKS = ("resnet", "mlp_resnet", "egnn")


def build_network(
    config: Config,
    dim: int,
    cond_dim: int,
    particles: tuple[int, int] | None = None,
    role: str = "encoder",
) -> torch.nn.Module:
    """One encoder or decoder (``role``) as the model section describes.

    ``resnet``: a dense ResNet (paper preset or width/blocks). ``mlp_resnet``: the FFF authors'
    SBI network (:class:`molfff.nn.MLPResNet`; ``model.width``, ``blocks``, ``pre_layers``,
    ``activation``; no preset, no global skip). ``egnn``: an E(n)-equivariant GNN
    over the particles of each row (``model.width`` hidden units, ``model.blocks`` blocks); needs
    a particle task. ``model.loc_scale``: wrap a conditional dense network in a learned location and
    scale of the conditioning (:mod:`molfff.nn.loc_scale`), on the encoder's input and the
    decoder's output.
    """
    if role not in ("encoder", "decoder"):
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
    m = config.model
    if m.network not in NETWORKS:
        raise UserError(
            f"config key model.network: {m.network!r} is not one of {', '.join(NETWORKS)}"
        )
    if m.network == "egnn":
        if particles is None:
            raise UserError("model.network=egnn needs particle data (a Boltzmann task)")
        if cond_dim:
            raise UserError("model.network=egnn does not take conditioning yet")
        from molfff.nn.particles import ParticleEGNN

        return ParticleEGNN(*particles, hidden=m.width, blocks=m.blocks)
    sizes = dict(width=m.width, blocks=m.blocks, pre_layers=m.pre_layers, activation=m.activation)
    if m.network == "mlp_resnet":
        if m.preset is not None:
            raise UserError("model.preset names a resnet preset; mlp_resnet takes width/blocks")
        net = MLPResNet(dim, cond_dim, role=role, **sizes)
    elif m.preset is not None:
        net = resnet(m.preset, dim, cond_dim)
    else:
        net = ResNet(dim, cond_dim, skip=m.skip, **sizes)
    if not m.loc_scale:
        return net
    if not cond_dim:
        raise UserError("model.loc_scale needs conditioning data (e.g. an sbi task)")
    wrap = LocScaleInput if role == "encoder" else LocScaleOutput
    return wrap(net, dim, cond_dim, width=m.loc_scale_width, activation=m.activation)


def converged_mean(nll: Tensor, converged: Tensor) -> tuple[Tensor, int]:
    """Mean exact NLL over the samples whose preimage was found, and the weight to log it with.

    Returns:
        ``(mean, count)``; ``(inf, 1)`` when none converged, so that such a validation never
        becomes the best checkpoint.
    """
    n = int(converged.sum())
    return (nll[converged].mean(), n) if n else (nll.new_tensor(math.inf), 1)


def step_generator(
    seed: int, step: int, rank: int, device: torch.device, micro: int = 0
) -> torch.Generator:
    """RNG for one training step: a pure function of (seed, step, rank, micro), so resume is
    exact; ``micro`` numbers the micro-batches of one optimizer step
    (``trainer.accumulate_grad_batches``), which must not share their noise."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) * 1009 + rank + micro * 1_000_000_007)
    return g


def micro_batch(module: L.LightningModule, batch_idx: int) -> int:
    """Index of ``batch_idx`` among the micro-batches of its optimizer step (0 without
    gradient accumulation)."""
    trainer = module._trainer
    k = trainer.accumulate_grad_batches if trainer is not None else 1
    return batch_idx % k


class FFFModule(SavesClassPath, L.LightningModule):
    """Free-form flow training on dense data.

    Args:
        config: the run configuration as a plain dict (saved in checkpoints).
        dim: data dimension D.
        cond_dim: conditioning dimension C (0: unconditional).
        particles: ``(n, d)`` when rows are n particles in d dimensions (zero-CoM subspace).
    """

    def __init__(
        self,
        config: dict,
        dim: int,
        cond_dim: int = 0,
        particles: tuple[int, int] | list[int] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.config = config_from_dict(config)
        particles = tuple(particles) if particles is not None else None
        if particles is not None and particles[0] * particles[1] != dim:
            raise ValueError(f"particles {particles} do not make up dimension {dim}")
        self.flow = FreeFormFlow(
            build_network(self.config, dim, cond_dim, particles, role="encoder"),
            build_network(self.config, dim, cond_dim, particles, role="decoder"),
            layout=ParticleLayout(*particles) if particles else DenseLayout(),
            event_shape=(dim,),
        )
        self.unconstrain = Unconstrain(dim)
        self.standardize_x = Standardize(dim)
        self.standardize_c = Standardize(cond_dim)

    def set_support(self, lower: Tensor, upper: Tensor) -> None:
        """Model ``T(x)`` instead of ``x``, which lies in ``lower < x < upper`` (``(D,)`` each,
        ``±inf`` for none; :class:`~molfff.fff.support.Unconstrain`). Call before
        :meth:`set_standardization`."""
        self.unconstrain.set_bounds(lower, upper)

    def set_standardization(self, x: Tensor, c: Tensor | None = None) -> None:
        """Fix the z-scoring of data ``x`` ``(B, D)`` (after :meth:`set_support`'s map) and
        conditioning ``c`` ``(B, C)`` to the training split's mean and std (constant dimensions
        are centred, not scaled)."""
        self.standardize_x.fit(self.unconstrain(x))
        if c is not None:
            self.standardize_c.fit(c)

    def to_flow(self, x: Tensor) -> Tensor:
        """Data ``(B, D)`` in original units to the flow's space: unconstrained, z-scored."""
        return self.standardize_x(self.unconstrain(x))

    def from_flow(self, x: Tensor) -> Tensor:
        """The inverse of :meth:`to_flow`: the flow's ``(B, D)`` in original units."""
        return self.unconstrain.inverse(self.standardize_x.inverse(x))

    def nll_offset(self, x: Tensor) -> Tensor:
        """What turns an NLL of :meth:`to_flow`'s output into one of ``x`` ``(B, D)`` in
        original units: ``sum log scale - log |det dT/dx|``, ``(B,)``."""
        return self.log_scale - self.unconstrain.log_abs_det(x)

    def _standardize_c(self, c: Tensor | None) -> Tensor | None:
        return None if c is None else self.standardize_c(c)

    def _condition(self, c: Tensor | None, n: int) -> Tensor | None:
        """Standardised conditioning for ``n`` rows; one row ``(1, C)`` serves them all."""
        c = self._standardize_c(c)
        return c.expand(n, -1) if c is not None and c.shape[0] == 1 and n > 1 else c

    def _unpack(self, batch) -> tuple[Tensor, Tensor | None]:
        x = self.to_flow(batch[0])
        return x, self._standardize_c(batch[1] if len(batch) > 1 else None)

    @property
    def log_scale(self) -> Tensor:
        """``sum log scale`` of the z-scoring, a scalar (see :meth:`nll_offset`)."""
        return self.standardize_x.log_abs_det

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, c = self._unpack(batch)
        cfg = self.config.loss
        gen = step_generator(
            self.config.seed,
            self.global_step,
            self.global_rank,
            x.device,
            micro_batch(self, batch_idx),
        )
        terms = self.flow.loss(
            x,
            cfg.beta,
            c,
            hutchinson_samples=cfg.hutchinson_samples,
            hutchinson_sphere=cfg.hutchinson_sphere,
            noise_std=cfg.noise_std,
            generator=gen,
            decoder_jvp=cfg.decoder_jvp,
            residual_scale=self._residual_scale(c),
        )
        loss = terms.loss.mean()
        self.log_dict(
            {
                "train/loss": loss,
                "train/reconstruction": terms.reconstruction.mean(),
                "train/nll_surrogate": (terms.nll_surrogate + self.nll_offset(batch[0])).mean(),
            },
            prog_bar=False,
            batch_size=x.shape[0],
        )
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=x.shape[0])
        return loss

    def _residual_scale(self, c: Tensor | None) -> Tensor | None:
        """The decoder's learned width for ``loss.reconstruction_frame=loc_scale``, else None."""
        if self.config.loss.reconstruction_frame != "loc_scale":
            return None
        return self.flow.decoder.scale(c)

    @property
    def checkpoint_monitor(self) -> str | None:
        """The logged metric whose lowest value picks ``best.ckpt`` (``trainer.select_on``);
        None for ``last`` (``best.ckpt`` is then the final weights)."""
        select_on = self.config.trainer.select_on
        return None if select_on == "last" else f"val/nll_{select_on}"

    def evaluate(self, batch, exact: bool = True) -> dict[str, Tensor]:
        """Per-sample NLLs in nats (original units) and how well g was inverted, ``(B,)`` each.

        Returns:
            ``nll_estimate`` (paper eq. 135, at ``z = f(x)``) and ``reconstruction``
            ``||g(f(x)) - x||^2`` (z-scored units); with ``exact`` also ``nll_exact`` (the
            density of the model that samples, at the decoder's preimage ``z*`` of x; NaN where
            none was found), ``converged`` (Newton reached its tolerance), ``residual``
            ``||g(z*) - x||`` and ``iterations`` (Newton steps).
        """
        x, c = self._unpack(batch)
        offset = self.nll_offset(batch[0])
        t = self.config.trainer
        if not exact:
            with torch.no_grad():
                lp = self.flow.log_prob_estimate(x, c, chunk_size=t.jacobian_chunk)
                recon = self.flow.reconstruction(x, c)
            return {"nll_estimate": -lp + offset, "reconstruction": recon}
        res = self.flow.invert(
            x,
            c,
            chunk_size=t.jacobian_chunk,
            max_iter=t.newton_max_iter,
            restarts=t.newton_restarts,
        )
        return {
            "nll_exact": -res.log_prob + offset,
            "nll_estimate": -res.log_prob_estimate + offset,
            "converged": res.converged,
            "residual": res.residual,
            "iterations": res.iterations,
            "reconstruction": res.residual_start**2,
        }

    def _eval_step(self, batch, prefix: str) -> None:
        # validation computes the exact NLL only when it selects the checkpoint (it costs Newton
        # steps); the test split always gets both
        exact = self.config.trainer.select_on == "exact" or prefix == "test"
        out = self.evaluate(batch, exact=exact)
        n = out["nll_estimate"].shape[0]
        self.log_dict(
            {
                f"{prefix}/nll_estimate": out["nll_estimate"].mean(),
                f"{prefix}/reconstruction": out["reconstruction"].mean(),
            },
            prog_bar=False,
            batch_size=n,
            sync_dist=True,
        )
        shown, n_shown = out["nll_estimate"].mean(), n
        if exact:
            found = out["converged"]
            nll_exact, n_found = converged_mean(out["nll_exact"], found)
            self.log(f"{prefix}/nll_exact", nll_exact, batch_size=n_found, sync_dist=True)
            self.log(
                f"{prefix}/exact_converged",
                found.float().mean(),
                batch_size=n,
                sync_dist=True,
            )
            if self.config.trainer.select_on == "exact":
                shown, n_shown = nll_exact, n_found
        self.log(
            f"{prefix}_nll", shown, prog_bar=True, logger=False, batch_size=n_shown, sync_dist=True
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    @torch.no_grad()
    def sample(
        self, n: int, c: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples in original units, ``(n, D)``; ``c`` is ``(n, C)`` or ``(1, C)``."""
        c = self._condition(c, n)
        return self.from_flow(self.flow.sample(n, c, generator=generator))

    @torch.no_grad()
    def sample_with_log_prob(
        self, n: int, c: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples in original units and their exact log-density there, ``(n, D), (n,)``.

        See :meth:`molfff.fff.FreeFormFlow.sample_with_log_prob`: the density is taken at the
        latent each sample was decoded from.
        """
        c = self._condition(c, n)
        chunk = self.config.trainer.jacobian_chunk
        v, log_q = self.flow.sample_with_log_prob(n, c, generator=generator, chunk_size=chunk)
        x = self.from_flow(v)
        return x, log_q - self.nll_offset(x)

    @torch.no_grad()
    def log_prob(self, x: Tensor, c: Tensor | None = None, exact: bool = True) -> Tensor:
        """Log-density of ``x`` ``(B, D)`` given ``c`` ``(B, C)`` or ``(1, C)``, in original
        units, ``(B,)`` (evaluation: no gradients): of the model that samples (``exact``: decoder
        preimage by Newton) or the paper's estimate at ``f(x)``; ``-inf`` outside the support
        of :meth:`set_support`."""
        c = self._condition(c, x.shape[0])
        offset, v = self.nll_offset(x), self.to_flow(x)
        t = self.config.trainer  # jacobian_chunk bounds memory for large particle systems
        if exact:
            lp = self.flow.log_prob(
                v,
                c,
                chunk_size=t.jacobian_chunk,
                max_iter=t.newton_max_iter,
                restarts=t.newton_restarts,
            )
        else:
            lp = self.flow.log_prob_estimate(v, c, chunk_size=t.jacobian_chunk)
        return (lp - offset).masked_fill(self.unconstrain.outside(x), -math.inf)

    def configure_optimizers(self):
        return configure_adam(self, self.config.optim)


def configure_adam(module: L.LightningModule, opt_cfg) -> dict | torch.optim.Optimizer:
    """Adam with the schedule ``optim.schedule`` names (one-cycle steps per batch)."""
    opt = torch.optim.Adam(module.parameters(), lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    if opt_cfg.schedule == "constant":
        return opt
    if opt_cfg.schedule == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=opt_cfg.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
    total = int(module.trainer.estimated_stepping_batches)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt_cfg.lr, total_steps=max(total, 1))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
