"""The paper's NLL estimate against the exact NLL of the model that samples, for trained runs.

For every run folder (or checkpoint) given, on the run's own ``--split`` (rebuilt from its config
and seed), prints

- ``NLL est``: the paper's estimate, ``-log p_Z(f(x)) + log|det J_g(f(x))|`` (eq. 135), nats;
- ``NLL exact``: ``-log p_Z(z*) + log|det J_g(z*)|`` with ``g(z*) = x`` (the density of the model
  that samples, :meth:`molfff.fff.FreeFormFlow.invert`), nats, averaged over the samples whose
  preimage was found (``conv`` of them);
- ``conv``: share of samples whose Newton solve converged, ``resid``: median ``||g(z*) - x||``,
  ``recon``: mean ``||g(f(x)) - x||^2`` (both z-scored units), ``iters``: mean Newton steps;
- ``t est`` / ``t exact``: seconds for each density over the split, measured here in one process,
  interleaved (``--repeats`` each, the minimum kept);
- for SBI runs (``data.name = sbi``), ``ref est`` / ``ref exact``: the NLL of sbibm's reference
  posterior samples under ``q(theta | x_o)``, averaged over observations ``1..--observations``
  (``--reference-samples`` each): the cross-entropy ``E_p[-log q]``, which ranks models like
  ``KL(p || q)`` does; ``ref recon/sd``: the RMS of ``g(f(theta)) - theta`` at those samples over
  the reference posterior's standard deviation (per dimension, then averaged over dimensions and
  observations); ``recon train/val``: the last logged training and validation reconstruction
  (z-scored units); and ``C2ST`` as the run's ``metrics.json`` recorded it.

With several runs, it ends with the Spearman rank correlation of each NLL with C2ST (where C2ST is
known): does the NLL rank the models the way C2ST does?

    python scripts/compare_nll.py runs/toy2d/2026-11-30_01-00-00
    python scripts/compare_nll.py bench/runs/two_moons/*/* --observations 3 --json nll.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from molfff.errors import UserError
from molfff.train.tasks import build_task


def _timed(fn, repeats: int) -> tuple[object, float]:
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _batches(x, c, size):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size], None if c is None else c[i : i + size]


def _densities(module, x, c, batch_size: int, repeats: int) -> dict:
    """Both NLLs in original units over ``x`` (and ``c``), with their wall times: the module's
    own estimate (``log_prob(exact=False)``) and exact evaluation (``evaluate``)."""
    param = next(module.parameters())
    x, c = x.to(param), None if c is None else c.to(param)

    def estimate():
        return torch.cat(
            [module.log_prob(xb, cb, exact=False) for xb, cb in _batches(x, c, batch_size)]
        )

    def exact():
        parts = [
            module.evaluate([xb] if cb is None else [xb, cb])
            for xb, cb in _batches(x, c, batch_size)
        ]
        return {key: torch.cat([p[key] for p in parts]).double() for key in parts[0]}

    lp_est, t_est = _timed(estimate, repeats)
    out, t_exact = _timed(exact, repeats)
    return {
        "nll_estimate": -lp_est.double().mean().item(),
        "nll_exact": out["nll_exact"].nanmean().item(),  # over converged samples
        "exact_converged": out["converged"].mean().item(),
        "exact_residual_median": out["residual"].median().item(),
        "exact_iterations_mean": out["iterations"].mean().item(),
        "reconstruction": out["reconstruction"].mean().item(),
        "seconds_estimate": t_est,
        "seconds_exact": t_exact,
    }


def _reference_nll(module, task: str, observations: int, n_samples: int, batch_size: int) -> dict:
    from molfff.dense.sbi import observation, reference_posterior_samples

    est, exact, rel = [], [], []
    param = next(module.parameters())
    for k in range(1, observations + 1):
        theta = reference_posterior_samples(task, k)[:n_samples].to(param)
        x_o = observation(task, k).to(param).reshape(1, -1).expand(theta.shape[0], -1)
        out = _densities(module, theta, x_o, batch_size, repeats=1)
        est.append(out["nll_estimate"])
        exact.append(out["nll_exact"])
        with torch.no_grad():  # reconstruction of the reference samples, raw theta units
            xs, cs = module.to_flow(theta), module._standardize_c(x_o)
            back = module.from_flow(module.flow.decode(module.flow.encode(xs, cs), cs))
        rms = (back - theta).pow(2).mean(0).sqrt()
        rel.append((rms / theta.std(0)).mean().item())
    return {
        "ref_nll_estimate": sum(est) / len(est),
        "ref_nll_exact": sum(exact) / len(exact),
        "ref_recon_rel": sum(rel) / len(rel),
    }


def evaluate_run(path: Path, args) -> dict:
    from molfff.train.runs import load_model

    config, module, ckpt = load_model(path)
    if not hasattr(module, "standardize_x"):
        raise UserError(f"{ckpt}: compare_nll.py handles dense and Boltzmann runs (not QM9)")
    task = build_task(config.data, config.seed)
    task.prepare()
    rows = task.data.splits[args.split]
    n = rows.x.shape[0] if args.max_samples is None else min(args.max_samples, rows.x.shape[0])
    c = None if rows.c is None else rows.c[:n]
    row = {"run": str(path), "checkpoint": ckpt.name, "n": n}
    row.update(_densities(module, rows.x[:n], c, args.batch_size, args.repeats))
    if config.data.name == "sbi":
        row.update(
            _reference_nll(
                module,
                config.data.task,
                args.observations,
                args.reference_samples,
                args.batch_size,
            )
        )
    curves = sorted((ckpt.parent.parent / "logs").glob("version_*/metrics.csv"))
    if curves:
        import csv

        last: dict[str, float] = {}
        with curves[-1].open(newline="") as f:
            for r in csv.DictReader(f):
                for key in ("train/reconstruction", "val/reconstruction"):
                    if r.get(key):
                        last[key] = float(r[key])
        row.update({f"last_{k.replace('/', '_')}": v for k, v in last.items()})
    metrics = ckpt.parent.parent / "metrics.json"
    if metrics.is_file():
        row["c2st"] = json.loads(metrics.read_text()).get("c2st")
    return row


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders or checkpoint files")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--max-samples", type=int, default=None, help="first N samples of the split")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=1, help="timings: minimum over repeats")
    p.add_argument("--observations", type=int, default=3, help="SBI: reference posteriors 1..K")
    p.add_argument("--reference-samples", type=int, default=2000)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    rows = []
    for path in args.runs:
        try:
            rows.append(evaluate_run(path, args))
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        r = rows[-1]
        line = (
            f"{r['run']}: NLL est {r['nll_estimate']:.4f}  NLL exact {r['nll_exact']:.4f}  "
            f"conv {100 * r['exact_converged']:.1f}%  resid {r['exact_residual_median']:.2g}  "
            f"recon {r['reconstruction']:.3g}  iters {r['exact_iterations_mean']:.2f}  "
            f"t est {r['seconds_estimate']:.2f}s  t exact {r['seconds_exact']:.2f}s "
            f"({r['seconds_exact'] / r['seconds_estimate']:.1f}x)"
        )
        if "ref_nll_exact" in r:
            line += (
                f"  ref est {r['ref_nll_estimate']:.4f}  ref exact {r['ref_nll_exact']:.4f}"
                f"  ref recon/sd {r['ref_recon_rel']:.3f}"
            )
        if "last_val_reconstruction" in r:
            line += (
                f"  recon train/val {r.get('last_train_reconstruction', math.nan):.3g}/"
                f"{r['last_val_reconstruction']:.3g}"
            )
        if r.get("c2st") is not None:
            line += f"  C2ST {r['c2st']:.3f}"
        print(line, flush=True)
    print(f"NLLs in nats per sample on the {args.split} split, original units; see --help.")
    scored = [r for r in rows if r.get("c2st") is not None]
    if len(scored) >= 3:
        c2st = [r["c2st"] for r in scored]
        for key in ("nll_estimate", "nll_exact", "ref_nll_estimate", "ref_nll_exact"):
            if all(key in r for r in scored):
                rho = _spearman([r[key] for r in scored], c2st)
                print(
                    f"Spearman rank correlation of {key} with C2ST ({len(scored)} runs): {rho:+.2f}"
                )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
