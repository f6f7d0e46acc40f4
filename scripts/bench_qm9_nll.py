"""What the exact QM9 NLL costs next to the paper's estimate, at a trained checkpoint.

    python scripts/bench_qm9_nll.py RUN_OR_CKPT [--molecules 64] [--batch-size 32] [--repeats 2]

One validation pass over the first ``--molecules`` validation molecules of the run's config,
timed (device synchronised) for the exact NLL (``FreeFormFlow.invert``: Newton's method from
``f(x)``, ``trainer.newton_max_iter`` steps at most) and for the estimate alone
(``FreeFormFlow.log_prob_estimate``: one decoder Jacobian at ``f(x)``), alternating the two
``--repeats`` times on the same batches and dequantization draws. Prints the seconds of each, their
ratio, the share of converged Newton solves, the median residual ``||g(z*) - x||``, the mean and
largest Newton iteration count and the mean of both NLLs given n.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder or checkpoint of a qm9 run")
    p.add_argument("--molecules", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from torch_geometric.loader import DataLoader

    from molfff.molecules.flow import MoleculeBatch
    from molfff.train.runs import load_model
    from molfff.train.tasks import build_task

    config, module, ckpt = load_model(Path(args.run))
    device = torch.device(args.device)
    module = module.to(device).eval()
    task = build_task(config.data, config.seed)
    data = task.pyg("val")[: args.molecules]
    batches = [MoleculeBatch.from_pyg(b.to(device)) for b in DataLoader(data, args.batch_size)]
    t = config.trainer
    flow = module.flow
    inputs = []
    with torch.no_grad():
        for i, mol in enumerate(batches):
            x, log_q, layout = flow.dequantize(mol, torch.Generator(device).manual_seed(i))
            inputs.append((x, log_q, layout))

    def exact():
        return [
            flow.flow.invert(x, layout=lay, max_iter=t.newton_max_iter, chunk_size=t.jacobian_chunk)
            for x, _, lay in inputs
        ]

    def estimate():
        with torch.no_grad():
            return [
                flow.flow.log_prob_estimate(x, layout=lay, chunk_size=t.jacobian_chunk)
                for x, _, lay in inputs
            ]

    times: dict[str, list[float]] = {"exact": [], "estimate": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("estimate", estimate), ("exact", exact)):
            _sync(device)
            start = time.perf_counter()
            results[name] = fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    inv = results["exact"]
    converged = torch.cat([r.converged for r in inv]).double()
    residual = torch.cat([r.residual for r in inv]).double()
    iters = torch.cat([r.iterations for r in inv]).double()
    log_q = torch.cat([q for _, q, _ in inputs]).double()
    nll_exact = -torch.cat([r.log_prob for r in inv]).double() + log_q
    nll_est = -torch.cat([r.log_prob_estimate for r in inv]).double() + log_q
    nll_est_alone = -torch.cat(results["estimate"]).double() + log_q
    recon = torch.cat([r.residual_start for r in inv]).double() ** 2
    n = converged.numel()
    te, tx = statistics.median(times["estimate"]), statistics.median(times["exact"])
    print(f"checkpoint: {ckpt}")
    print(f"model: {config.model.blocks} blocks, width {config.model.width}; "
          f"newton_max_iter {t.newton_max_iter}, jacobian_chunk {t.jacobian_chunk}; "
          f"{n} validation molecules, batch {args.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"estimate (log_prob_estimate): {te:.2f} s per pass  (all: {times['estimate']})")
    print(f"exact (invert):               {tx:.2f} s per pass  (all: {times['exact']})")
    print(f"ratio exact / estimate: {tx / te:.2f}")
    print(f"converged: {100 * converged.mean():.1f} %, median residual {residual.median():.3g}, "
          f"max residual {residual.max():.3g}")  # fmt: skip
    print(f"Newton iterations: mean {iters.mean():.2f}, max {int(iters.max())}")
    print(f"reconstruction ||g(f(x)) - x||^2: mean {recon.mean():.4g}")
    print(f"NLL given n, nats per molecule: exact {nll_exact.mean():.3f}, "
          f"estimate {nll_est.mean():.3f} (estimate alone {nll_est_alone.mean():.3f}); "
          f"mean |exact - estimate| {(nll_exact - nll_est).abs().mean():.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
