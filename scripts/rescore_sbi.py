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

Sets are scored observation by observation, FFF and NPE of one observation in turn, so a
partial rescoring (``--observations N``, or one interrupted) compares the methods on the same
observations.

    python scripts/rescore_sbi.py DIR [--tasks two_moons slcp] [--observations 3] [--c2st-jobs 2]
"""

from __future__ import annotations

import argparse
import csv
import re
import signal
import sys
import warnings
from pathlib import Path

import torch
from sbi_results import (  # scripts/sbi_results.py
    FIELDS,
    plot,
    print_table,
    read_rows,
    run_main,
    summarise,
    write_rows,
)

from molfff.dense.sbi import (
    NUM_OBSERVATIONS,
    TASK_NAMES,
    posterior_c2st,
    reference_posterior_samples,
)
from molfff.errors import UserError

SAMPLES = re.compile(
    r"(?P<task>[a-z_]+)_(?P<budget>[1-9]\d*)_(?P<method>fff|npe)_obs(?P<k>[1-9]\d*)\.pt"
)
MIN_ROWS = 5  # the C2ST's folds


def sample_sets(
    out_dir: Path, tasks: list[str] | None, observations: int = NUM_OBSERVATIONS
) -> list[tuple[tuple, Path]]:
    """``((task, budget, method, k), path)`` for every kept sample set of observations
    ``1..observations``, sorted by task, budget, observation, method.

    Raises:
        UserError: no such folder, or no file in ``samples/`` named as bench_sbi.py names them.
    """
    folder = out_dir / "samples"
    if not folder.is_dir():
        raise UserError(
            f"{folder} does not exist: give a bench_sbi.py --out-dir (runs made before "
            "bench_sbi.py kept its samples have none)"
        )
    found, other = [], []
    for path in sorted(folder.iterdir()):
        m = SAMPLES.fullmatch(path.name)
        if m is None or m["task"] not in TASK_NAMES or int(m["k"]) > NUM_OBSERVATIONS:
            other.append(path.name)
            continue
        key = (m["task"], int(m["budget"]), m["method"], int(m["k"]))
        if (tasks is None or key[0] in tasks) and key[3] <= observations:
            found.append((key, path))
    if not found:
        which = f" of {', '.join(tasks)}" if tasks else ""
        if observations < NUM_OBSERVATIONS:
            which += f" for observations 1-{observations}"
        names = f"; other files there: {', '.join(other[:3])}" if other else ""
        raise UserError(
            f"no sample files{which} named <task>_<budget>_<fff|npe>_obs<1-10>.pt in "
            f"{folder}{names}"
        )
    return sorted(found, key=lambda item: (item[0][0], item[0][1], item[0][3], item[0][2]))


def load_samples(path: Path, task: str | None = None) -> torch.Tensor:
    """A kept sample set ``(n, D_theta)``; with ``task``, checked against its reference.

    Raises:
        UserError: not a tensor file, not a dense floating-point ``(n, D_theta)`` tensor with
            ``n >= 5``, or not finite.
    """
    try:
        with warnings.catch_warnings():  # torch warns about plain pickles before refusing them
            warnings.simplefilter("ignore")
            samples = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: one message, not a traceback
        detail = type(err).__name__  # torch's own text runs to lines of unrelated advice
        raise UserError(f"{path}: not a sample file of bench_sbi.py ({detail})") from None
    if isinstance(samples, torch.Tensor) and (
        samples.layout != torch.strided or samples.is_meta or not samples.dtype.is_floating_point
    ):
        raise UserError(f"{path}: expected dense floating-point samples, got {samples.dtype}")
    dim = None if task is None else reference_posterior_samples(task, 1).shape[1]
    if (
        not isinstance(samples, torch.Tensor)
        or samples.dim() != 2
        or (dim is not None and samples.shape[1] != dim)
        or len(samples) < MIN_ROWS
    ):
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise UserError(
            f"{path}: expected a (n >= {MIN_ROWS}, {dim or 'D_theta'}) tensor, got {shape}"
        )
    if not torch.isfinite(samples).all():
        raise UserError(f"{path}: holds NaN or infinite values")
    return samples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="a bench_sbi.py --out-dir")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: all)")
    p.add_argument(
        "--observations",
        type=int,
        default=NUM_OBSERVATIONS,
        help=f"score observations 1..N only (default: all {NUM_OBSERVATIONS})",
    )
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
    if not 1 <= args.observations <= NUM_OBSERVATIONS:
        p.error(f"--observations must be 1-{NUM_OBSERVATIONS}, not {args.observations}")
    if args.c2st_jobs == 0:
        p.error("--c2st-jobs must be positive (or negative: all cores but |n| - 1), not 0")
    return args


class Interrupt:
    """Ctrl-C while a C2ST classifier trains: scikit-learn's MLP catches KeyboardInterrupt and
    returns a half-trained score, so the signal is recorded here and that score dropped."""

    def __init__(self):
        self.seen = False

    def __enter__(self):
        def handler(signum, frame):
            self.seen = True
            raise KeyboardInterrupt

        self.old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.old)
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sets = sample_sets(args.out_dir, args.tasks, args.observations)
    trained = {
        (r["task"], int(r["budget"]), r["method"], int(r["observation"])): r
        for r in read_rows(args.out_dir / "results.csv")
    }
    out_path = args.out_dir / "results_sbibm.csv"
    rows = read_rows(out_path)
    done = {(r["task"], int(r["budget"]), r["method"], int(r["observation"])) for r in rows}
    todo = [(key, path) for key, path in sets if key not in done]
    for (task, _, _, _), path in todo:  # every file checked before the first score
        load_samples(path, task)
    write_rows(out_path, rows)  # also checks that the folder is writable
    print(f"{len(sets) - len(todo)} of {len(sets)} sample sets already scored", file=sys.stderr)
    with out_path.open("a", newline="") as f, Interrupt() as interrupt:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        for i, ((task, budget, method, k), path) in enumerate(todo, 1):
            old = trained.get((task, budget, method, k), {})
            try:
                if old.get("c2st_classifier") == "sbibm":
                    c = float(old["c2st"])
                else:
                    c = posterior_c2st(task, k, load_samples(path, task), n_jobs=args.c2st_jobs)
            except KeyboardInterrupt:
                interrupt.seen = True
            if interrupt.seen:
                print(
                    f"interrupted: {len(rows)} scores kept in {out_path}; run again to continue",
                    file=sys.stderr,
                )
                return 130
            row = {
                "task": task,
                "budget": budget,
                "method": method,
                "observation": k,
                "c2st": f"{c:.4f}",
                "c2st_classifier": "sbibm",
                "train_seconds": old.get("train_seconds") or "nan",
                "epochs": old.get("epochs") or "0",
            }
            writer.writerow(row)
            f.flush()
            rows.append(row)
            print(f"[{i}/{len(todo)}] {task} {budget} {method} obs {k}: {c:.3f}", file=sys.stderr)
    summary = summarise([r for r in rows if int(r["observation"]) <= args.observations])
    plot(summary, args.out_dir / "c2st_sbibm.png", "sbibm")
    print_table(summary)
    print("C2ST classifier: sbibm")
    print(f"wrote {out_path} and {args.out_dir / 'c2st_sbibm.png'}")
    return 0


if __name__ == "__main__":
    run_main(main)
