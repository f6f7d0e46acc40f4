"""Free-form flows against neural posterior estimation on sbibm tasks, scored by C2ST.

For every task and simulation budget, one set of simulations (``simulate_splits`` at ``--seed``,
the data ``molfff train sbi/<task> data.budget=<budget> seed=<seed>`` would draw) trains both

- **FFF**: molfff's free-form flow through the training API (``configs/sbi/<task>.yaml`` plus
  ``--fff-override key=value``; ``--max-epochs`` sets ``trainer.max_epochs``, or ``--fff-steps``
  the number of optimizer steps, turned into epochs per budget, since a fixed number of epochs
  gives a small budget few steps). It trains on the ``train`` split and selects its checkpoint
  on the ``val`` split (10% of the budget), with a one-cycle schedule over all its epochs;
- **NPE**: ``sbi``'s NPE (SNPE-C, single round) with a neural spline flow
  (``density_estimator="nsf"``: sbi's defaults, 5 transforms of 50 hidden units, z-scored theta
  and x), given ``train`` and ``val`` together; sbi draws its own random 10% for validation and
  early stopping (``validation_fraction = n_val / budget``), so both methods see exactly the same
  ``budget`` pairs and hold out the same number of them, but not the same ones. As sbibm does,
  the prior is passed to NPE, whose posterior rejects samples outside the prior's support; the
  FFF posterior does the same (``posterior_samples(within_prior=True)``). sbibm's ``snpe.run``
  defaults to a training batch of ``min(10000, budget)``; this script keeps sbi's default (200)
  unless ``--npe-batch-size``.

Each trained posterior draws 10,000 samples for each of observations ``1..--observations`` and is
scored against sbibm's reference posterior by :func:`molfff.dense.sbi.posterior_c2st` (0.5: the
two samples cannot be told apart; 1: disjoint). FFF is scored inside the training API, on its best
checkpoint, with the samples and seeds of ``molfff train``'s own C2ST (``c2st_metrics``); NPE with
the same C2ST function and sampling seeds. ``--c2st-jobs`` runs the 5 folds in parallel (same
scores): the C2ST classifier dominates the wall time, about 2 minutes per score in 10 dimensions.
``--c2st-early-stopping`` scores with the early-stopped classifier instead (30x faster in 10
dimensions, higher scores where samples differ, not comparable with published sbibm numbers; see
:mod:`molfff.dense.c2st`); the ``c2st_classifier`` column says which one a row used.
``train_seconds`` is the wall time of the training loop alone (FFF: Lightning's train start to
end, validation included; NPE: ``.train()``), not simulation, evaluation or C2ST.

Writes ``<out-dir>/results.csv`` (one row per task, budget, method and observation, written as
results come in; ``--resume`` keeps the finished runs of an interrupted one),
``<out-dir>/c2st.png`` (mean C2ST over observations, one panel per task), the FFF run folders
under ``<out-dir>/runs/`` and the scored posterior samples under ``<out-dir>/samples/``
(``samples_path``), which ``scripts/rescore_sbi.py`` scores again with sbibm's classifier after
an early-stopped run; prints a summary table.

    python scripts/bench_sbi.py --tasks two_moons gaussian_linear --budgets 1000 10000 \\
        --observations 3 --max-epochs 20 --out-dir bench_sbi

NPE needs ``pip install sbi`` (tested with sbi 0.27.0 on torch 2.13); without it the script says
so and runs FFF alone.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from sbi_results import (  # scripts/sbi_results.py
    FIELDS,
    METHODS,
    plot,
    print_table,
    published_npe,  # noqa: F401  (the table's sbibm column; kept importable from here)
    read_rows,
    run_main,
    samples_path,
    save_samples,
    summarise,
)

from molfff.dense.sbi import (
    NUM_OBSERVATIONS,
    TASK_NAMES,
    observation,
    posterior_c2st,
    prior_bounds,
    prior_distribution,
    reference_posterior_samples,
    simulate_splits,
)
from molfff.dense.sbi_task import c2st_metrics
from molfff.dense.splits import DenseData, Split
from molfff.errors import UserError
from molfff.train.config import load_config
from molfff.train.dense import SbiTask
from molfff.train.runner import train


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TrainTimer(Callback):
    """Wall time of Lightning's training loop (validation epochs included)."""

    def __init__(self):
        self.start = self.seconds = math.nan

    def on_train_start(self, trainer, pl_module) -> None:
        _sync()
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync()
        self.seconds = time.perf_counter() - self.start


def import_npe():
    """sbi's NPE class, or None with the reason printed (the benchmark then runs FFF alone)."""
    try:
        import sbi
        from sbi.inference import NPE
    except ImportError as err:
        print(
            f"NPE SKIPPED: the `sbi` package does not import ({err}). Install it without "
            f"touching torch: pip install sbi 'torch=={torch.__version__.split('+')[0]}' "
            "(sbi 0.27.0 installs alongside torch 2.13). Running FFF only.",
            file=sys.stderr,
        )
        return None
    print(f"sbi {sbi.__version__}, torch {torch.__version__}", file=sys.stderr)
    return NPE


def run_fff(task: str, budget: int, splits: dict[str, Split], args) -> tuple[dict, float, int]:
    """Train FFF through the training API; C2ST per observation, training seconds, epochs."""
    overrides = [
        f"seed={args.seed}",
        f"data.budget={budget}",
        f"data.n_test={len(splits['test'].x)}",
        f"data.c2st_observations={args.observations}",
        "logger.wandb=disabled",
        "trainer.progress_bar=false",
        f"run.root={args.out_dir / 'runs'}",
        f"run.name={task}/{budget}",
    ]
    if args.max_epochs is not None:
        overrides.append(f"trainer.max_epochs={args.max_epochs}")
    overrides += list(args.fff_override)
    config = load_config(f"sbi/{task}", overrides)
    if args.fff_steps is not None:  # the same number of optimizer steps at every budget
        n_train = len(splits["train"].x)
        per_epoch = n_train // min(config.data.batch_size, n_train)
        epochs = math.ceil(args.fff_steps / per_epoch)
        config = load_config(f"sbi/{task}", [*overrides, f"trainer.max_epochs={epochs}"])
    if config.data.task != task or config.data.budget != budget:
        raise UserError("--fff-override must not change data.task or data.budget")

    def c2st_per_observation(model) -> dict[str, float]:
        return c2st_metrics(
            model,
            task,
            args.observations,
            progress=False,
            n_jobs=args.c2st_jobs,
            early_stopping=args.c2st_early_stopping,
            on_samples=lambda k, samples: save_samples(
                samples_path(args.out_dir, task, budget, "fff", k), samples
            ),
        )

    data = DenseData(
        f"sbi/{task}/{budget}",
        splits,
        extra_metrics=c2st_per_observation,
        support=prior_bounds(task),
    )
    dense_task = SbiTask(config.data, config.seed, data)
    timer = TrainTimer()
    result = train(config, progress=False, callbacks=[timer], task=dense_task)
    scores = {k: result.metrics[f"c2st/obs{k}"] for k in range(1, args.observations + 1)}
    print(
        f"  fff: {result.metrics['epochs']} epochs, test NLL (paper estimate) "
        f"{result.metrics['nll_estimate']:.3f}, exact {result.metrics['nll_exact']:.3f} "
        f"({100 * result.metrics['exact_converged']:.0f} % of preimages found), "
        f"run folder {result.run_dir}",
        file=sys.stderr,
    )
    return scores, timer.seconds, result.metrics["epochs"]


def run_npe(npe_cls, task: str, budget: int, splits: dict[str, Split], args):
    """Train sbi's NPE-NSF on train + val; C2ST per observation, training seconds, epochs."""
    theta = torch.cat([splits["train"].x, splits["val"].x])  # (budget, D_theta)
    x = torch.cat([splits["train"].c, splits["val"].c])  # (budget, D_x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        inference = npe_cls(
            prior=prior_distribution(task),
            density_estimator="nsf",
            device=args.npe_device,
            show_progress_bars=False,
        )
        inference.append_simulations(theta, x)
        _sync()
        t0 = time.perf_counter()
        estimator = inference.train(
            training_batch_size=args.npe_batch_size,
            validation_fraction=len(splits["val"].x) / budget,
            stop_after_epochs=args.npe_stop_after_epochs,
            max_num_epochs=args.npe_max_epochs or 2**31 - 1,
        )
        _sync()
        seconds = time.perf_counter() - t0
    epochs = int(inference.summary["epochs_trained"][-1])
    posterior = inference.build_posterior(estimator)
    scores = {}
    for k in range(1, args.observations + 1):
        n_ref = reference_posterior_samples(task, k).shape[0]
        x_o = observation(task, k).to(args.npe_device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed * 100 + k)  # as molfff's posterior_samples
            samples = posterior.sample((n_ref,), x=x_o, show_progress_bars=False)
        save_samples(samples_path(args.out_dir, task, budget, "npe", k), samples)
        scores[k] = posterior_c2st(
            task, k, samples.cpu(), n_jobs=args.c2st_jobs, early_stopping=args.c2st_early_stopping
        )
    best_val = inference.summary["best_validation_loss"][-1]
    print(f"  npe: {epochs} epochs, best validation loss {best_val:.3f}", file=sys.stderr)
    return scores, seconds, epochs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "gaussian_linear"])
    p.add_argument("--budgets", nargs="+", type=int, default=[1000, 10000])
    p.add_argument(
        "--observations",
        type=int,
        default=NUM_OBSERVATIONS,
        help="score observations 1..N (default: all 10)",
    )
    p.add_argument(
        "--max-epochs", type=int, default=None, help="FFF trainer.max_epochs (default: config)"
    )
    p.add_argument(
        "--fff-steps",
        type=int,
        default=None,
        help="FFF optimizer steps, converted to epochs per budget (instead of --max-epochs)",
    )
    p.add_argument(
        "--fff-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra FFF config override, e.g. loss.beta=25 (repeatable)",
    )
    p.add_argument(
        "--npe-max-epochs",
        type=int,
        default=None,
        help="cap on NPE epochs (default: none, sbi's early stopping decides)",
    )
    p.add_argument("--npe-stop-after-epochs", type=int, default=20)
    p.add_argument("--npe-batch-size", type=int, default=200)
    p.add_argument("--npe-device", default="cpu")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--c2st-jobs",
        type=int,
        default=None,
        help="C2ST folds trained in parallel (scikit-learn n_jobs; same scores, less wall time)",
    )
    p.add_argument(
        "--c2st-early-stopping",
        action="store_true",
        help="score with the early-stopped C2ST classifier (fast; not sbibm's metric)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--n-test", type=int, default=1000, help="FFF held-out NLL simulations (not the score)"
    )
    p.add_argument("--out-dir", type=Path, default=Path("bench_sbi"))
    p.add_argument("--force", action="store_true", help="replace an existing results.csv")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished (task, budget, method) runs of results.csv, run the rest",
    )
    args = p.parse_args(argv)
    unknown = [t for t in args.tasks if t not in TASK_NAMES]
    if unknown:
        p.error(f"unknown task {unknown[0]!r}; choose from {', '.join(TASK_NAMES)}")
    if not 1 <= args.observations <= NUM_OBSERVATIONS:
        p.error(f"--observations must be 1..{NUM_OBSERVATIONS}, got {args.observations}")
    if any(b < 10 for b in args.budgets):
        p.error(f"--budgets must be at least 10 simulations each, got {args.budgets}")
    if args.max_epochs is not None and args.fff_steps is not None:
        p.error("give --max-epochs or --fff-steps, not both")
    for name in (
        "max_epochs",
        "fff_steps",
        "npe_max_epochs",
        "npe_stop_after_epochs",
        "npe_batch_size",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def previous_rows(
    csv_path: Path, planned: set[tuple], observations: int, classifier: str
) -> list[dict]:
    """Rows of an earlier run to keep on ``--resume``: every row outside this run's plan, and
    the planned (task, budget, method) groups that already hold observations 1..N. All rows
    must use the same C2ST ``classifier``."""
    rows = read_rows(csv_path)
    other = {r["c2st_classifier"] for r in rows} - {classifier}
    if other:
        raise UserError(
            f"{csv_path} holds C2ST scores of the {other.pop()!r} classifier; this run would add "
            f"{classifier!r} ones (toggle --c2st-early-stopping, or use another --out-dir)"
        )
    seen = defaultdict(set)
    for r in rows:
        seen[(r["task"], int(r["budget"]), r["method"])].add(int(r["observation"]))
    wanted = set(range(1, observations + 1))

    def keep(r: dict) -> bool:
        key = (r["task"], int(r["budget"]), r["method"])
        return key not in planned or wanted <= seen[key]

    return [r for r in rows if keep(r)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    csv_path = args.out_dir / "results.csv"
    if csv_path.exists() and not (args.force or args.resume):
        print(
            f"error: {csv_path} exists; use another --out-dir, --resume or --force",
            file=sys.stderr,
        )
        return 2
    classifier = "early-stopping" if args.c2st_early_stopping else "sbibm"
    npe_cls = import_npe() if "npe" in args.methods else None
    methods = [m for m in args.methods if m == "fff" or npe_cls is not None]
    if not methods:
        print("error: nothing to run: --methods npe needs the sbi package (above)", file=sys.stderr)
        return 2
    planned = {(t, b, m) for t in args.tasks for b in args.budgets for m in methods}
    rows: list[dict] = []
    if args.resume and csv_path.exists():
        rows = previous_rows(csv_path, planned, args.observations, classifier)
    done = {(r["task"], int(r["budget"]), r["method"]) for r in rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        csv.DictWriter(f, fieldnames=FIELDS).writeheader()
        csv.DictWriter(f, fieldnames=FIELDS).writerows(rows)
    tmp.replace(csv_path)  # an interrupted start leaves the old file whole
    if done & planned:
        print(
            f"resuming: {len(done & planned)} finished runs kept from {csv_path}", file=sys.stderr
        )
    with csv_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        for task in args.tasks:
            for budget in args.budgets:
                todo = [m for m in methods if (task, budget, m) not in done]
                if not todo:
                    continue
                print(f"{task} budget {budget}: simulating", file=sys.stderr)
                splits = simulate_splits(task, budget, args.seed, n_test=args.n_test)
                for method in todo:
                    print(f"{task} budget {budget}: {method}", file=sys.stderr)
                    if method == "fff":
                        scores, seconds, epochs = run_fff(task, budget, splits, args)
                    else:
                        scores, seconds, epochs = run_npe(npe_cls, task, budget, splits, args)
                    for k, c in scores.items():
                        row = {
                            "task": task,
                            "budget": budget,
                            "method": method,
                            "observation": k,
                            "c2st": c,
                            "c2st_classifier": classifier,
                            "train_seconds": seconds,
                            "epochs": epochs,
                        }
                        writer.writerow(
                            row | {"c2st": f"{c:.4f}", "train_seconds": f"{seconds:.1f}"}
                        )
                        rows.append(row)
                    f.flush()
                    mean = statistics.fmean(scores.values())
                    print(f"  {method}: mean C2ST {mean:.3f}, {seconds:.0f} s", file=sys.stderr)
    summary = summarise(rows)
    plot(summary, args.out_dir / "c2st.png", classifier)
    print_table(summary)
    print(f"C2ST classifier: {classifier}" + ("" if classifier == "sbibm" else " (not sbibm's)"))
    if npe_cls is None and "npe" in args.methods:
        print("NPE was skipped: the sbi package is not importable (see the message above).")
    print(f"wrote {csv_path} and {args.out_dir / 'c2st.png'}")
    return 0


if __name__ == "__main__":
    run_main(main)
