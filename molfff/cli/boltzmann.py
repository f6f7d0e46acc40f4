"""`molfff reweight` and `molfff data generate` for Boltzmann generators."""

from __future__ import annotations

import json
import os
from pathlib import Path

from molfff.cli.common import note
from molfff.errors import UserError


def cmd_reweight(args) -> int:
    import torch

    from molfff.boltzmann.reweight import check_observable, resolve_observables

    # every argument is checked before the model is loaded and sampled (minutes for LJ55)
    if args.n <= 1:
        raise UserError(f"--n must be at least 2, got {args.n}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    observables = resolve_observables(args.observable or ["energy", "mean_distance"])
    from molfff.train.runs import resolve_checkpoint  # imports Lightning: seconds

    ckpt = resolve_checkpoint(args.checkpoint, Path(args.runs))
    plot = Path(args.plot) if args.plot else ckpt.parent.parent / "reweight.png"
    check_figure_path(plot, hint="" if args.plot else "; pass --plot PATH")

    from molfff.boltzmann.report import plot_reweighting, reweight, sample_and_weigh
    from molfff.train.runs import load_model
    from molfff.train.task import Reweightable, supports
    from molfff.train.tasks import build_task

    config, module, ckpt = load_model(ckpt)
    task = build_task(config.data, config.seed)
    if not supports(task, Reweightable):
        raise UserError(
            f"{ckpt} is a {config.data.name} model; reweighting needs a "
            "Boltzmann generator (data.name: boltzmann)"
        )
    energy = task.energy()
    reference = task.reference("test")
    for name, fn in observables.items():
        check_observable(name, fn, reference[:2], energy)
    torch.manual_seed(args.seed)
    note(f"reweighting {args.n} samples of {ckpt} to exp(-u) of {energy.name}")
    x, u, log_w = sample_and_weigh(
        module.sample_with_log_prob, energy, args.n, batch_size=args.batch_size, progress=True
    )
    report = reweight(x, u, log_w, energy, observables, reference)
    if report.ess_too_low:
        note(f"warning: {report.warning}; error bars withheld")
    plot = plot_reweighting(report, energy, reference, plot)
    result = report.as_dict() | {"checkpoint": str(ckpt), "figure": str(plot)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ess_line = f"effective sample size (Kish): {100 * report.ess:.2f}% of {args.n}"
    print(ess_line + ("   TOO LOW: reweighted values unreliable" if report.ess_too_low else ""))
    for name, ests in report.estimates.items():
        cols = "   ".join(f"{kind} {est}" for kind, est in ests.items())
        print(f"<{name}>  {cols}")
    print(f"figure: {plot}")
    return 0


def check_figure_path(path: Path, hint: str = "") -> None:
    """Refuse a figure path matplotlib cannot write, before any long work.

    Raises:
        UserError: for a suffix matplotlib has no writer for, or a folder that is not a
            writable directory (nor creatable inside one).
    """
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise UserError(
            f"figure {path}: the suffix must be one of {', '.join('.' + f for f in formats)}"
        )
    folder = path.parent.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"figure {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"figure {path}: cannot write in {existing}{hint}")
    if path.is_dir():
        raise UserError(f"figure {path} is a folder")


def cmd_data_generate(args) -> int:
    import warnings

    from threadpoolctl import threadpool_limits

    from molfff.boltzmann.data import LOCAL_DIR, save_samples
    from molfff.boltzmann.energies import get_energy
    from molfff.boltzmann.mcmc import ConvergenceWarning, generate

    energy = get_energy(args.system)  # unknown names: one clear message
    if args.n <= 0 or args.chains <= 0:
        raise UserError(f"--n and --chains must be positive, got {args.n} and {args.chains}")
    out = Path(args.out) if args.out else LOCAL_DIR / f"{args.split}_split_{energy.name}.npy"
    if out.suffix != ".npy":
        raise UserError(f"--out {out}: samples are written as a .npy file")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    note(f"MCMC for {energy.name}: {args.n} samples from {args.chains} chains")
    # many small ops: threads cost more than they give. threadpoolctl sets the OpenMP pool for this
    # block only; torch's own thread setter would leave batched LU unsafe (fff/linalg.py)
    with (
        threadpool_limits(args.threads, user_api="openmp"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ConvergenceWarning)
        x, diag = generate(
            energy.name,
            args.n,
            n_chains=args.chains,
            burn_in=args.burn_in,
            thin=args.thin,
            seed=args.seed,
            progress=True,
        )
    for w in caught:
        note(f"warning: {w.message}")
    save_samples(out, x)
    summary = {k: v for k, v in diag.items() if isinstance(v, (int, float, bool, str))}
    note(f"wrote {len(x)} samples to {out}")
    print(
        json.dumps(summary, indent=2)
        if args.json
        else "\n".join(f"{k}: {v}" for k, v in summary.items())
    )
    return 0
