"""`molfff sample`, `molfff evaluate` and `molfff metrics`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from molfff.cli.common import note, print_metrics
from molfff.errors import UserError


def _note_ema(config) -> None:
    from molfff.train.ema import ema_note

    line = ema_note(config.model.ema_decay)
    if line:
        note(line)


def cmd_sample(args) -> int:
    from molfff.train.runs import load_model
    from molfff.train.task import SampleRequest
    from molfff.train.tasks import build_task

    if args.n <= 0:
        raise UserError(f"--n must be positive, got {args.n}")
    if args.batch_size <= 0:  # molecule sampling would loop for ever
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.max_draws is not None and not args.stable_only:
        raise UserError("--max-draws applies with --stable-only only")
    if args.max_draws is not None and args.max_draws < args.n:
        raise UserError(f"--max-draws must be at least --n ({args.n}), got {args.max_draws}")
    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    note(f"sampling {args.n} from {ckpt}")
    _note_ema(config)
    request = SampleRequest(
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        out=Path(args.out) if args.out else None,
        stable_only=args.stable_only,
        format=args.format,
        max_draws=args.max_draws,
    )
    task = build_task(config.data, config.seed)  # the task says how to sample and write
    samples = task.sample(module, request)
    written = task.write_samples(samples, request)
    if request.out is not None:
        note(written)
    return 0


def cmd_evaluate(args) -> int:
    from molfff.train.runs import load_model
    from molfff.train.tasks import build_task

    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    note(f"evaluating {ckpt} on the {args.split} split")
    _note_ema(config)
    task = build_task(config.data, config.seed)
    metrics = task.evaluate(module, args.split, config)
    metrics["checkpoint"] = str(ckpt)
    print_metrics(metrics, args.json)
    return 0


def cmd_metrics(args) -> int:
    from molfff.molecules.grid import check_png_path, write_grid
    from molfff.molecules.io import read_molecules
    from molfff.molecules.report import run_metrics

    if args.grid is not None:  # a bad path fails before any scoring
        check_png_path(args.grid)
        if args.grid_n <= 0:
            raise UserError(f"--grid-n must be positive, got {args.grid_n}")
    metrics, text = run_metrics(args.file, args.json, not args.no_novelty, note=note)
    for warning in metrics["warnings"]:
        print(f"molfff: warning: {warning}", file=sys.stderr, flush=True)
    print(text)
    if args.grid is not None:
        mols = read_molecules(args.file)
        molecules = list(mols.subset(np.arange(min(args.grid_n, len(mols)))))
        note(f"grid: {write_grid(molecules, args.grid, Path(args.file).name)}")
    return 0
