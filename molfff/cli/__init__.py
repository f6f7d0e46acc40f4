"""The ``molfff`` command line: train, sample, evaluate, reweight.

Every error a user can cause (files, flags, configs, checkpoints) ends in one line on stderr and
exit status 2; results go to stdout, progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from molfff.cli.boltzmann import cmd_data_generate, cmd_reweight
from molfff.cli.sample import cmd_evaluate, cmd_metrics, cmd_sample
from molfff.cli.train import cmd_train
from molfff.errors import UserError


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
        help="energy, mean_distance, or module:function taking (x, energy) and returning (B,) "
        "(module.py in the working folder, or an installed package.module); may be repeated "
        "(default: energy and mean_distance)",
    )
    r.add_argument(
        "--plot", default=None, help="figure path, e.g. .png or .pdf (default: RUN/reweight.png)"
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="samples per batch (lower it for LJ55: exact densities are memory-hungry)",
    )
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
        help="stability, validity, uniqueness and novelty of molecules in an .xyz/.txt/.extxyz, "
        ".sdf/.sd/.mol or .npz file (any case), or a folder of xyz files (EDM's molecule_NNN.txt)",
    )
    mt.add_argument(
        "file",
        help="molecules to score (H, C, N, O, F with explicit hydrogens; positions in Å): "
        "a file, or a folder whose .xyz/.txt files form one set",
    )
    mt.add_argument(
        "--no-novelty",
        action="store_true",
        help="skip novelty (its QM9 training SMILES take ~1.5 min to build once)",
    )
    mt.add_argument("--json", action="store_true", help="machine-readable output")
    mt.add_argument(
        "--grid",
        default=None,
        metavar="OUT.png",
        help="also draw the first --grid-n molecules as a PNG grid (2D depictions from the "
        "inferred bonds; legends: formula, stable/unstable)",
    )
    mt.add_argument("--grid-n", type=int, default=32, help="molecules in the grid (default 32)")
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
            s.add_argument(
                "--out",
                default=None,
                help=".csv or .npy file; molecules: .xyz or .sdf (default: stdout)",
            )
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--batch-size", type=int, default=1000)
            s.add_argument(
                "--stable-only",
                action="store_true",
                help="molecules: keep sampling until N stable ones exist",
            )
            s.add_argument(
                "--max-draws",
                type=int,
                default=None,
                help="molecules, with --stable-only: give up after this many draws (default 100 N)",
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
