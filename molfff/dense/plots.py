"""Figures for 2-D densities: samples against data, learned density against the true one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_2d(
    model,
    data: Tensor,
    true_log_prob: Callable[[Tensor], Tensor] | None,
    out_dir: Path,
    n: int = 5000,
    grid: int = 120,
) -> list[Path]:
    """Write ``samples.png`` (data | model samples) and ``density.png``.

    ``density.png`` shows the true density, the exact density of the model that samples
    (``p_Z(z*) |det J_g(z*)|^-1`` with ``g(z*) = x``, ``model.log_prob``) on a grid, and a
    histogram of model samples.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data[:n].cpu()
    samples = model.sample(len(data), generator=torch.Generator().manual_seed(0)).cpu()
    lo = data.min(0).values - 0.5
    hi = data.max(0).values + 0.5
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, title in ((axes[0], data, "data"), (axes[1], samples, "FFF samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
    fig.tight_layout()
    paths = [out_dir / "samples.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    xs = torch.linspace(lo[0], hi[0], grid)
    ys = torch.linspace(lo[1], hi[1], grid)
    pts = torch.cartesian_prod(xs, ys)
    param = next(model.parameters())
    learned = (
        torch.cat([model.log_prob(chunk.to(param)).cpu() for chunk in pts.split(4096)])
        .exp()
        .reshape(grid, grid)
    )
    many = model.sample(200_000, generator=torch.Generator().manual_seed(1)).cpu()
    hist, _ = torch.histogramdd(many.float(), bins=[xs.float(), ys.float()], density=True)
    panels = [(learned, "model density (exact, decoder preimage)"), (hist, "histogram of samples")]
    if true_log_prob is not None:
        panels.insert(0, (true_log_prob(pts.double()).exp().reshape(grid, grid), "true density"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (dens, title) in zip(axes[0], panels, strict=True):
        ax.imshow(
            dens.T.float(), origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="viridis"
        )
        ax.set_title(title)
    fig.tight_layout()
    paths.append(out_dir / "density.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
