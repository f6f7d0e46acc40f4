"""Training molecule flows: LightningModule, QM9 DataModule, evaluation of samples.

Validation reports two single-sample NLL bounds per molecule (nats) of :class:`MoleculeFlow`,
both with the exact decoder Jacobian (one JVP per degree of freedom):

* ``exact``: at the decoder's preimage ``z*`` of the dequantized molecule (Newton's method from
  ``f(x)``, at most ``trainer.newton_max_iter`` steps): the density of the model that samples.
* ``estimate``: the paper's eq. 135 at ``z = f(x)``; blind to how far ``g(f(x))`` is from ``x``.

Each comes in two forms:

* ``val/nll_given_n_{exact,estimate}``: ``-log p(x, h | n)``, the bound without the size term, over
  all molecules. The best checkpoint is chosen by ``val/nll_given_n_{trainer.select_on}``: p(n) is
  fitted to the training molecules, not trained, so it cannot change which weights are best.
* ``val/nll_{exact,estimate}``: the full bound ``-log p(x, h | n) - log p(n)``, averaged over the
  molecules whose size p(n) supports. With a small ``data.n_train`` some validation/test
  molecules have a size no training molecule has; their full NLL is +inf. They are counted in
  ``val/n_size_outside_support`` instead of turning the mean into inf.

Next to them: ``val/exact_converged`` (share of molecules whose Newton solve reached its
tolerance; the exact NLLs average over those, since the others have no exact value) and
``val/reconstruction`` (``||g(f(x)) - x||^2``). Evaluation after training reports the same
(:func:`nll_metrics`) and adds stability, validity, uniqueness and novelty of sampled molecules
and the sampling time per molecule.
"""

from __future__ import annotations

import io
import math
import sys
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from molfff.errors import UserError
from molfff.files import atomic_write
from molfff.molecules.flow import MoleculeBatch, MoleculeFlow
from molfff.molecules.io import WRITTEN, molecule_format
from molfff.molecules.qm9 import MAX_ATOMS
from molfff.molecules.sampling import sample_molecules, sample_stable
from molfff.train.checkpoint import AtomicCheckpointIO, SavesClassPath
from molfff.train.config import Config, DataConfig, config_from_dict
from molfff.train.data import EpochShuffleSampler
from molfff.train.module import configure_adam, converged_mean, micro_batch, step_generator
from molfff.train.task import SampleRequest

QM9_TYPES = 5  # H, C, N, O, F
QM9_MAX_ATOMS = MAX_ATOMS


def _mean_stderr(x: Tensor) -> tuple[float, float]:
    if x.numel() == 0:
        return math.nan, math.nan
    stderr = x.std() / math.sqrt(x.numel()) if x.numel() > 1 else torch.tensor(math.nan)
    return x.mean().item(), stderr.item()


NLL_KINDS = ("exact", "estimate")


def nll_metrics(out: dict[str, Tensor], inside: Tensor) -> dict:
    """Evaluation NLLs, nats per molecule, from the per-molecule values of :meth:`MoleculeFlow.nll
    <molfff.molecules.flow.MoleculeFlow.nll>` ``(N,)`` over a split.

    Args:
        out: ``nll_{exact,estimate}`` (with ``-log p(n)``, +inf where p(n) = 0),
            ``nll_given_n_{exact,estimate}``, ``converged``, ``residual``, ``reconstruction``.
        inside: ``(N,)`` bool, whether p(n) supports each molecule's size.

    Returns:
        ``n`` (molecules); ``nll_exact``, ``nll_estimate`` and their ``_stderr`` over the ``n_nll``
        molecules inside p(n)'s support (NaN if none; the exact ones over those of them whose
        preimage was found, ``exact_converged``); ``n_size_outside_support`` (left out:
        their full NLL is +inf); ``nll_given_n_exact``, ``nll_given_n_estimate`` and their
        ``_stderr`` over all molecules; ``exact_converged`` (share of converged Newton solves),
        ``exact_residual_median`` (median ``||g(z*) - x||``) and ``reconstruction`` (mean
        ``||g(f(x)) - x||^2``).
    """
    metrics: dict = {"n": inside.numel()}
    found = {"exact": out["converged"], "estimate": torch.ones_like(out["converged"])}
    for kind in NLL_KINDS:
        nll = out[f"nll_{kind}"].double()
        metrics[f"nll_{kind}"], metrics[f"nll_{kind}_stderr"] = _mean_stderr(
            nll[inside & found[kind]]
        )
    metrics["n_nll"] = int(inside.sum())
    metrics["n_size_outside_support"] = int((~inside).sum())
    for kind in NLL_KINDS:
        key = f"nll_given_n_{kind}"
        metrics[key], metrics[f"{key}_stderr"] = _mean_stderr(out[key].double()[found[kind]])
    metrics["exact_converged"] = out["converged"].double().mean().item()
    metrics["exact_residual_median"] = out["residual"].double().median().item()
    metrics["reconstruction"] = out["reconstruction"].double().mean().item()
    return metrics


class MoleculeModule(SavesClassPath, L.LightningModule):
    """Free-form flow training on molecules (PyG batches with pos, one_hot, charge).

    Args:
        config: the run configuration as a plain dict (saved in checkpoints).
        node_distribution: p(n) of the training set, ``n_max + 1`` probabilities.
    """

    def __init__(self, config: dict, node_distribution: list[float]):
        super().__init__()
        self.save_hyperparameters()
        self.config = config_from_dict(config)
        m = self.config.model
        largest = max((n for n, p in enumerate(node_distribution) if p > 0), default=0)
        if 0 < m.egnn_node_index < largest:
            raise UserError(
                f"model.egnn_node_index={m.egnn_node_index} tells apart at most that many atoms, "
                f"but the training molecules have up to {largest}; use 0 or at least {largest}"
            )
        self.flow = MoleculeFlow(
            QM9_TYPES,
            torch.tensor(node_distribution),
            hidden=m.width,
            blocks=m.blocks,
            dequantizer_blocks=m.dequantizer_blocks,
            charge_scale=m.charge_scale,
            type_offset=m.type_offset,
            egnn={
                "normalization_factor": m.egnn_normalization_factor,
                "node_index": m.egnn_node_index,
            },
        )

    @property
    def checkpoint_monitor(self) -> str | None:
        """The logged metric whose lowest value picks ``best.ckpt``: the NLL given n of
        ``trainer.select_on`` (see the module docstring); None for ``last``."""
        select_on = self.config.trainer.select_on
        return None if select_on == "last" else f"val/nll_given_n_{select_on}"

    def training_step(self, batch, batch_idx: int) -> Tensor:
        mol = MoleculeBatch.from_pyg(batch)
        gen = step_generator(
            self.config.seed,
            self.global_step,
            self.global_rank,
            mol.pos.device,
            micro_batch(self, batch_idx),
        )
        cfg = self.config.loss
        terms = self.flow.loss(
            mol,
            cfg.beta,
            gen,
            hutchinson_samples=cfg.hutchinson_samples,
            hutchinson_sphere=cfg.hutchinson_sphere,
            noise_std=cfg.noise_std,
            decoder_jvp=cfg.decoder_jvp,
        )
        loss = terms["loss"].mean()
        b = mol.num_graphs
        self.log_dict(
            {
                "train/loss": loss,
                "train/reconstruction": terms["reconstruction"].mean(),
                "train/nll_surrogate": terms["nll_surrogate"].mean(),
            },
            batch_size=b,
        )
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        mol = MoleculeBatch.from_pyg(batch)
        gen = torch.Generator(device=mol.pos.device).manual_seed(batch_idx)
        t = self.config.trainer
        out = self.flow.nll(mol, gen, chunk_size=t.jacobian_chunk, max_iter=t.newton_max_iter)
        inside = self.flow.log_p_size(mol.batch, mol.num_graphs).isfinite()
        b = mol.num_graphs
        found = out["converged"]  # the exact NLLs average over the molecules with a preimage
        given_n_exact, n_found = converged_mean(out["nll_given_n_exact"], found)
        self.log("val/nll_given_n_exact", given_n_exact, batch_size=n_found, sync_dist=True)
        self.log_dict(
            {
                "val/nll_given_n_estimate": out["nll_given_n_estimate"].mean(),
                "val/exact_converged": out["converged"].float().mean(),
                "val/reconstruction": out["reconstruction"].mean(),
            },
            batch_size=b,
            sync_dist=True,
        )
        self.log(
            "val_nll",
            given_n_exact if t.select_on == "exact" else out["nll_given_n_estimate"].mean(),
            prog_bar=True,
            logger=False,
            batch_size=b,
            sync_dist=True,
        )
        self.log(
            "val/n_size_outside_support",
            float(b - int(inside.sum())),
            reduce_fx="sum",
            sync_dist=True,
            batch_size=b,
        )
        if inside.any():  # the mean over the molecules whose full NLL is finite
            self.log(
                "val/nll_estimate",
                out["nll_estimate"][inside].mean(),
                batch_size=int(inside.sum()),
                sync_dist=True,
            )
        if (inside & found).any():
            self.log(
                "val/nll_exact",
                out["nll_exact"][inside & found].mean(),
                batch_size=int((inside & found).sum()),
                sync_dist=True,
            )

    def configure_optimizers(self):
        return configure_adam(self, self.config.optim)


def save_flow_checkpoint(flow: MoleculeFlow, config: Config, path: Path) -> None:
    """Write a :class:`MoleculeFlow` trained outside Lightning (e.g. ``scripts/qm9_ladder.py``)
    as the checkpoint ``molfff train qm9`` writes, for ``molfff sample/metrics/evaluate``.

    p(n) is the flow's own, zero-padded to ``QM9_MAX_ATOMS`` atoms as training keeps it, so
    larger test molecules are outside its support instead of an error. The file is written
    atomically.

    Raises:
        RuntimeError: the flow's weights do not fit the model ``config`` describes.
    """
    p_n = torch.zeros(QM9_MAX_ATOMS + 1, dtype=torch.float64)
    p_n[: flow.log_p_n.numel()] = flow.log_p_n.double().exp()
    module = MoleculeModule(config.to_dict(), p_n.tolist())
    state = flow.state_dict()
    state["log_p_n"] = module.flow.log_p_n
    module.flow.load_state_dict(state)
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)  # the class path, as Lightning's saves record it
    AtomicCheckpointIO().save_checkpoint(ckpt, path)


class QM9DataModule(L.LightningDataModule):
    """QM9 splits as PyG ``Data`` lists, capped at ``data.n_train/n_val/n_test`` molecules."""

    def __init__(self, splits: dict, batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.splits, self.seed = splits, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    def train_dataloader(self):
        from torch_geometric.loader import DataLoader

        data = self.splits["train"]
        return DataLoader(
            data,
            batch_size=min(self.batch_size, len(data)),
            drop_last=True,
            sampler=EpochShuffleSampler(len(data), self.seed),
        )

    def val_dataloader(self):
        from torch_geometric.loader import DataLoader

        return DataLoader(self.splits["val"], batch_size=self.eval_batch_size)


class QM9Task:
    """QM9 as a training task (the :class:`~molfff.train.task.Task` protocol).

    Args:
        cfg: the ``data`` config section (``n_train``/``n_val``/``n_test`` cap the standard
            splits by a seeded random subset).
        seed: the run's seed.
    """

    data_config = DataConfig

    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg, self.seed, self.name = cfg, seed, cfg.name
        self._pyg: dict = {}

    @staticmethod
    def _load_qm9():
        try:
            from molfff.molecules.qm9 import load_qm9
        except ImportError as err:  # pragma: no cover - depends on the install
            raise UserError(
                f"QM9 needs the molecules extra ({err}): pip install -e '.[molecules]'"
            ) from None
        return load_qm9

    @cached_property
    def molecules(self) -> dict:
        """The capped ``train``/``val``/``test`` :class:`~molfff.molecules.qm9.MoleculeSet` s."""
        load_qm9 = self._load_qm9()
        g = np.random.default_rng(self.seed)
        sets = {}
        for split, cap, name in (
            ("train", self.cfg.n_train, "train"),
            ("val", self.cfg.n_val, "valid"),
            ("test", self.cfg.n_test, "test"),
        ):
            ms = load_qm9(name)
            if cap < len(ms):
                ms = ms.subset(np.sort(g.choice(len(ms), cap, replace=False)))
            sets[split] = ms
        return sets

    @cached_property
    def node_distribution(self) -> np.ndarray:
        """p(n) of the molecules trained on (the training split capped at ``data.n_train``),
        ``n_max + 1`` probabilities: the model samples sizes from the data it learned."""
        return self.molecules["train"].node_count_distribution(QM9_MAX_ATOMS).numpy()

    def prepare(self) -> None:
        self.molecules  # noqa: B018 - loads the splits

    def pyg(self, split: str) -> list:
        if split not in self._pyg:
            self._pyg[split] = self.molecules[split].to_pyg()
        return self._pyg[split]

    def datamodule(self, config: Config) -> QM9DataModule:
        splits = {s: self.pyg(s) for s in ("train", "val")}
        return QM9DataModule(splits, config.data.batch_size, config.data.batch_size, config.seed)

    def new_module(self, config: Config) -> MoleculeModule:
        if config.model.network != "egnn":
            raise UserError(
                f"config key model.network: molecules are modelled by the EGNN flow only "
                f"(model.network=egnn), got {config.model.network!r}"
            )
        index = config.model.egnn_node_index
        largest = max(int(self.molecules[split].num_atoms.max()) for split in self.molecules)
        if 0 < index < largest:  # validation and evaluation would meet larger molecules
            raise UserError(
                f"model.egnn_node_index={index} tells apart at most {index} atoms, but this "
                f"run's QM9 splits, which validation and evaluation score, have molecules of up "
                f"to {largest}; use 0 or at least {largest} (labelled atoms of one small "
                "molecule: scripts/qm9_ladder.py --distinguishable)"
            )
        return MoleculeModule(config.to_dict(), self.node_distribution.tolist())

    def evaluate(self, module: MoleculeModule, split: str, config: Config) -> dict:
        """Both NLL bounds on the split (:func:`nll_metrics`), and metrics of
        ``evaluation.samples`` samples."""
        from torch_geometric.loader import DataLoader

        from molfff.molecules.metrics import evaluate as molecule_metrics
        from molfff.molecules.metrics import qm9_smiles

        index = config.model.egnn_node_index
        largest = int(self.molecules[split].num_atoms.max())
        if 0 < index < largest:  # before any work: the network cannot take these molecules
            raise UserError(
                f"this model tells apart at most {index} atoms (model.egnn_node_index), but the "
                f"{split} split has molecules of up to {largest}; its NLL cannot be evaluated "
                "there (molfff sample and molfff metrics work)"
            )
        module.eval()
        device = module.device  # evaluation runs where the module is (CPU or GPU)
        t = config.trainer
        parts: dict[str, list[Tensor]] = {}
        for i, batch in enumerate(DataLoader(self.pyg(split), batch_size=config.data.batch_size)):
            mol = MoleculeBatch.from_pyg(batch.to(device))
            out = module.flow.nll(
                mol,
                torch.Generator(device=device).manual_seed(i),
                chunk_size=t.jacobian_chunk,
                max_iter=t.newton_max_iter,
            )
            out["inside"] = module.flow.log_p_size(mol.batch, mol.num_graphs).isfinite()
            for key, value in out.items():
                parts.setdefault(key, []).append(value.cpu())
        out = {key: torch.cat(values) for key, values in parts.items()}
        inside = out.pop("inside")
        metrics = {"split": split, **nll_metrics(out, inside)}
        n = config.evaluation.samples
        if n > 0:
            molecules, seconds = sample_molecules(module.flow, n, seed=config.seed)
            train_smiles = qm9_smiles("train") if config.evaluation.novelty else None
            scores = molecule_metrics(molecules, train_smiles=train_smiles)
            metrics.update({f"samples/{k}": v for k, v in scores.items()})
            metrics["sampling_seconds_per_molecule"] = seconds / n
        return metrics

    def callbacks(self, config: Config, run_dir: Path) -> list:
        """A :class:`~molfff.train.sample_curve.SampleCurve` when
        ``evaluation.curve_every_n_steps`` is set: ``evaluation.curve_samples`` molecules (one
        seed for every point) scored by stability, validity and uniqueness."""
        every, n = config.evaluation.curve_every_n_steps, config.evaluation.curve_samples
        if not every:
            return []
        from molfff.molecules.metrics import evaluate as molecule_metrics
        from molfff.train.sample_curve import SampleCurve

        def score(module: MoleculeModule) -> dict:
            molecules, seconds = sample_molecules(module.flow, n, seed=config.seed)
            return {**molecule_metrics(molecules), "sampling_seconds": round(seconds, 2)}

        path = Path(run_dir) / "sample_curve.jsonl"
        return [SampleCurve(score, every, path, n, title=f"{self.name}: ")]

    def plot(self, module: MoleculeModule, run_dir: Path) -> list[Path]:
        """``samples.png``: a grid of sampled molecules, titled with the training step of the
        weights drawn (the best checkpoint's, else the module's). Skipped, with a note on
        stderr, where RDKit's drawing cannot load (no RDKit, or a headless node without the X
        rendering libraries it links): the figure must not cost the run's results."""
        try:
            from rdkit.Chem import Draw  # noqa: F401  (fails on nodes without libXrender)

            from molfff.molecules.grid import GRID_MOLECULES, write_grid
        except (ImportError, OSError) as err:
            print(f"samples.png skipped: RDKit drawing unavailable ({err})", file=sys.stderr)
            return []
        from molfff.train.checkpoint import read_checkpoint

        best = Path(run_dir) / "checkpoints" / "best.ckpt"
        step = read_checkpoint(best).get("global_step") if best.is_file() else None
        step = module.global_step if step is None else step
        molecules, _ = sample_molecules(module.flow, GRID_MOLECULES, seed=self.seed)
        ema = f", EMA {module.config.model.ema_decay}" if module.config.model.ema_decay else ""
        title = f"{self.name}: {GRID_MOLECULES} samples at training step {step}{ema}"
        return [write_grid(molecules, Path(run_dir) / "samples.png", title)]

    def sample(self, module: MoleculeModule, request: SampleRequest) -> list:
        """Molecules ``(pos, z)``; only stable ones with ``request.stable_only``."""
        if self._format(request) not in WRITTEN:
            raise UserError(f"molecules are written as xyz or sdf, not {self._format(request)!r}")
        molecules, drawn, stable = sample_stable(
            module.flow,
            request.n,
            request.stable_only,
            seed=request.seed,
            batch_size=request.batch_size,
            max_draws=request.max_draws,
            progress=request.progress,
        )
        if request.stable_only:
            print(
                f"{request.n} stable molecule{'s' * (request.n != 1)} kept; "
                f"{stable} of the {drawn} drawn were stable ({100 * stable / drawn:.1f}%)",
                file=sys.stderr,
            )
        return molecules

    def write_samples(self, molecules: list, request: SampleRequest) -> str:
        """Multi-frame xyz (default) or SDF, to stdout or ``request.out``."""
        from molfff.molecules.io import write_sdf, write_xyz
        from molfff.molecules.metrics import is_stable

        buffer = io.StringIO()
        if self._format(request) == "xyz":
            comments = [f"molecule {i} stable={is_stable(*m)}" for i, m in enumerate(molecules)]
            write_xyz(molecules, buffer, comments)
        else:
            write_sdf(molecules, buffer)
        if request.out is None:
            sys.stdout.write(buffer.getvalue())
            return f"wrote {len(molecules)} molecules to stdout"
        with atomic_write(Path(request.out), "w", encoding="utf-8") as fh:
            fh.write(buffer.getvalue())
        return f"wrote {len(molecules)} molecules to {request.out}"

    @staticmethod
    def _format(request: SampleRequest) -> str:
        if request.format:
            return request.format
        return molecule_format(request.out) if request.out else "xyz"
