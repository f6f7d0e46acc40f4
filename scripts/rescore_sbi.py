"""Score the posterior samples of a ``bench_sbi.py`` run again with sbibm's own C2ST classifier.

``bench_sbi.py --c2st-early-stopping`` trains and scores fast, but its classifier is not the one
sbibm's published numbers used. The run keeps every posterior sample set it scored
(``<out-dir>/samples/<task>_<budget>_<method>_obs<k>.pt``); this script scores each of them with
sbibm's classifier (:func:`molfff.dense.sbi.posterior_c2st` without early stopping, 1-5 minutes
per score on one core in 10 dimensions) and writes ``<out-dir>/results_sbibm.csv`` (the columns of
``results.csv``; training seconds and epochs copied from it), ``<out-dir>/c2st_sbibm.png`` and the
table of ``bench_sbi.py``. Rows are written as scores come in, and a second call scores only what
is missing, so an interrupted rescoring continues where it stopped. Sample sets that
``results.csv`` already scored with sbibm's classifier are copied, not scored again.

    python scripts/rescore_sbi.py DIR [--tasks two_moons slcp] [--c2st-jobs 2]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import torch
from bench_sbi import FIELDS, plot, print_table, summarise  # scripts/bench_sbi.py

from molfff.dense.sbi import TASK_NAMES, posterior_c2st
from molfff.errors import UserError

SAMPLES = re.compile(r"(?P<task>[a-z_]+)_(?P<budget>\d+)_(?P<method>fff|npe)_obs(?P<k>\d+)\.pt")


def read_rows(path: Path) -> list[dict]:
    """Rows of a results file with bench_sbi's columns; [] if it does not exist."""
    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise UserError(f"{path}: not a results file of bench_sbi.py (columns differ)")
            return list(reader)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def sample_sets(out_dir: Path, tasks: list[str] | None) -> list[tuple[tuple, Path]]:
    """``((task, budget, method, k), path)`` for every kept sample set, sorted."""
    found = []
    for path in sorted((out_dir / "samples").glob("*.pt")):
        m = SAMPLES.fullmatch(path.name)
        if m is None or m["task"] not in TASK_NAMES:
            continue
        key = (m["task"], int(m["budget"]), m["method"], int(m["k"]))
        if tasks is None or key[0] in tasks:
            found.append((key, path))
    return found


def load_samples(path: Path) -> torch.Tensor:
    try:
        samples = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: one message, not a traceback
        raise UserError(f"{path}: not a sample file of bench_sbi.py ({err})") from None
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        raise UserError(f"{path}: expected a (n, D_theta) tensor")
    return samples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="a bench_sbi.py --out-dir")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: all)")
    p.add_argument(
        "--c2st-jobs",
        type=int,
        default=None,
        help="C2ST folds trained in parallel (scikit-learn n_jobs; same scores, less wall time)",
    )
    args = p.parse_args(argv)
    unknown = [t for t in args.tasks or () if t not in TASK_NAMES]
    if unknown:
        p.error(f"unknown task {unknown[0]!r}; choose from {', '.join(TASK_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sets = sample_sets(args.out_dir, args.tasks)
    if not sets:
        raise UserError(
            f"no posterior samples under {args.out_dir / 'samples'} (bench_sbi.py keeps them "
            "since it learned to; runs made before cannot be rescored)"
        )
    trained = {
        (r["task"], int(r["budget"]), r["method"], int(r["observation"])): r
        for r in read_rows(args.out_dir / "results.csv")
    }
    out_path = args.out_dir / "results_sbibm.csv"
    rows = read_rows(out_path)
    done = {(r["task"], int(r["budget"]), r["method"], int(r["observation"])) for r in rows}
    if not rows:
        with out_path.open("w", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()
    todo = [(key, path) for key, path in sets if key not in done]
    print(f"{len(sets) - len(todo)} of {len(sets)} sample sets already scored", file=sys.stderr)
    with out_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        for i, ((task, budget, method, k), path) in enumerate(todo, 1):
            old = trained.get((task, budget, method, k), {})
            if old.get("c2st_classifier") == "sbibm":
                c = float(old["c2st"])
            else:
                c = posterior_c2st(task, k, load_samples(path), n_jobs=args.c2st_jobs)
            row = {
                "task": task,
                "budget": budget,
                "method": method,
                "observation": k,
                "c2st": f"{c:.4f}",
                "c2st_classifier": "sbibm",
                "train_seconds": old.get("train_seconds", "nan"),
                "epochs": old.get("epochs", "0"),
            }
            writer.writerow(row)
            f.flush()
            rows.append(row)
            print(f"[{i}/{len(todo)}] {task} {budget} {method} obs {k}: {c:.3f}", file=sys.stderr)
    summary = summarise(rows)
    plot(summary, args.out_dir / "c2st_sbibm.png", "sbibm")
    print_table(summary)
    print("C2ST classifier: sbibm")
    print(f"wrote {out_path} and {args.out_dir / 'c2st_sbibm.png'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
