"""Helpers shared by the commands: notes on stderr, overrides, printing metrics."""

from __future__ import annotations

import json
import os
import sys

from molfff.files import json_safe


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def overrides(args) -> list[str]:
    return list(args.overrides) + list(args.set or [])


def spawned_rank() -> bool:
    """True in the worker processes that Lightning's DDP launcher re-executes this command in."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 and "MOLFFF_RUN_DIR" in os.environ


def print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(json_safe(metrics), indent=2))
        return
    split = metrics.get("split", "test")
    molecules = "nll_given_n_exact" in metrics
    # molecules: a single-sample variational bound over the dequantization
    unit = "dequantization bound, nats per molecule" if molecules else "nats per sample"
    names = {
        "exact": "exact (the density of the model that samples, at z* with g(z*) = x)",
        "estimate": "paper estimate (eq. 135, at z = f(x))",
    }
    for kind, name in names.items():
        if f"nll_{kind}" in metrics:
            print(
                f"{split} NLL, {name}, {unit}: {metrics[f'nll_{kind}']:.4f} ± "
                f"{metrics[f'nll_{kind}_stderr']:.4f}"
            )
    if "exact_converged" in metrics:
        print(
            f"  Newton solve of g(z*) = x from z = f(x): {100 * metrics['exact_converged']:.1f} % "
            f"converged (the exact NLL and KL average over these), median residual "
            f"||g(z*) - x|| {metrics['exact_residual_median']:.2g}"
        )
    if molecules:  # the size term -log p(n), and what it leaves out
        print(
            f"  per molecule, with -log p(n), over {metrics['n_nll']} of {metrics['n']} molecules"
        )
        if metrics["n_size_outside_support"]:
            print(
                f"  left out: {metrics['n_size_outside_support']} {split} molecules with a size "
                f"p(n) never saw in training (their NLL is +inf)"
            )
        for kind in names:
            print(
                f"{split} NLL given n, {kind} ({unit}, without -log p(n), all "
                f"{metrics['n']} molecules): {metrics[f'nll_given_n_{kind}']:.4f} ± "
                f"{metrics[f'nll_given_n_{kind}_stderr']:.4f}"
            )
    if "true_nll" in metrics:
        print(f"true NLL on the same points: {metrics['true_nll']:.4f}")
        for kind in names:
            print(
                f"  KL(p||q) from the {kind} NLL: {metrics[f'kl_{kind}']:.4f} ± "
                f"{metrics[f'kl_{kind}_stderr']:.4f}"
            )
    if "density_integral_exact" in metrics:
        print(
            "integral of q over the plot grid: "
            f"exact {metrics['density_integral_exact']:.4f}, "
            f"paper estimate {metrics['density_integral_estimate']:.4f} (1 if normalised; "
            f"preimage found at {100 * metrics['density_integral_exact_converged']:.1f} % of cells)"
        )
    print(f"reconstruction ||x - g(f(x))||^2: {metrics['reconstruction']:.3g}")
    for kind in names:
        if f"nll_{kind}_without_latent_constant" in metrics:
            print(
                f"{split} NLL, {kind}, without the latent normalising constant (flow-matching / "
                f"FFF paper convention): {metrics[f'nll_{kind}_without_latent_constant']:.4f}"
            )
    if "c2st" in metrics:
        per_obs = [v for k, v in metrics.items() if k.startswith("c2st/obs")]
        print(
            f"C2ST (mean over {len(per_obs)} observations): {metrics['c2st']:.4f}  "
            f"[{', '.join(f'{v:.3f}' for v in per_obs)}]"
        )
    samples = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("samples/")}
    if samples:
        n = samples.get("n_molecules", "")
        print(f"{int(n)} sampled molecules:" if n != "" else "sampled molecules:")
        for key in (
            "atom_stability",
            "molecule_stability",
            "validity",
            "uniqueness",
            "valid_unique",
            "novelty",
        ):
            if key in samples:
                print(f"  {key.replace('_', ' '):<20} {100 * samples[key]:6.2f} %")
    if "sampling_seconds_per_molecule" in metrics:
        print(
            f"sampling time: {1e3 * metrics['sampling_seconds_per_molecule']:.3f} ms per "
            "molecule (one decoder pass)"
        )
    for fig in metrics.get("figures", []):
        print(f"figure: {fig}")
