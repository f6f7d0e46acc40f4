"""Cost of molfff's thread-safe log-det against the plain batched ``slogdet``, in one run.

``molfff.fff.linalg.logabsdet`` factorises matrices of more than ``BATCHED_MAX_ROWS`` rows one at a
time on the CPU, because the batched LU can hang or go wrong once the thread count changed in the
process (PyTorch issue 141358). This script times both on the Jacobian sizes molfff meets, calls
interleaved, in a process that never changes its thread count (where the batched call is safe),
and prints milliseconds per batch and the ratio. Values are checked against each other.

The LU is a small part of an exact NLL: the last line times a whole exact log-det of a QM9-sized
batch (8 molecules of 19 atoms, an EGNN decoder of 64 hidden units and ``--blocks`` blocks,
Jacobian columns by ``torch.func``) with the batched and the per-matrix LU.

    python scripts/bench_logdet.py [--repeats 20] [--dtype float32] [--blocks 4]
"""

from __future__ import annotations

import argparse

import torch
from benchtools import interleaved

from molfff.fff import GraphLayout, linalg, log_abs_det_jacobian
from molfff.nn import EGNNFlowNet

# (label, batch, rows): exact-NLL batches of each application
SHAPES = [
    ("toy2d", 2048, 2),
    ("DW4", 1024, 6),
    ("LJ13", 256, 36),
    ("MINIBOONE", 512, 43),
    ("LJ55", 50, 162),
    ("QM9 (19 atoms)", 32, 168),
    ("QM9 (27 atoms)", 32, 240),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per shape (about)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--blocks", type=int, default=4, help="EGNN blocks of the QM9 decoder")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    device = torch.device("cpu")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}; "
        f"per-matrix LU above {linalg.BATCHED_MAX_ROWS} rows"
    )
    print(f"{'system':16} {'batch x rows':>13} {'batched ms':>11} {'molfff ms':>10} {'ratio':>6}")
    g = torch.Generator().manual_seed(0)
    for label, b, m in SHAPES:
        a = torch.randn(b, m, m, generator=g, dtype=dtype) + 3 * torch.eye(m, dtype=dtype)
        old = torch.linalg.slogdet(a).logabsdet
        new = linalg.logabsdet(a)
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-3)
        t = interleaved(
            {
                "batched": lambda a=a: torch.linalg.slogdet(a),
                "molfff": lambda a=a: linalg.logabsdet(a),
            },
            device,
            args.repeats,
            args.budget,
        )
        print(
            f"{label:16} {f'{b} x {m}':>13} {1e3 * t['batched']:11.2f} "
            f"{1e3 * t['molfff']:10.2f} {t['molfff'] / t['batched']:6.2f}"
        )
    qm9_exact_logdet(args, device)
    return 0


def qm9_exact_logdet(args, device: torch.device) -> None:
    """The whole exact log-det of a QM9-sized batch, with either LU."""
    torch.manual_seed(0)
    net = EGNNFlowNet(6, pos_dim=3, hidden=64, blocks=args.blocks)
    layout = GraphLayout(torch.arange(8).repeat_interleave(19), pos_dim=3)
    x = layout.project(torch.randn(8 * 19, 9))  # positions and 6 feature columns per atom

    def run(max_rows: int):
        old, linalg.BATCHED_MAX_ROWS = linalg.BATCHED_MAX_ROWS, max_rows
        try:
            with torch.no_grad():
                return log_abs_det_jacobian(net, x, layout, chunk_size=32)
        finally:
            linalg.BATCHED_MAX_ROWS = old

    batched_rows = 10**9  # every size through one batched call: the old path
    torch.testing.assert_close(run(batched_rows), run(linalg.BATCHED_MAX_ROWS))
    t = interleaved(
        {"batched": lambda: run(batched_rows), "molfff": lambda: run(linalg.BATCHED_MAX_ROWS)},
        device,
        args.repeats,
        4 * args.budget,
        warmup=1,
    )
    print(
        f"exact log-det, 8 QM9 molecules (19 atoms, 168 rows), EGNN {args.blocks} blocks"
        f": batched {t['batched']:.2f} s, molfff {t['molfff']:.2f} s, "
        f"ratio {t['molfff'] / t['batched']:.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
