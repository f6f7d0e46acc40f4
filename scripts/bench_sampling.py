"""Molecule sampling speed of the QM9 E(3)-free-form flow, as ratios measured in one run.

The flow is a :class:`molfff.molecules.flow.MoleculeFlow` with the QM9 architecture (EGNNFlowNet
decoder of 16 blocks, hidden 64, 5 atom types + charge) and random weights: the cost of a pass
does not depend on training. Sizes follow QM9's p(n) (from the processed QM9 cache when it is
there, else a synthetic p(n) with QM9's mean of 18 atoms). For each batch size B:

1. full: one call of :func:`molfff.molecules.sampling.sample_molecules` (what ``molfff sample``
   runs): sizes n ~ p(n), fully connected graphs, latent z, decoder, argmax/floor quantization,
   conversion to ``(pos, z)`` numpy molecules.
2. decoder: one bare decoder forward on *the same* z and graph (captured from the full call),
   graph already built: the floor, one network evaluation.
3. graph: the graph set-up inside ``MoleculeFlow.sample`` (the batch's ``GraphLayout`` and its
   fully connected edges, built once and passed to the decoder).

and the cost a 1000-step diffusion sampler would pay with the same EGNN: 1000 x the measured
decoder time (extrapolated, every B), plus one direct measurement of ``--diffusion-steps``
sequential evaluations at ``--direct-batch`` to check the extrapolation.

Timings alternate between the contenders and report medians; CUDA is synchronised before the
clock is read.

On a CPU with glibc, tensors above malloc's mmap threshold are returned to the system after every
use and page-faulted back in on the next: at large batches this system time can exceed the
arithmetic. ``MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184`` in the
environment keeps them in the heap; the script says which way it ran.

    python scripts/bench_sampling.py [--device cpu] [--max-batch 1000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from benchtools import interleaved, malloc_note, timed  # scripts/benchtools.py
from threadpoolctl import threadpool_limits

from molfff.errors import UserError
from molfff.molecules.flow import MoleculeFlow
from molfff.molecules.sampling import sample_molecules
from molfff.train.molecules import QM9_MAX_ATOMS, QM9_TYPES

BATCH_SIZES = (1, 10, 100, 1000, 10_000)


def size_distribution(source: str) -> tuple[torch.Tensor, str]:
    """QM9 training-set p(n), or a discretised normal with QM9's mean and spread."""
    if source in ("auto", "qm9"):
        try:
            from molfff.molecules.qm9 import node_count_distribution

            return node_count_distribution("train", QM9_MAX_ATOMS), "QM9 train split"
        except (ImportError, OSError, ValueError, UserError) as err:  # no qm9pack: say why
            if source == "qm9":
                raise SystemExit(
                    f"--sizes qm9: cannot read QM9's size distribution ({err})"
                ) from None
            print(f"note: QM9 size distribution unavailable ({err}); using a synthetic one")
    n = torch.arange(QM9_MAX_ATOMS + 1, dtype=torch.float64)
    p = torch.exp(-0.5 * ((n - 18.0) / 3.0) ** 2) * (n >= 3)
    return p / p.sum(), "synthetic (normal, mean 18, sd 3, n in 3..29)"


def to_molecules(mol) -> list[tuple[np.ndarray, np.ndarray]]:
    """The conversion of :func:`sample_molecules`: ``(pos (n_i, 3), z (n_i,))`` per molecule."""
    from molfff.molecules.qm9 import ATOM_TYPES

    z = torch.as_tensor(ATOM_TYPES)[mol.one_hot.argmax(1).cpu()]
    ends = torch.cumsum(torch.bincount(mol.batch, minlength=mol.num_graphs), 0).tolist()
    pos = mol.pos.double().cpu().numpy()
    out, start = [], 0
    for end in ends:
        out.append((pos[start:end], z[start:end].numpy()))
        start = end
    return out


def full_sampler(flow: MoleculeFlow, device: torch.device):
    """``fn(B)`` running the full sampling call, and what it is.

    ``sample_molecules`` seeds a CPU generator; if that fails on this device, the same steps
    run with the global RNG (seeded per call, so every call draws the same molecules).
    """
    try:
        sample_molecules(flow, 1, seed=0, batch_size=1)
        return (
            lambda b: sample_molecules(flow, b, seed=0, batch_size=b)[0],
            "molfff.molecules.sampling.sample_molecules",
        )
    except RuntimeError as err:
        if "generator" not in str(err).lower():
            raise
        print(
            f"note: sample_molecules fails on {device} ({str(err).splitlines()[0]}); timing the "
            f"same steps with generator=None (MoleculeFlow.sample + the same conversion)"
        )

    def replica(b: int):
        torch.manual_seed(0)
        with torch.no_grad():
            return to_molecules(flow.sample(b))

    return replica, "MoleculeFlow.sample(generator=None) + sample_molecules' conversion"


def capture_decoder_input(flow: MoleculeFlow, call) -> dict:
    """Run ``call()`` and return the decoder's input z and graph layout of that call."""
    seen: dict = {}

    def hook(module, args):
        z, _, layout = args  # net(z, c, layout)
        seen.update(z=z, layout=layout)

    handle = flow.flow.decoder.register_forward_pre_hook(hook)
    try:
        out = call()
    finally:
        handle.remove()
    seen["out"] = out
    return seen


def bench_batch(flow, full, b: int, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    cap = capture_decoder_input(flow, lambda: full(b))
    dec = flow.flow.decoder
    z, layout = cap["z"], cap["layout"]
    batch, edges = layout.batch, layout.edge_index  # edges built during the full call

    def decoder_only():
        return dec(z, None, layout)

    with torch.no_grad():
        x = decoder_only()
    first = cap["out"][0]  # same z: the decoder's output is the sampled molecule
    if not np.allclose(first[0], x[: len(first[0]), :3].double().cpu().numpy(), atol=1e-5):
        raise RuntimeError("the decoder pass does not reproduce the sampled molecule")

    def graph():
        return flow.graph_layout(batch, b).edge_index

    with torch.no_grad():
        t = interleaved(
            {"full": lambda: full(b), "decoder": decoder_only, "graph": graph},
            device,
            args.repeats,
            args.budget,
        )
    t["nodes"] = batch.numel()
    t["edges"] = edges.shape[1]
    return t


def direct_steps(flow, full, b: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds of ``steps`` sequential decoder evaluations at batch b, and of one evaluation."""
    torch.manual_seed(0)
    cap = capture_decoder_input(flow, lambda: full(b))
    dec = flow.flow.decoder
    z, layout = cap["z"], cap["layout"]

    def loop():
        for _ in range(steps):
            dec(z, None, layout)  # a diffusion step: one network evaluation (update negligible)

    with torch.no_grad():
        one = interleaved({"one": lambda: dec(z, None, layout)}, device, 20, 5.0)["one"]
        return timed(loop, device), one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20, help="timing rounds per batch size (max)")
    p.add_argument(
        "--budget", type=float, default=20.0, help="seconds of timing rounds per batch size"
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="largest batch size of 1, 10, ..., 10^4 (default 10^4 on CUDA, 1000 on CPU)",
    )
    p.add_argument("--sizes", choices=["auto", "qm9", "synthetic"], default="auto")
    p.add_argument("--diffusion-steps", type=int, default=1000)
    p.add_argument(
        "--direct-batch",
        type=int,
        default=1,
        help="batch size of the direct multi-step measurement (0: skip it)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)"
    )
    args = p.parse_args()
    if args.threads:  # threadpoolctl, not torch.set_num_threads: see molfff/fff/linalg.py
        threadpool_limits(args.threads, user_api="openmp")
    device = torch.device(args.device)
    max_batch = args.max_batch or (10_000 if device.type == "cuda" else 1000)
    sizes = [b for b in BATCH_SIZES if b <= max_batch]
    if not sizes:
        raise SystemExit(f"--max-batch {max_batch}: no batch size of {BATCH_SIZES} fits")

    torch.manual_seed(0)
    p_n, source = size_distribution(args.sizes)
    flow = MoleculeFlow(QM9_TYPES, p_n, hidden=args.hidden, blocks=args.blocks).to(device).eval()
    with torch.no_grad():  # leave the exact identity of the zero-initialised output layer
        torch.nn.init.normal_(flow.flow.decoder.net.embedding_out.weight, std=0.01)
    mean_n = float((p_n * torch.arange(len(p_n), dtype=p_n.dtype)).sum())
    n_params = sum(q.numel() for q in flow.flow.decoder.parameters())
    threads = (
        f", {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (other load distorts CPU timings)"
        if device.type == "cpu"
        else ""
    )
    print(f"torch {torch.__version__} on {device}{threads}")
    if device.type == "cpu":
        print(f"memory: {malloc_note(device)}")
    print(
        f"decoder EGNNFlowNet: {args.blocks} blocks, hidden {args.hidden}, "
        f"{QM9_TYPES} types + charge, {n_params:,} parameters; p(n): {source}, "
        f"mean {mean_n:.2f} atoms"
    )
    full, what = full_sampler(flow, device)
    print(f"full sampling call: {what}")
    skipped = [b for b in BATCH_SIZES if b > max_batch]
    if skipped:
        print(f"skipping batch sizes {skipped} (--max-batch {max_batch})")
    print(
        f"\n{'B':>6} {'nodes':>7} {'edges':>9} | {'full ms/mol':>11} {'decoder ms/mol':>14} "
        f"{'full/decoder':>12} {'graph share':>11} | {args.diffusion_steps}x decoder / full"
    )
    results = {}
    for b in sizes:
        t = results[b] = bench_batch(flow, full, b, args, device)
        print(
            f"{b:>6} {t['nodes']:>7} {t['edges']:>9} | {t['full'] / b * 1e3:>11.3f} "
            f"{t['decoder'] / b * 1e3:>14.3f} {t['full'] / t['decoder']:>12.2f} "
            f"{t['graph'] / t['full']:>10.1%} | "
            f"{args.diffusion_steps * t['decoder'] / t['full']:>8.0f}x",
            flush=True,
        )
    print(
        f"\nfull/decoder: the whole sampling call over one bare decoder pass on the same z "
        f"(1 = the floor). graph share: fraction of the full call spent building the fully "
        f"connected graph (MoleculeFlow.sample builds one GraphLayout for the decoder). "
        f"{args.diffusion_steps}x decoder / full: extrapolated cost of a "
        f"{args.diffusion_steps}-step diffusion sampler with this EGNN over the FFF sample."
    )
    if args.direct_batch > 0:
        b = args.direct_batch
        total, one = direct_steps(flow, full, b, args.diffusion_steps, device)
        print(
            f"direct: {args.diffusion_steps} sequential decoder evaluations at B={b} took "
            f"{total:.2f} s = {total / b * 1e3:.1f} ms/mol; {args.diffusion_steps} x one "
            f"evaluation ({one * 1e3:.3f} ms) = {args.diffusion_steps * one:.2f} s "
            f"(extrapolation/direct = {args.diffusion_steps * one / total:.2f})"
        )
        if b in results:
            print(
                f"direct {args.diffusion_steps}-step cost / full FFF sampling call at B={b}: "
                f"{total / results[b]['full']:.0f}x"
            )


if __name__ == "__main__":
    main()
