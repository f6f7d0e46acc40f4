"""Where the host memory of one QM9 training step goes, and what the step costs.

Each measurement runs in a fresh child process on the same saved batch of QM9 training molecules
(the first ``--batch`` of a seeded shuffle), so peaks do not mask each other: the figure is the
child's peak resident set size (``ru_maxrss``) minus its resident size after loading the model
and the batch, i.e. the memory the measured work needed on top. Parts, cumulative (graphs kept
alive until the end of the part, as in a training step):

- ``encoder forward``: z = f(x) with its autograd graph;
- ``+ encoder VJP graph``: v^T J_f built with ``create_graph=True`` (the double-backward graph
  the trace term needs);
- ``decoder forward``: g(z) with its graph, on its own;
- ``loss forward``: all terms of :func:`molfff.fff.fff_loss`, every graph alive;
- ``step``: loss, backward, Adam step (the peak a training run sees);

and the ``step`` of every ``--decoder-jvp`` and ``--micro-batches``
setting asked for, with the median time per step (``--repeats`` steps after one warm-up;
children run one after the other, so the times share the machine's load). Micro-batches: the
batch's molecules split into k groups whose losses are backpropagated one after the other, each
scaled to make the batch mean, as ``trainer.accumulate_grad_batches`` does; the same gradient
estimator at the memory of one group. Per block: the encoder-forward part grows linearly with
the blocks; its slope is printed when ``--blocks`` lists two values.

    python scripts/memory_qm9_step.py --blocks 16 --batch 64            # the paper config
    python scripts/memory_qm9_step.py --blocks 4 8 --batch 32 --decoder-jvp reverse forward

Do not run it next to other heavy work if the times matter; the memory figures do not depend on
load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PARTS = ("encoder_forward", "encoder_vjp", "decoder_forward", "loss_forward", "step")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def save_batch(path: Path, batch: int, seed: int) -> dict:
    from torch_geometric.data import Batch

    from molfff.molecules.qm9 import load_qm9

    train = load_qm9("train")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:batch]
    data = Batch.from_data_list(train.subset(idx.numpy()).to_pyg())
    p_n = train.node_count_distribution(29).float()
    torch.save({"data": data, "p_n": p_n}, path)
    return {"atoms": int(data.num_nodes), "molecules": batch}


def child(args) -> None:
    from torch_geometric.data import Batch

    from molfff.fff.loss import fff_loss
    from molfff.molecules.flow import MoleculeBatch, MoleculeFlow

    saved = torch.load(args.batch_file, weights_only=False)
    torch.manual_seed(0)
    flow = MoleculeFlow(5, saved["p_n"], hidden=args.width, blocks=args.blocks_one)
    mol = MoleculeBatch.from_pyg(saved["data"])
    data_list = saved["data"].to_data_list()
    k = args.micro_batches
    chunks = [
        MoleculeBatch.from_pyg(Batch.from_data_list(data_list[i::k])) for i in range(k)
    ]  # molecules split into k micro-batches, as trainer.accumulate_grad_batches=k does
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x, _, layout = flow.dequantize(mol, g)
    x = x.detach().requires_grad_(True)
    enc, dec = flow.flow.encoder, flow.flow.decoder

    def part():
        if args.part == "encoder_forward":
            return enc(x, None, layout)
        if args.part == "encoder_vjp":
            z = enc(x, None, layout)
            return z, torch.autograd.grad(z, x, torch.randn_like(z), create_graph=True)
        if args.part == "decoder_forward":
            return dec(x.detach(), None, layout)
        if args.part == "loss_forward":
            return fff_loss(
                x,
                enc,
                dec,
                2000.0,
                layout=layout,
                generator=g,
                decoder_jvp=args.decoder_jvp,
            )
        opt.zero_grad(set_to_none=True)
        for chunk in chunks:  # the mean over the batch, one micro-batch graph at a time
            terms = flow.loss(chunk, 2000.0, g, decoder_jvp=args.decoder_jvp)
            (terms["loss"].sum() / mol.num_graphs).backward()
            del terms
        opt.step()
        return None

    with torch.no_grad():
        dec(x.detach(), None, layout)  # warm caches (edge indices) without a graph
    opt.zero_grad()
    base = rss_mib()
    times = []
    for _ in range(1 + args.repeats):
        t = time.perf_counter()
        out = part()
        times.append(time.perf_counter() - t)
        del out
    print(
        json.dumps(
            {
                "extra_peak_mib": peak_mib() - base,
                "seconds": statistics.median(times[1:]) if args.repeats else times[0],
            }
        )
    )


def run_child(args, part: str, blocks: int, decoder_jvp: str, micro: int = 1) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--part",
        part,
        "--batch-file",
        str(args.batch_file),
        "--blocks-one",
        str(blocks),
        "--width",
        str(args.width),
        "--decoder-jvp",
        decoder_jvp,
        "--micro-batches",
        str(micro),
        "--repeats",
        str(args.repeats if part == "step" else 1),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"child failed ({part}, {blocks} blocks): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, nargs="+", default=[16])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder-jvp", nargs="+", default=["reverse"], choices=["reverse", "forward"])
    p.add_argument(
        "--micro-batches",
        type=int,
        nargs="+",
        default=[1, 2],
        help="micro-batch counts of the step (trainer.accumulate_grad_batches)",
    )
    p.add_argument("--steps-only", action="store_true", help="skip the parts, time steps only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--part", default="step", help=argparse.SUPPRESS)
    p.add_argument("--batch-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--blocks-one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.blocks) < 1 or args.width < 1 or args.batch < 1:
        p.error("--blocks, --width and --batch must be at least 1")
    if args.repeats < 0:
        p.error(f"--repeats must be non-negative, got {args.repeats}")
    if not all(1 <= k <= args.batch for k in args.micro_batches):  # each needs a molecule
        p.error(f"--micro-batches must be between 1 and --batch ({args.batch})")
    if args.child:
        args.micro_batches = args.micro_batches[0]
        args.decoder_jvp = args.decoder_jvp[0]
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.batch_file = Path(tmp) / "batch.pt"
        info = save_batch(args.batch_file, args.batch, args.seed)
        print(
            f"one QM9 batch: {info['molecules']} molecules, {info['atoms']} atoms; EGNN width "
            f"{args.width}; memory = peak RSS of a fresh process minus its RSS after setup (MiB)"
        )
        encoder_parts = {}
        for blocks in args.blocks:
            print(f"\n{blocks} blocks (encoder and decoder each)")
            for part in [] if args.steps_only else PARTS[:-1]:
                r = run_child(args, part, blocks, args.decoder_jvp[0])
                print(f"  {part:<16} {r['extra_peak_mib']:9.1f} MiB")
                if part == "encoder_forward":
                    encoder_parts[blocks] = r["extra_peak_mib"]
            rows = []
            for jvp in args.decoder_jvp:
                for micro in args.micro_batches:
                    r = run_child(args, "step", blocks, jvp, micro)
                    rows.append((f"decoder_jvp={jvp} micro-batches={micro}", r))
            ref = rows[0][1]
            for name, r in rows:
                peak, sec = r["extra_peak_mib"], r["seconds"]
                print(
                    f"  step {name:<48} peak {peak:8.1f} MiB "
                    f"({peak / ref['extra_peak_mib']:.2f}x)  {sec:6.2f} s/step "
                    f"({sec / ref['seconds']:.2f}x)"
                )
        if len(encoder_parts) >= 2:
            (b0, m0), (b1, m1) = sorted(encoder_parts.items())[:2]
            print(f"\nencoder forward graph per block: {(m1 - m0) / (b1 - b0):.1f} MiB")


if __name__ == "__main__":
    main()
