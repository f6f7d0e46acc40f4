"""`molfff train`: configs, overrides, beta search, resume, distributed launch."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from molfff.cli.common import note, overrides, print_metrics, spawned_rank
from molfff.errors import UserError


def cmd_train(args) -> int:
    from molfff.train.config import load_config
    from molfff.train.runner import train
    from molfff.train.runs import load_run_config, make_run_dir

    if args.resume:
        run_dir = Path(args.config)
        if not run_dir.is_dir():
            raise UserError(f"--resume needs a run folder, got {run_dir}")
        from molfff.train.checkpoint import read_checkpoint
        from molfff.train.config import build_config

        config = build_config(load_run_config(run_dir).to_dict(), overrides(args))
        read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    else:
        config = load_config(args.config, overrides(args), fast=args.fast)
        run_dir = None
    from molfff.train.tasks import build_task

    task = build_task(config.data, config.seed)
    task.prepare()  # bad data settings fail before any folder exists
    task.new_module(config)  # and so do model settings the task cannot take
    if args.run_dir:
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    if spawned_rank():  # same run folder and beta as rank 0, which started this process
        run_dir = Path(os.environ["MOLFFF_RUN_DIR"])
        if "MOLFFF_BETA" in os.environ:
            beta = float(os.environ["MOLFFF_BETA"])
            config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, beta=beta))
    elif args.beta_search:
        from molfff.train.beta_search import search_beta

        note(f"beta search over {config.beta_search.epochs}-epoch runs:")
        beta, _ = search_beta(config, report=note, task=task)
        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, beta=beta))
        os.environ["MOLFFF_BETA"] = repr(beta)
    if run_dir is None:
        run_dir = make_run_dir(config)
    os.environ["MOLFFF_RUN_DIR"] = str(run_dir)
    if not spawned_rank():
        note(f"run folder: {run_dir}")
    result = train(config, run_dir=run_dir, resume=args.resume, task=task)
    if not result.metrics:  # a non-zero rank of a distributed run
        return 0
    print_metrics(result.metrics, args.json)
    note(f"checkpoints: {run_dir / 'checkpoints'}; metrics: {run_dir / 'metrics.json'}")
    return 0
