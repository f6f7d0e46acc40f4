"""Where a trained SBI flow puts the reference posterior in latent space, and where its samples
come from (tasks with two parameters).

For one observation ``x_o``, three panels:

1. ``z = f(theta, x_o)`` of sbibm's reference posterior samples, coloured by their first
   principal component in theta (the two crescents of two_moons get two colours);
2. ``z ~ N(0, I)``, coloured by whether ``g(z, x_o)`` lands on the reference's support (within
   the radius of :func:`sbi_off_support.support_radius`) or off it;
3. ``theta = g(z, x_o)`` over the reference, in the same colours.

A latent region that no reference sample maps to, but that holds prior mass, is decoded to
samples off the posterior's support: for a posterior with separated modes, the bridge across the
gap. Prints the share of latent draws that land off the support (the off-support share of
``scripts/sbi_off_support.py``, before prior rejection).

    python scripts/sbi_latent_view.py RUN [--observation 1] [--out latent.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sbi_off_support import (  # scripts/sbi_off_support.py
    check_figure_path,
    nearest_distance,
    support_radius,
)
from sbi_results import run_main  # scripts/sbi_results.py

from molfff.dense.sbi import NUM_OBSERVATIONS, observation, reference_posterior_samples
from molfff.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="checkpoint file or run folder of an SBI model")
    p.add_argument("--observation", type=int, default=1)
    p.add_argument("--n", type=int, default=20_000, help="latent draws")
    p.add_argument("--out", type=Path, default=Path("latent.png"))
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be positive, got {args.n}")
    if not 1 <= args.observation <= NUM_OBSERVATIONS:
        p.error(f"--observation must be 1..{NUM_OBSERVATIONS}, got {args.observation}")
    check_figure_path(args.out)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molfff.train.runs import load_model

    config, module, _ = load_model(args.run)
    if config.data.name != "sbi":
        raise UserError(f"{args.run}: not an SBI run (data.name={config.data.name})")
    task = config.data.task
    ref = reference_posterior_samples(task, args.observation)
    if ref.shape[1] != 2:
        raise UserError(f"{task} has {ref.shape[1]} parameters; this view draws two")
    module.eval()
    c = module._standardize_c(observation(task, args.observation).reshape(1, -1))
    gen = torch.Generator().manual_seed(args.observation)
    with torch.no_grad():
        z_ref = module.flow.encode(module.to_flow(ref), c.expand(len(ref), -1))
        z = torch.randn(args.n, 2, generator=gen)
        theta = module.from_flow(module.flow.decode(z, c.expand(args.n, -1)))
    support, radius = support_radius(ref.double())
    off = nearest_distance(theta.double(), support) > radius
    pc = torch.linalg.svd(ref - ref.mean(0), full_matrices=False).Vh[0]
    colour = (ref - ref.mean(0)) @ pc

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    lim = dict(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", xlabel="z_1", ylabel="z_2")
    axes[0].scatter(*z_ref.T, s=1, c=colour, cmap="coolwarm")
    angle = torch.linspace(0, 2 * torch.pi, 200)
    for r in (1, 2, 3):
        axes[0].plot(r * angle.cos(), r * angle.sin(), "k:", lw=0.5)
    axes[0].set(title=f"f(reference), obs {args.observation} (circles: 1-3 sd)", **lim)
    for mask, name, col in ((~off, "on the support", "tab:green"), (off, "off it", "tab:red")):
        axes[1].scatter(*z[mask].T, s=1, c=col, label=f"g(z) {name}")
        axes[2].scatter(*theta[mask][:5000].T, s=1, c=col, alpha=0.3)
    axes[1].set(title=f"z ~ N(0, I): {off.double().mean():.2f} decode off the support", **lim)
    axes[1].legend(markerscale=8, loc="lower right")
    axes[2].scatter(*ref[:5000].T, s=1, c="k", alpha=0.2)
    axes[2].set(title="theta = g(z) over the reference (black)", xlabel="theta_1", ylabel="theta_2")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    print(
        f"{task}, observation {args.observation}: {off.double().mean():.3f} of {args.n} latent "
        f"draws decode off the reference's support (radius {radius:.4f}, before prior rejection)"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
