"""`molfff reweight` and `molfff data generate` for Boltzmann generators."""

from __future__ import annotations

import json
from pathlib import Path

from molfff.cli.common import note
from molfff.errors import UserError


def cmd_reweight(args) -> int:
    import torch

    from molfff.boltzmann.report import plot_reweighting, reweight, sample_and_weigh
    from molfff.train.runs import load_model, resolve_checkpoint
    from molfff.train.task import Reweightable, supports
    from molfff.train.tasks import build_task

    if args.n <= 1:
        raise UserError(f"--n must be at least 2, got {args.n}")
    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    task = build_task(config.data, config.seed)
    if not supports(task, Reweightable):
        raise UserError(
            f"{ckpt} is a {config.data.name} model; reweighting needs a "
            "Boltzmann generator (data.name: boltzmann)"
        )
    energy = task.energy()
    reference = task.reference("test")
    torch.manual_seed(args.seed)
    note(f"reweighting {args.n} samples of {ckpt} to exp(-u) of {energy.name}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    x, u, log_w = sample_and_weigh(
        module.sample_with_log_prob, energy, args.n, batch_size=args.batch_size, progress=True
    )
    report = reweight(
        x,
        u,
        log_w,
        energy,
        args.observable or ["energy", "mean_distance"],
        reference,
        seed=args.seed,
    )
    run_dir = resolve_checkpoint(args.checkpoint, Path(args.runs)).parent.parent
    plot = plot_reweighting(
        report, energy, reference, Path(args.plot) if args.plot else run_dir / "reweight.png"
    )
    result = report.as_dict() | {"checkpoint": str(ckpt), "figure": str(plot)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"effective sample size (Kish): {100 * report.ess:.2f}% of {args.n}")
    for name, ests in report.estimates.items():
        cols = "   ".join(f"{kind} {est}" for kind, est in ests.items())
        print(f"<{name}>  {cols}")
    print(f"figure: {plot}")
    return 0


def cmd_data_generate(args) -> int:
    import warnings

    import torch

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
    torch.set_num_threads(args.threads)  # many small ops: threads cost more than they give
    note(f"MCMC for {energy.name}: {args.n} samples from {args.chains} chains")
    with warnings.catch_warnings(record=True) as caught:
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
