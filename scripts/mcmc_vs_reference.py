"""Compare local MCMC samples with the Klein et al. reference data (DW4, LJ13).

For each system: generate samples with :func:`molfff.boltzmann.mcmc.generate`, then print the
Wasserstein-1 distances of the reduced energies and of the interatomic distances against the
reference test split, next to two noise floors measured in the same run: reference val vs
reference test, and a second, independent MCMC run (another seed) vs the first. Writes a PNG of
overlaid histograms.

    python scripts/mcmc_vs_reference.py --out mcmc_vs_reference.png

Results go to stdout, progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from threadpoolctl import threadpool_limits

from molfff.boltzmann import get_energy
from molfff.boltzmann.data import load_split
from molfff.boltzmann.mcmc import ConvergenceWarning, generate
from molfff.errors import UserError

N_CHAINS = {"DW4": 500, "LJ13": 1000}


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def observables(system: str, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Reduced energies ``(N,)`` and all unique-pair distances ``(N·P,)``."""
    e = get_energy(system)
    x = x.double()
    return e(x).numpy(), e.pair_distances(x).numpy().ravel()


def two_short_fraction(distances: np.ndarray) -> float:
    """DW4 mode weight: fraction of samples with exactly two of their six pairs closer than 4."""
    return float(((distances.reshape(-1, 6) < 4.0).sum(1) == 2).mean())


def compare(system: str, n_samples: int, seed: int, progress: bool) -> dict:
    """Samples, observables and W1 distances of one system."""
    test = observables(system, load_split(system, "test"))
    val = observables(system, load_split(system, "val"))
    runs, diags = [], []
    for s in (seed, seed + 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            x, diag = generate(
                system, n_samples, n_chains=N_CHAINS[system], seed=s, progress=progress
            )
        for w in caught:
            _note(f"warning: {w.message}")
        runs.append(observables(system, x))
        diags.append(diag)
        _note(
            f"{system} seed {s}: {diag['seconds']:.1f} s, R-hat {diag['rhat_energy']:.3f}, "
            f"drift z {diag['drift_z']:.2f}, "
            f"acceptance {diag['acceptance']:.3f}, swaps {np.round(diag['swap_acceptance'], 3)}"
        )

    def w1(a, b):
        return [wasserstein_distance(a[k], b[k]) for k in range(2)]

    return {
        "mcmc": runs[0],
        "test": test,
        "val": val,
        "mcmc_vs_test": w1(runs[0], test),
        "val_vs_test": w1(val, test),
        "mcmc_vs_mcmc": w1(runs[0], runs[1]),
        "std_test": [float(test[0].std()), float(test[1].std())],
        "diagnostics": diags[0],
    }


def plot(results: dict, out: Path) -> None:
    """Overlaid energy and distance histograms, one row per system; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.6 * len(results)), squeeze=False)
    for row, (system, r) in enumerate(results.items()):
        for col, label in enumerate(("reduced energy u(x)", "interatomic distance")):
            ax = axes[row, col]
            lo = min(np.quantile(r[k][col], 0.001) for k in ("mcmc", "test", "val"))
            hi = max(np.quantile(r[k][col], 0.999) for k in ("mcmc", "test", "val"))
            bins = np.linspace(lo, hi, 80)
            for key, name, style in [
                ("test", "reference test", {"color": "k", "lw": 1.5}),
                ("val", "reference val", {"color": "0.5", "lw": 1.0, "ls": "--"}),
                ("mcmc", "MCMC (this package)", {"color": "C3", "lw": 1.5}),
            ]:
                ax.hist(r[key][col], bins=bins, density=True, histtype="step", label=name, **style)
            w = r["mcmc_vs_test"][col]
            ax.set_title(f"{system}: {label}  (W1 MCMC-test {w:.3g})")
            ax.set_xlabel(label)
            ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("mcmc_vs_reference.png"))
    parser.add_argument("--systems", nargs="+", default=["DW4", "LJ13"], choices=["DW4", "LJ13"])
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)"
    )
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.n_samples < 2 or args.threads < 1:
        parser.error("--n-samples must be >= 2 and --threads >= 1")
    # threadpoolctl, not torch.set_num_threads: see molfff/fff/linalg.py
    threadpool_limits(args.threads, user_api="openmp")
    try:
        start = time.perf_counter()
        results = {s: compare(s, args.n_samples, args.seed, args.progress) for s in args.systems}
        print(
            f"{'system':6} {'observable':10} {'W1 MCMC-test':>13} {'W1 val-test':>12} "
            f"{'W1 MCMC-MCMC':>13} {'std(test)':>10}"
        )
        for system, r in results.items():
            for k, name in enumerate(("energy", "distance")):
                print(
                    f"{system:6} {name:10} {r['mcmc_vs_test'][k]:13.4f} "
                    f"{r['val_vs_test'][k]:12.4f} {r['mcmc_vs_mcmc'][k]:13.4f} "
                    f"{r['std_test'][k]:10.4f}"
                )
        for system, r in results.items():
            d = r["diagnostics"]
            print(
                f"{system}: mean energy MCMC {r['mcmc'][0].mean():.3f}, reference test "
                f"{r['test'][0].mean():.3f}, val {r['val'][0].mean():.3f}; "
                f"R-hat {d['rhat_energy']:.3f}, drift z {d['drift_z']:.2f}, "
                f"acceptance {d['acceptance']:.3f}"
            )
            if system == "DW4":
                # equilibrium weight 0.517 by importance sampling (tests/test_boltzmann_data.py)
                frac = {k: two_short_fraction(r[k][1]) for k in ("mcmc", "test", "val")}
                print(
                    "DW4: fraction with exactly two short pairs (d < 4): "
                    + ", ".join(f"{k} {v:.3f}" for k, v in frac.items())
                )
        plot(results, args.out)
        _note(f"histograms: {args.out}; total {time.perf_counter() - start:.0f} s")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
