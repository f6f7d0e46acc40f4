"""Cost of molfff's thread-safe log-det against the plain batched ``slogdet``, in one run.

``molfff.fff.linalg.logabsdet`` factorises matrices of more than ``BATCHED_MAX_ROWS`` rows one at a
time on the CPU, because the batched LU can hang or go wrong once the thread count changed in the
process (PyTorch issue 141358). This script times both on the Jacobian sizes molfff meets, calls
interleaved, in a process that never changes its thread count (where the batched call is safe),
and prints milliseconds per batch and the ratio. Values are checked against each other.

    python scripts/bench_logdet.py [--repeats 20] [--dtype float32]
"""

from __future__ import annotations

import argparse

import torch
from benchtools import interleaved

from molfff.fff import linalg

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
