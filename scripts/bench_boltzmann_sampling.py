"""Sampling time per sample of particle-system free-form flows (DW4, LJ13, LJ55).

Each system is a :class:`molfff.fff.FreeFormFlow` whose encoder and decoder are
:class:`molfff.nn.particles.ParticleEGNN` s on the zero-centre-of-mass subspace
(:class:`molfff.fff.ParticleLayout`), with the FFF paper's sizes: DW4 4 particles in 2-D, 20 blocks;
LJ13 13 in 3-D, 8 blocks; LJ55 55 in 3-D, 10 blocks; hidden 64. Weights are random: the cost of a
pass does not depend on training.

1. Sampling as the FFF paper measures it: decode only, ``x = g(z)`` on a prepared latent batch,
   median seconds per call at each batch size, and the best time per sample over batch sizes.
   ``flow.sample`` (latent draw + projection + decode) is timed alongside, interleaved.
2. The exact log-density per sample that importance weights need, at one batch size
   (``--logp-batch``), interleaved with a decode at that batch size:
   - at the sampled z: ``log p_Z(z) - log|det J_g(z)|`` (decoder Jacobian, one JVP per degree
     of freedom, vmapped), the least a sampler that keeps z pays;
   - ``flow.log_prob(x)`` at x = g(z), what ``molfff reweight`` calls: encoder pass plus the
     same Jacobian at f(x).
   Jacobian columns are vmapped in chunks so that one chunk's edge rows stay under ``--max-edges``.

The flow's ParticleLayout keeps the graph view (edges) of the last batch size, so batch sizes
are timed one after another (the first call at a batch size, which builds it, is a warm-up);
contenders at one batch size are interleaved. CUDA is synchronised before the clock is read.

On a CPU with glibc, tensors above malloc's mmap threshold are returned to the system after every
use and page-faulted back in on the next: at large batches this system time can exceed the
arithmetic. ``MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184`` in the
environment keeps them in the heap; the script says which way it ran.

    python scripts/bench_boltzmann_sampling.py [--systems DW4 LJ13 LJ55] [--max-batch 1000]
"""

from __future__ import annotations

import argparse
import os

import torch
from benchtools import interleaved, malloc_note  # scripts/benchtools.py
from threadpoolctl import threadpool_limits

from molfff.fff import FreeFormFlow, ParticleLayout, log_abs_det_jacobian
from molfff.nn.particles import ParticleEGNN

SYSTEMS = {"DW4": (4, 2, 20), "LJ13": (13, 3, 8), "LJ55": (55, 3, 10)}  # n, d, blocks
BATCH_SIZES = (10, 100, 1000, 10_000)


def build_flow(n: int, d: int, blocks: int, hidden: int, device: torch.device) -> FreeFormFlow:
    def net():
        return ParticleEGNN(n, d, hidden=hidden, blocks=blocks)

    flow = FreeFormFlow(net(), net(), layout=ParticleLayout(n, d), event_shape=(n * d,))
    return flow.to(device).eval()


def bench_system(name: str, args, device: torch.device) -> None:
    n, d, blocks = SYSTEMS[name]
    torch.manual_seed(0)
    flow = build_flow(n, d, blocks, args.hidden, device)
    layout = flow.layout
    edges_per_sample = n * (n - 1)
    dof = (n - 1) * d
    print(
        f"\n{name}: {n} particles in {d}-D, {dof} degrees of freedom, ParticleEGNN "
        f"{blocks} blocks, hidden {args.hidden}, "
        f"{sum(p.numel() for p in flow.decoder.parameters()):,} decoder parameters",
        flush=True,
    )

    def latent(b: int) -> torch.Tensor:
        like = torch.empty(b, n * d, device=device)
        return flow.latent.sample(like, layout)

    per_sample = {}
    with torch.no_grad():
        for b in BATCH_SIZES:
            if b > args.max_batch or b * edges_per_sample > args.max_edges:
                print(
                    f"  B={b:>6}: skipped ({b * edges_per_sample:,} edges; "
                    f"--max-batch {args.max_batch}, --max-edges {args.max_edges:,})"
                )
                continue
            z = latent(b)
            t = interleaved(
                {"decode": lambda z=z: flow.decode(z), "sample": lambda b=b: flow.sample(b)},
                device,
                args.repeats,
                args.budget,
            )
            per_sample[b] = t["decode"] / b
            print(
                f"  B={b:>6}: decode {t['decode'] * 1e3:9.2f} ms = "
                f"{t['decode'] / b * 1e6:9.2f} us/sample; flow.sample/decode "
                f"{t['sample'] / t['decode']:.2f}",
                flush=True,
            )
    if not per_sample:
        print("  no batch size fits the limits")
        return
    best_b = min(per_sample, key=per_sample.get)
    print(
        f"  {name} sampling time (decode only, best over batch sizes): "
        f"{per_sample[best_b] * 1e6:.2f} us/sample = {per_sample[best_b] * 1e3:.4f} ms/sample "
        f"at B={best_b}"
    )

    b = args.logp_batch
    if b <= 0:
        return
    rows = b * edges_per_sample
    chunk = None if rows * dof <= args.max_edges else max(1, args.max_edges // rows)
    z = latent(b)
    with torch.no_grad():
        x = flow.decode(z)

    def logq_at_z():
        return flow.latent.log_prob(z, layout) - log_abs_det_jacobian(
            flow.decoder, z, layout, chunk_size=chunk
        )

    def log_prob_x():
        return flow.log_prob(x, chunk_size=chunk)

    with torch.no_grad():
        t = interleaved(
            {"decode": lambda: flow.decode(z), "logq_z": logq_at_z, "log_prob": log_prob_x},
            device,
            args.repeats,
            args.budget,
            warmup=1,
            min_rounds=1,  # an exact Jacobian of LJ55 takes tens of seconds on a CPU
        )
    columns = "all columns at once" if chunk is None else f"{chunk} columns per vmap chunk"
    print(
        f"  exact log-density at B={b} ({dof} Jacobian columns, {columns}): "
        f"at z {t['logq_z'] / b * 1e3:.3f} ms/sample "
        f"({t['logq_z'] / t['decode']:.1f}x a decode at B={b}, "
        f"{t['logq_z'] / b / per_sample[best_b]:.0f}x the best decode time); "
        f"flow.log_prob(x) {t['log_prob'] / b * 1e3:.3f} ms/sample "
        f"({t['log_prob'] / t['decode']:.1f}x a decode at B={b})",
        flush=True,
    )
    unchunked = 1000 * edges_per_sample * dof
    print(
        f"  note: unchunked at B=1000 (how molfff reweight calls log_prob) one vmapped layer "
        f"holds {unchunked:,} edge rows, {unchunked * (2 * args.hidden + 2) * 4 / 2**30:.1f} GiB "
        f"per float32 (rows, 2·hidden+2) message input"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20, help="timing rounds per batch size (max)")
    p.add_argument(
        "--budget", type=float, default=10.0, help="seconds of timing rounds per measurement"
    )
    p.add_argument("--max-batch", type=int, default=10_000)
    p.add_argument(
        "--max-edges",
        type=int,
        default=None,
        help="skip batch sizes, and chunk Jacobian columns, beyond this many edge rows per call "
        "(default 4e7 on CUDA, 4e6 on CPU)",
    )
    p.add_argument(
        "--logp-batch",
        type=int,
        default=None,
        help="batch size of the log-density measurement (0: skip; default 100 on CUDA, 10 on CPU)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)"
    )
    args = p.parse_args()
    if args.threads:  # threadpoolctl, not torch.set_num_threads: see molfff/fff/linalg.py
        threadpool_limits(args.threads, user_api="openmp")
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if args.max_edges is None:
        args.max_edges = 40_000_000 if on_cuda else 4_000_000
    if args.logp_batch is None:
        args.logp_batch = 100 if on_cuda else 10
    threads = (
        ""
        if on_cuda
        else f", {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (other load distorts CPU timings)"
    )
    print(f"torch {torch.__version__} on {device}{threads}")
    if device.type == "cpu":
        print(f"memory: {malloc_note(device)}")
    for name in args.systems:
        bench_system(name, args, device)


if __name__ == "__main__":
    main()
