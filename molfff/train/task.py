"""What the runner and the command line need of an application: the :class:`Task` protocol.

A task turns the ``data`` config section into a DataModule and a LightningModule, evaluates and
plots a trained module, and samples it for ``molfff sample``. Optional abilities are protocols of
their own (:class:`BetaSearchable`, :class:`Reweightable`); :func:`supports` asks a task for one.
Tasks are registered by ``data.name`` in :mod:`molfff.train.tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import lightning as L
from torch import Tensor

from molfff.train.config import Config, DataConfig


@dataclass
class SampleRequest:
    """What ``molfff sample`` asks for.

    Attributes:
        n: number of samples.
        seed: sampling seed.
        batch_size: samples per network call.
        out: output file (None: stdout).
        stable_only: molecules: keep sampling until ``n`` stable ones exist.
        format: output format where a task writes several (e.g. ``xyz``, ``sdf``).
        progress: show a progress bar on stderr.
        max_draws: molecules, with ``stable_only``: draws at most (None: 100 n).
    """

    n: int
    seed: int = 0
    batch_size: int = 1000
    out: Path | None = None
    stable_only: bool = False
    format: str | None = None
    progress: bool = True
    max_draws: int | None = None


@runtime_checkable
class Task(Protocol):
    """One application: data, model, evaluation, figures and samples.

    Constructing a task (``TaskClass(config.data, seed)``) is cheap; data are loaded on first
    use, or by :meth:`prepare`. The same (data config, seed) always gives the same splits.
    """

    #: schema of the ``data`` config section (a subclass of :class:`DataConfig`)
    data_config: ClassVar[type[DataConfig]]
    name: str

    def prepare(self) -> None:
        """Load and check the data; raises UserError for bad data settings or files."""

    def datamodule(self, config: Config) -> L.LightningDataModule:
        """The train/val/test DataModule."""

    def new_module(self, config: Config) -> L.LightningModule:
        """A fresh LightningModule for ``config`` (after :meth:`datamodule`; seeded by caller).

        Its checkpoints must rebuild it (see :mod:`molfff.train.checkpoint`)."""

    def evaluate(self, module: L.LightningModule, split: str, config: Config) -> dict:
        """Metrics of a trained module on ``split`` (``nll_exact``, ``nll_estimate`` with their
        ``_stderr``, ``exact_converged``, ``exact_residual_median``, ``reconstruction`` first)."""

    def plot(self, module: L.LightningModule, run_dir: Path) -> list[Path]:
        """Figures of a trained module written into ``run_dir``; the files written."""

    def sample(self, module: L.LightningModule, request: SampleRequest) -> Any:
        """Samples of a trained module (checks the request before any sampling)."""

    def write_samples(self, samples: Any, request: SampleRequest) -> str:
        """Write samples to ``request.out`` (stdout if None); a note saying what was written."""


@runtime_checkable
class BetaSearchable(Protocol):
    """A task whose beta can be searched by short runs (:mod:`molfff.train.beta_search`)."""

    def data_dim(self) -> int:
        """Dimension the reconstruction error is divided by to judge a run."""


@runtime_checkable
class HasCallbacks(Protocol):
    """A task that adds Lightning callbacks to its training runs (e.g. sample curves)."""

    def callbacks(self, config: Config, run_dir: Path) -> list:
        """Callbacks for a run of ``config`` writing into ``run_dir`` (may be empty)."""


@runtime_checkable
class Reweightable(Protocol):
    """A Boltzmann generator's task: target energy and reference samples for reweighting."""

    def energy(self) -> Any:
        """The target :class:`molfff.boltzmann.energies.Energy` (``u(x)`` in kT)."""

    def reference(self, split: str) -> Tensor:
        """Reference samples ``(N, n·d)`` of ``split``."""


def supports(task: Task, ability: type) -> bool:
    """Whether ``task`` has an optional ability (a protocol of this module)."""
    return isinstance(task, ability)
