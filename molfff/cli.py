"""The ``molfff`` command line: train, sample, evaluate, reweight.

Every error a user can cause (files, flags, configs, checkpoints) ends in one line on stderr and
exit status 2; results go to stdout, progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from molfff.errors import UserError


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _overrides(args) -> list[str]:
    return list(args.overrides) + list(args.set or [])


def _spawned_rank() -> bool:
    """True in the worker processes that Lightning's DDP launcher re-executes this command in."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 and "MOLFFF_RUN_DIR" in os.environ


def cmd_train(args) -> int:
    from molfff.train.config import load_config
    from molfff.train.runner import load_run_config, make_run_dir, train

    if args.resume:
        run_dir = Path(args.config)
        if not run_dir.is_dir():
            raise UserError(f"--resume needs a run folder, got {run_dir}")
        from molfff.train.checkpoint import read_checkpoint
        from molfff.train.config import build_config

        config = build_config(load_run_config(run_dir).to_dict(), _overrides(args))
        read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    else:
        config = load_config(args.config, _overrides(args), fast=args.fast)
        run_dir = None
    from molfff.train.tasks import build_task

    task = build_task(config.data, config.seed)  # bad data settings fail before any folder exists
    if args.run_dir:
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    if _spawned_rank():  # same run folder and beta as rank 0, which started this process
        run_dir = Path(os.environ["MOLFFF_RUN_DIR"])
        if "MOLFFF_BETA" in os.environ:
            beta = float(os.environ["MOLFFF_BETA"])
            config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, beta=beta))
    elif args.beta_search:
        from molfff.train.beta_search import search_beta

        _note(f"beta search over {config.beta_search.epochs}-epoch runs:")
        beta, _ = search_beta(config, report=_note, task=task)
        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, beta=beta))
        os.environ["MOLFFF_BETA"] = repr(beta)
    if run_dir is None:
        run_dir = make_run_dir(config)
    os.environ["MOLFFF_RUN_DIR"] = str(run_dir)
    if not _spawned_rank():
        _note(f"run folder: {run_dir}")
    result = train(config, run_dir=run_dir, resume=args.resume, task=task)
    if not result.metrics:  # a non-zero rank of a distributed run
        return 0
    _print_metrics(result.metrics, args.json)
    _note(f"checkpoints: {run_dir / 'checkpoints'}; metrics: {run_dir / 'metrics.json'}")
    return 0


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    split = metrics.get("split", "test")
    print(f"{split} NLL (exact, nats): {metrics['nll']:.4f} ± {metrics['nll_stderr']:.4f}")
    if "true_nll" in metrics:
        print(
            f"true NLL on the same points: {metrics['true_nll']:.4f}   "
            f"KL(p||q): {metrics['kl']:.4f} ± {metrics['kl_stderr']:.4f}"
        )
    print(f"reconstruction ||x - g(f(x))||^2: {metrics['reconstruction']:.3g}")
    if "nll_without_latent_constant" in metrics:
        print(
            f"{split} NLL without the latent normalising constant (flow-matching / FFF paper "
            f"convention): {metrics['nll_without_latent_constant']:.4f}"
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


def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from molfff.train.runner import load_model

    if args.n <= 0:
        raise UserError(f"--n must be positive, got {args.n}")
    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    _note(f"sampling {args.n} from {ckpt}")
    if module.hparams.get("kind") == "molecules":
        return sample_molecules_command(args, module)
    if args.stable_only or args.format:
        raise UserError("--stable-only and --format apply to molecule models only")
    if module.hparams.get("cond_dim", 0):
        raise UserError("this model is conditional; sample it through its task's command")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    from tqdm import tqdm

    g = torch.Generator().manual_seed(args.seed)
    chunks = []
    with tqdm(
        total=args.n,
        desc="sampling",
        unit="sample",
        file=sys.stderr,
        disable=args.n <= args.batch_size,
    ) as bar:
        for i in range(0, args.n, args.batch_size):
            chunks.append(module.sample(min(args.batch_size, args.n - i), generator=g))
            bar.update(len(chunks[-1]))
    x = torch.cat(chunks).numpy()
    if args.out is None:
        np.savetxt(
            sys.stdout,
            x,
            delimiter=",",
            fmt="%.6g",
            header=",".join(f"x{i}" for i in range(x.shape[1])),
            comments="",
        )
        return 0
    out = Path(args.out)
    if out.suffix not in (".csv", ".npy"):
        raise UserError(f"--out {out}: use a .csv or .npy file name")
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".npy":
        with open(tmp, "wb") as fh:
            np.save(fh, x)
    else:
        np.savetxt(
            tmp,
            x,
            delimiter=",",
            fmt="%.6g",
            header=",".join(f"x{i}" for i in range(x.shape[1])),
            comments="",
        )
    tmp.replace(out)
    _note(f"wrote {len(x)} samples to {out}")
    return 0


def sample_molecules_command(args, module) -> int:
    """Molecules as multi-frame xyz (default) or SDF, to stdout or ``--out``."""
    import io

    from molfff.molecules.io import write_sdf, write_xyz
    from molfff.molecules.metrics import is_stable
    from molfff.train.molecules import sample_stable

    fmt = args.format or (Path(args.out).suffix.lstrip(".") if args.out else "xyz")
    if fmt not in ("xyz", "sdf"):
        raise UserError(f"molecules are written as xyz or sdf, not {fmt!r}")
    molecules, drawn = sample_stable(
        module.flow, args.n, args.stable_only, seed=args.seed, batch_size=args.batch_size
    )
    if args.stable_only:
        _note(f"{args.n} stable molecules from {drawn} draws ({100 * args.n / drawn:.1f}% stable)")
    buffer = io.StringIO()
    if fmt == "xyz":
        comments = [f"molecule {i} stable={is_stable(*m)}" for i, m in enumerate(molecules)]
        write_xyz(molecules, buffer, comments)
    else:
        write_sdf(molecules, buffer)
    if args.out is None:
        sys.stdout.write(buffer.getvalue())
        return 0
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(buffer.getvalue())
    tmp.replace(out)
    _note(f"wrote {len(molecules)} molecules to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from molfff.train.runner import evaluate, load_model
    from molfff.train.tasks import build_task

    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    _note(f"evaluating {ckpt} on the {args.split} split")
    task = build_task(config.data, config.seed)
    metrics = evaluate(module, task, args.split, config)
    metrics["checkpoint"] = str(ckpt)
    _print_metrics(metrics, args.json)
    return 0


def cmd_reweight(args) -> int:
    import torch

    from molfff.boltzmann.data import load_split
    from molfff.boltzmann.energies import get_energy
    from molfff.boltzmann.report import plot_reweighting, reweight, sample_and_weigh
    from molfff.train.runner import load_model, resolve_checkpoint

    if args.n <= 1:
        raise UserError(f"--n must be at least 2, got {args.n}")
    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    if config.data.name != "boltzmann":
        raise UserError(
            f"{ckpt} is a {config.data.name} model; reweighting needs a "
            "Boltzmann generator (data.name: boltzmann)"
        )
    energy = get_energy(config.data.system)
    reference = load_split(config.data.system, "test", config.data.root)
    torch.manual_seed(args.seed)
    _note(f"reweighting {args.n} samples of {ckpt} to exp(-u) of {energy.name}")
    x, u, log_w = sample_and_weigh(module.sample, module.log_prob, energy, args.n, progress=True)
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


def cmd_metrics(args) -> int:
    from molfff.molecules.report import run_metrics

    _, text = run_metrics(args.file, args.json, not args.no_novelty, note=_note)
    print(text)
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
    _note(f"MCMC for {energy.name}: {args.n} samples from {args.chains} chains")
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
        _note(f"warning: {w.message}")
    save_samples(out, x)
    summary = {k: v for k, v in diag.items() if isinstance(v, (int, float, bool, str))}
    _note(f"wrote {len(x)} samples to {out}")
    print(
        json.dumps(summary, indent=2)
        if args.json
        else "\n".join(f"{k}: {v}" for k, v in summary.items())
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="molfff",
        description="Free-form flows: train, sample, evaluate, reweight, score molecules. "
        "See README.md.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a config in configs/ (or a YAML path)")
    t.add_argument("config", help="config name (toy2d) or path; with --resume, a run folder")
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. loss.beta=20 trainer.max_epochs=5",
    )
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="same as a positional override; may be repeated",
    )
    t.add_argument("--fast", action="store_true", help="apply the config's short `fast` preset")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run folder given as CONFIG from its last checkpoint",
    )
    t.add_argument(
        "--beta-search",
        action="store_true",
        help="pick beta by short runs over factors of 10 first (paper app. B.4)",
    )
    t.add_argument(
        "--run-dir",
        default=None,
        help="use this run folder instead of a new one "
        "under run.root (multi-node runs: the same shared path on every node)",
    )
    t.add_argument("--json", action="store_true", help="print final metrics as JSON")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser(
        "reweight", help="importance weights, ESS and reweighted expectations (Boltzmann)"
    )
    r.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        help="checkpoint file or run folder (default: the most recent run)",
    )
    r.add_argument("--runs", default="runs", help="where runs live (default: runs)")
    r.add_argument("--n", type=int, default=10000, help="number of generated samples")
    r.add_argument(
        "--observable",
        action="append",
        metavar="NAME",
        help="energy, mean_distance, or package.module:function taking (x, energy); "
        "may be repeated (default: energy and mean_distance)",
    )
    r.add_argument("--plot", default=None, help="PNG path (default: RUN/reweight.png)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_reweight)

    dg = sub.add_parser("data", help="data sets: generate Boltzmann samples by MCMC")
    dsub = dg.add_subparsers(dest="data_command", required=True)
    gen = dsub.add_parser(
        "generate",
        help="MCMC samples of DW4, LJ13 or LJ55 (written as the "
        "split file that training then finds under data/boltzmann/)",
    )
    gen.add_argument("system", help="DW4, LJ13 or LJ55")
    gen.add_argument("--n", type=int, default=10000, help="number of samples")
    gen.add_argument("--split", choices=("train", "val", "test"), default="train")
    gen.add_argument("--chains", type=int, default=1000, help="parallel chains")
    gen.add_argument("--burn-in", type=int, default=None, help="steps (default: per system)")
    gen.add_argument("--thin", type=int, default=None, help="steps between samples")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    gen.add_argument(
        "--out",
        default=None,
        help="a .npy path (default: data/boltzmann/{split}_split_{system}.npy)",
    )
    gen.add_argument("--overwrite", action="store_true", help="replace an existing file")
    gen.add_argument("--json", action="store_true", help="diagnostics as JSON")
    gen.set_defaults(func=cmd_data_generate)

    mt = sub.add_parser(
        "metrics",
        help="stability, validity, uniqueness and novelty of "
        "molecules in an .xyz, .sdf or .npz file",
    )
    mt.add_argument("file", help="molecules to score (H, C, N, O, F; positions in Å)")
    mt.add_argument(
        "--no-novelty",
        action="store_true",
        help="skip novelty (its QM9 training SMILES take ~1.5 min to build once)",
    )
    mt.add_argument("--json", action="store_true", help="machine-readable output")
    mt.set_defaults(func=cmd_metrics)

    for name, helptext in (
        ("sample", "draw samples from a trained model"),
        ("evaluate", "exact NLL and reconstruction on a data split"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument(
            "checkpoint",
            nargs="?",
            default=None,
            help="checkpoint file or run folder (default: the most recent run)",
        )
        s.add_argument("--runs", default="runs", help="where runs live (default: runs)")
        if name == "sample":
            s.add_argument("--n", type=int, default=1000, help="number of samples")
            s.add_argument("--out", default=None, help=".csv or .npy file (default: CSV on stdout)")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--batch-size", type=int, default=1000)
            s.add_argument(
                "--stable-only",
                action="store_true",
                help="molecules: keep sampling until N stable ones exist",
            )
            s.add_argument(
                "--format",
                choices=("xyz", "sdf"),
                default=None,
                help="molecules: output format (default xyz, or --out's suffix)",
            )
            s.set_defaults(func=cmd_sample)
        else:
            s.add_argument("--split", choices=("val", "test"), default="test")
            s.add_argument("--json", action="store_true", help="machine-readable output")
            s.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # KEY=VALUE overrides may come after flags (`train toy2d --fast loss.beta=3`)
    if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except UserError as err:
        print(f"molfff: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `molfff sample | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(
            "molfff: interrupted; the last checkpoint is intact "
            "(resume with: molfff train RUN_FOLDER --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
