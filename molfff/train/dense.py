"""Dense tasks: rows ``x`` ``(B, D)`` with optional conditioning ``c`` ``(B, C)``, trained by
:class:`~molfff.train.module.FFFModule` on an :class:`~molfff.train.data.ArrayDataModule`.

:class:`DenseTask` implements the :class:`~molfff.train.task.Task` protocol once for every data
set held as in-memory splits (a :class:`~molfff.dense.splits.DenseData`); each application
(toy2d, sbi, miniboone here, boltzmann in :mod:`molfff.train.boltzmann`) only says how to load
its data and which ``data`` keys it has.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from molfff.dense.splits import DenseData
from molfff.errors import UserError
from molfff.files import atomic_write
from molfff.train.config import Config, DataConfig
from molfff.train.data import ArrayDataModule
from molfff.train.module import FFFModule
from molfff.train.task import SampleRequest


class DenseTask:
    """The :class:`~molfff.train.task.Task` of a dense data set; subclasses implement
    :meth:`load` and set :attr:`data_config`.

    Args:
        cfg: the ``data`` config section.
        seed: the run's seed (splits are a pure function of ``(cfg, seed)``).
        data: the splits, when already at hand (then :meth:`load` is not called).
    """

    data_config: type[DataConfig] = DataConfig

    def __init__(self, cfg: DataConfig, seed: int, data: DenseData | None = None):
        self.cfg, self.seed = cfg, seed
        self.name = cfg.name
        if data is not None:
            self.data = data

    def load(self) -> DenseData:
        raise NotImplementedError(f"{type(self).__name__} does not say how to load its data")

    @cached_property
    def data(self) -> DenseData:
        return self.load()

    def prepare(self) -> None:
        self.data  # noqa: B018 - loads and checks the splits

    def data_dim(self) -> int:
        return self.data.splits["train"].x.shape[1]

    def datamodule(self, config: Config) -> ArrayDataModule:
        return ArrayDataModule(
            self.data.splits,
            config.data.batch_size,
            config.trainer.eval_batch_size,
            seed=config.seed,
            num_workers=config.data.num_workers,
        )

    def new_module(self, config: Config) -> FFFModule:
        """FFFModule standardised with the training split's statistics (``data.standardize``),
        after mapping the task's support to the reals (``data.unconstrain``)."""
        train = self.data.splits["train"]
        cond_dim = 0 if train.c is None else train.c.shape[1]
        particles = self.data.particles
        module = FFFModule(config.to_dict(), train.x.shape[1], cond_dim, particles)
        if config.data.standardize and particles is not None:
            raise UserError(
                "config key data.standardize: particle systems keep their units "
                "(per-coordinate scaling would break equivariance); set it to false"
            )
        if config.data.unconstrain:
            self._set_support(module, train.x)
        if config.data.standardize:
            module.set_standardization(train.x, train.c)
        return module

    def _set_support(self, module: FFFModule, x: torch.Tensor) -> None:
        if self.data.support is None:
            raise UserError(
                f"config key data.unconstrain: task {self.name!r} does not know its data's "
                "support; set it to false"
            )
        module.set_support(*self.data.support)
        outside = int((~module.unconstrain.contains(x)).sum())
        if outside:
            raise UserError(
                f"config key data.unconstrain: {outside} training rows lie on or outside the "
                "task's support; set it to false"
            )

    def evaluate(self, module: FFFModule, split: str, config: Config) -> dict:
        """Exact NLL and reconstruction (and the task's own metrics on the test split)."""
        metrics = evaluate_dense(module, self.data, split, config.trainer.eval_batch_size)
        if self.data.extra_metrics is not None and split == "test":
            metrics.update(self.data.extra_metrics(module))
        return metrics

    def plot(self, module: FFFModule, run_dir: Path) -> list[Path]:
        return self.data.plot(module, run_dir)

    def sample(self, module: FFFModule, request: SampleRequest) -> torch.Tensor:
        """``(n, D)`` samples in original units, drawn ``request.batch_size`` at a time."""
        from tqdm import tqdm

        if request.stable_only or request.format:
            raise UserError("--stable-only and --format apply to molecule models only")
        if module.hparams.get("cond_dim", 0):
            raise UserError("this model is conditional; sample it through its task's command")
        if request.batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {request.batch_size}")
        if request.out is not None and Path(request.out).suffix not in (".csv", ".npy"):
            raise UserError(f"--out {request.out}: use a .csv or .npy file name")
        g = torch.Generator().manual_seed(request.seed)
        chunks = []
        with tqdm(
            total=request.n,
            desc="sampling",
            unit="sample",
            file=sys.stderr,
            disable=not request.progress or request.n <= request.batch_size,
        ) as bar:
            for i in range(0, request.n, request.batch_size):
                chunks.append(module.sample(min(request.batch_size, request.n - i), generator=g))
                bar.update(len(chunks[-1]))
        return torch.cat(chunks)

    def write_samples(self, samples: torch.Tensor, request: SampleRequest) -> str:
        """CSV (header ``x0,x1,...``) on stdout or to ``.csv``; ``.npy`` as a float array."""
        import numpy as np

        x = samples.numpy()
        csv = {
            "delimiter": ",",
            "fmt": "%.6g",
            "comments": "",
            "header": ",".join(f"x{i}" for i in range(x.shape[1])),
        }
        if request.out is None:
            np.savetxt(sys.stdout, x, **csv)
            return f"wrote {len(x)} samples to stdout"
        out = Path(request.out)
        with atomic_write(out) as fh:
            if out.suffix == ".npy":
                np.save(fh, x)
            else:
                np.savetxt(fh, x, **csv)
        return f"wrote {len(x)} samples to {out}"


@torch.no_grad()
def evaluate_dense(
    module: FFFModule, data: DenseData, split: str = "test", batch_size: int = 2048
) -> dict[str, float]:
    """Both NLLs of a split (nats per sample), how well g was inverted and, where the task knows
    p, the true NLL and KL(p || q) from each.

    ``nll_exact`` is the density of the model that samples (decoder preimage by Newton steps),
    averaged (like ``kl_exact``) over the ``exact_converged`` share of samples whose preimage was
    found; ``nll_estimate`` the paper's eq. 135 at ``z = f(x)``, over all samples;
    ``exact_residual_median`` is the median
    ``||g(z*) - x||`` and ``reconstruction`` the mean ``||g(f(x)) - x||^2`` (z-scored units).
    """
    rows = data.splits[split]
    module.eval()
    param = next(module.parameters())
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, rows.x.shape[0], batch_size):
        batch = [rows.x[i : i + batch_size].to(param)]
        if rows.c is not None:
            batch.append(rows.c[i : i + batch_size].to(param))
        for key, value in module.evaluate(batch).items():
            parts.setdefault(key, []).append(value.cpu())
    out = {key: torch.cat(v) for key, v in parts.items()}
    n = out["nll_exact"].numel()
    found = out["converged"]
    metrics: dict = {"split": split, "n": n}
    true_nll = None
    if data.true_log_prob is not None:
        true_nll = -data.true_log_prob(rows.x.double()).double()
        metrics["true_nll"] = true_nll.mean().item()
    for kind, mask in (("exact", found), ("estimate", torch.ones_like(found))):
        nll = out[f"nll_{kind}"].double()[mask]
        k = max(int(mask.sum()), 1)
        metrics[f"nll_{kind}"] = nll.mean().item() if mask.any() else math.nan
        metrics[f"nll_{kind}_stderr"] = (nll.std() / math.sqrt(k)).item() if k > 1 else math.nan
        if true_nll is not None:
            gap = nll - true_nll[mask]  # log p - log q per point: its mean is KL(p || q)
            metrics[f"kl_{kind}"] = gap.mean().item() if mask.any() else math.nan
            metrics[f"kl_{kind}_stderr"] = (gap.std() / math.sqrt(k)).item() if k > 1 else math.nan
    metrics["exact_converged"] = found.double().mean().item()
    metrics["exact_residual_median"] = out["residual"].double().median().item()
    metrics["reconstruction"] = out["reconstruction"].double().mean().item()
    if data.particles is not None:
        # flow-matching papers and the FFF paper's Table 1 leave out the latent's constant
        dims = module.flow.layout.dims(rows.x[:1]).item()
        for kind in ("exact", "estimate"):
            metrics[f"nll_{kind}_without_latent_constant"] = metrics[
                f"nll_{kind}"
            ] - 0.5 * dims * math.log(2 * math.pi)
    return metrics


@dataclass
class Toy2dData(DataConfig):
    """``density``: a 2-D Gaussian mixture with an exact density, ``ring`` or ``blobs``."""

    density: str = "ring"


class Toy2dTask(DenseTask):
    """Samples of a 2-D density with a known log-density (test KL, density plots)."""

    data_config = Toy2dData

    def load(self) -> DenseData:
        from molfff.dense.toy2d import toy2d_task

        c = self.cfg
        return toy2d_task(c.density, c.n_train, c.n_val, c.n_test, self.seed)


@dataclass
class SbiData(DataConfig):
    """``task``: an sbibm task; ``budget``: simulations for training + validation (10% held
    out); ``c2st_observations``: how many of the 10 observations to score by C2ST after
    training."""

    task: str = "two_moons"
    budget: int = 10000
    c2st_observations: int = 10


class SbiTask(DenseTask):
    """Amortised posterior estimation ``q(theta | x)`` on an sbibm task, scored by C2ST."""

    data_config = SbiData

    def load(self) -> DenseData:
        try:
            from molfff.dense.sbi_task import sbi_training_task
        except ImportError as err:
            raise UserError(
                f"SBI tasks need the sbi extra ({err}); run scripts/setup.sh or "
                "pip install -e '.[sbi]' && pip install --no-deps sbibm==1.1.0"
            ) from None
        c = self.cfg
        return sbi_training_task(c.task, c.budget, self.seed, c.n_test, c.c2st_observations)


class MiniBooNETask(DenseTask):
    """MINIBOONE density estimation in MAF's normalised units (``data.root``: the file)."""

    data_config = DataConfig

    def load(self) -> DenseData:
        from molfff.dense.tabular import miniboone_task

        c = self.cfg
        return miniboone_task(c.root, c.n_train, c.n_val, c.n_test, self.seed)
