"""`molfff sample`, `molfff evaluate` and `molfff metrics`."""

from __future__ import annotations

import sys
from pathlib import Path

from molfff.cli.common import note, print_metrics
from molfff.errors import UserError
from molfff.files import atomic_write


def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from molfff.train.runner import load_model

    if args.n <= 0:
        raise UserError(f"--n must be positive, got {args.n}")
    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    note(f"sampling {args.n} from {ckpt}")
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
    csv = {
        "delimiter": ",",
        "fmt": "%.6g",
        "comments": "",
        "header": ",".join(f"x{i}" for i in range(x.shape[1])),
    }
    if args.out is None:
        np.savetxt(sys.stdout, x, **csv)
        return 0
    out = Path(args.out)
    if out.suffix not in (".csv", ".npy"):
        raise UserError(f"--out {out}: use a .csv or .npy file name")
    with atomic_write(out) as fh:
        if out.suffix == ".npy":
            np.save(fh, x)
        else:
            np.savetxt(fh, x, **csv)
    note(f"wrote {len(x)} samples to {out}")
    return 0


def sample_molecules_command(args, module) -> int:
    """Molecules as multi-frame xyz (default) or SDF, to stdout or ``--out``."""
    import io

    from molfff.molecules.io import write_sdf, write_xyz
    from molfff.molecules.metrics import is_stable
    from molfff.molecules.sampling import sample_stable

    fmt = args.format or (Path(args.out).suffix.lstrip(".") if args.out else "xyz")
    if fmt not in ("xyz", "sdf"):
        raise UserError(f"molecules are written as xyz or sdf, not {fmt!r}")
    molecules, drawn = sample_stable(
        module.flow, args.n, args.stable_only, seed=args.seed, batch_size=args.batch_size
    )
    if args.stable_only:
        note(f"{args.n} stable molecules from {drawn} draws ({100 * args.n / drawn:.1f}% stable)")
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
    with atomic_write(out, "w", encoding="utf-8") as fh:
        fh.write(buffer.getvalue())
    note(f"wrote {len(molecules)} molecules to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from molfff.train.runner import evaluate, load_model
    from molfff.train.tasks import build_task

    config, module, ckpt = load_model(args.checkpoint, Path(args.runs))
    note(f"evaluating {ckpt} on the {args.split} split")
    task = build_task(config.data, config.seed)
    metrics = evaluate(module, task, args.split, config)
    metrics["checkpoint"] = str(ckpt)
    print_metrics(metrics, args.json)
    return 0


def cmd_metrics(args) -> int:
    from molfff.molecules.report import run_metrics

    _, text = run_metrics(args.file, args.json, not args.no_novelty, note=note)
    print(text)
    return 0
