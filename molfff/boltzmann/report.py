"""Reweighting a trained Boltzmann generator: weights, ESS, expectations, and a figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from molfff.boltzmann.reweight import (
    Estimate,
    evaluate_observable,
    interatomic_distances,
    kish_ess,
    log_importance_weights,
    low_ess_reason,
    normalized_weights,
    resolve_observables,
    reweighted_mean,
)
from molfff.errors import UserError


@dataclass
class ReweightReport:
    """Generator samples ``x`` ``(B, n·d)``, their energies and log-weights, and estimates.

    ``warning`` is :func:`~molfff.boltzmann.reweight.low_ess_reason` of the weights: None when
    the effective sample size is large enough to trust the reweighted estimates.
    """

    x: Tensor
    energy: Tensor
    log_w: Tensor
    ess: float
    warning: str | None = None
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)

    @property
    def ess_too_low(self) -> bool:
        return self.warning is not None

    def as_dict(self) -> dict:
        n = int(self.x.shape[0])
        out = {
            "n": n,
            "ess": self.ess,
            "ess_samples": self.ess * n,
            "ess_too_low": self.ess_too_low,
            "ess_warning": self.warning,
        }
        for name, ests in self.estimates.items():
            for kind, est in ests.items():
                out[f"{name}/{kind}"] = est.mean
                out[f"{name}/{kind}_stderr"] = est.stderr  # None (null): withheld
        return out


@torch.no_grad()
def sample_and_weigh(
    sample_with_log_prob: Callable[[int], tuple[Tensor, Tensor]],
    energy,
    n: int,
    batch_size: int = 1000,
    progress: bool = False,
) -> tuple:
    """Draw n samples in batches; return ``x (n, n·d)``, ``u (n,)``, ``log w (n,)``.

    Args:
        sample_with_log_prob: ``k -> (x (k, n·d), log q(x) (k,))``, the generator's samples with
            their exact density (e.g. ``FFFModule.sample_with_log_prob``).
        energy: reduced energy ``u`` on ``(B, n·d)``.
        n: number of samples.
        batch_size: samples per call.
        progress: show a progress bar on stderr.
    """
    from tqdm import tqdm

    xs, us, lqs = [], [], []
    with tqdm(
        total=n,
        desc="sampling + exact density",
        unit="sample",
        disable=not progress,
        file=__import__("sys").stderr,
    ) as bar:
        for i in range(0, n, batch_size):
            x, log_q = sample_with_log_prob(min(batch_size, n - i))
            xs.append(x)
            lqs.append(log_q)
            us.append(energy(x.double()))
            bar.update(len(x))
    x, u, log_q = torch.cat(xs), torch.cat(us), torch.cat(lqs)
    return x, u, log_importance_weights(log_q, u)


def reweight(
    x: Tensor,
    u: Tensor,
    log_w: Tensor,
    energy,
    observables: Sequence | Mapping,
    reference: Tensor | None = None,
) -> ReweightReport:
    """Raw and reweighted expectations of each observable (and the MCMC reference's mean).

    Args:
        x: ``(B, n·d)`` generator samples; ``u`` and ``log_w`` their ``(B,)`` reduced energies
            and log-weights (:func:`sample_and_weigh`).
        energy: the reduced energy, passed to the observables.
        observables: specs for :func:`~molfff.boltzmann.reweight.resolve_observables`, or its
            result.
        reference: ``(N, n·d)`` equilibrium samples whose plain means are reported alongside.

    The raw mean is the plain mean over the samples of non-zero weight (finite energy).

    Raises:
        UserError: if an observable raises, returns a wrong shape, or is NaN or infinite on a
            sample that counts (:func:`~molfff.boltzmann.reweight.evaluate_observable`).
    """
    report = ReweightReport(x, u, log_w, kish_ess(log_w), low_ess_reason(log_w))
    # raw: the plain mean over the samples of non-zero weight (an infinite energy, e.g. two
    # overlapping LJ particles, has no finite average and weight zero in the reweighted one)
    finite = torch.isfinite(log_w)
    flat = None if bool(finite.all()) else torch.where(finite, 0.0, -math.inf).double()
    for name, fn in resolve_observables(observables).items():
        values = evaluate_observable(name, fn, x, energy, "generated samples", log_w)
        ests = {"raw": reweighted_mean(values, flat), "reweighted": reweighted_mean(values, log_w)}
        if reference is not None:
            ests["reference"] = reweighted_mean(evaluate_observable(name, fn, reference, energy))
        report.estimates[name] = ests
    return report


def plot_reweighting(report: ReweightReport, energy, reference: Tensor | None, path: Path) -> Path:
    """Histograms of energies and interatomic distances: MCMC data, raw and reweighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = normalized_weights(report.log_w)
    w = weights.numpy()
    n, d = energy.n_particles, energy.spatial_dim
    dist = interatomic_distances(report.x.double(), n, d)
    pairs = dist.shape[1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    u = report.energy.numpy()
    finite = torch.isfinite(report.energy).numpy()
    lo, hi = (
        reference_range(energy(reference.double()))
        if reference is not None
        else (u[finite].min(), u[finite].max())
    )
    bins = torch.linspace(float(lo), float(hi), 60).numpy()
    if reference is not None:
        axes[0].hist(
            energy(reference.double()).numpy(), bins, density=True, alpha=0.5, label="MCMC data"
        )
    axes[0].hist(u[finite], bins, density=True, histtype="step", lw=1.5, label="FFF samples")
    axes[0].hist(
        u[finite],
        bins,
        weights=w[finite],
        density=True,
        histtype="step",
        lw=1.5,
        label="FFF reweighted",
    )
    axes[0].set_xlabel("reduced energy u(x)")
    axes[0].set_title(f"{energy.name}: ESS {100 * report.ess:.1f}%")
    if report.ess_too_low:
        fig.suptitle(
            f"ESS too low ({report.ess * len(u):.1f} effective samples): the reweighted "
            "histograms rest on a few samples and are biased",
            color="tab:red",
            fontsize=9,
        )
    count, mass = outside_window(report.energy, weights, lo, hi)
    if count:
        axes[0].text(
            0.02,
            0.98,
            f"{count} of {len(u)} samples off this axis\n"
            f"({100 * mass:.1f}% of the reweighted mass)",
            transform=axes[0].transAxes,
            va="top",
            fontsize=8,
        )
    if reference is not None:
        axes[1].hist(
            interatomic_distances(reference.double(), n, d).flatten().numpy(),
            80,
            density=True,
            alpha=0.5,
            label="MCMC data",
        )
    flat = dist.flatten().numpy()
    axes[1].hist(flat, 80, density=True, histtype="step", lw=1.5, label="FFF samples")
    axes[1].hist(
        flat,
        80,
        weights=w.repeat(pairs),
        density=True,
        histtype="step",
        lw=1.5,
        label="FFF reweighted",
    )
    axes[1].set_xlabel("interatomic distance")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as err:  # e.g. a folder that only looked writable: one message, no traceback
        raise UserError(f"figure {path} cannot be written ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return path


def outside_window(u: Tensor, w: Tensor, lo: float, hi: float) -> tuple[int, float]:
    """Samples whose energy ``u`` ``(B,)`` is outside ``[lo, hi]`` or not finite: their number,
    and their share of the normalised importance weights ``w`` ``(B,)``."""
    out = ~(torch.isfinite(u) & (u >= lo) & (u <= hi))
    return int(out.sum()), float(w.double()[out].sum())


def reference_range(u: Tensor) -> tuple[float, float]:
    """An energy window covering the reference data with a margin."""
    lo, hi = torch.quantile(u.float(), torch.tensor([0.001, 0.999]))
    pad = 0.25 * float(hi - lo)
    return float(lo) - pad, float(hi) + pad
