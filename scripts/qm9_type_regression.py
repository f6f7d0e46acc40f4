"""Control for the sanity ladder: can the decoder's EGNN read atom types off the geometry at all?

Trains one :class:`~molfff.nn.egnn_flow.EGNNFlowNet` (the decoder's architecture) by plain
regression, not as a flow: its input is a randomly rotated copy of one QM9 training molecule
(plus ``--noise-std`` Å of noise) with standard normal type columns ``z``, and its type output
must become ``z + offset * one_hot(type)``. Where this reaches the target's own ceiling (the
share of atoms for which ``z + offset * one_hot`` still has the right argmax) within a few
hundred steps, the architecture is not what keeps the flow from learning types; the ladder
(``scripts/qm9_ladder.py``) then shows what the FFF coupling does with the same signal.

    python scripts/qm9_type_regression.py --index 62373        # CH4
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

# run as `python scripts/qm9_type_regression.py`: the script's folder is on sys.path
from qm9_memory import Memory

from molfff.fff import GraphLayout
from molfff.molecules import ATOM_TYPES
from molfff.molecules.qm9 import load_qm9
from molfff.nn.egnn_flow import EGNNFlowNet


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=int, default=62373, help="training-split index (CH4)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--offset", type=float, default=3.0, help="target z + offset * one_hot")
    p.add_argument("--noise-std", type=float, default=0.05, help="Å on the positions")
    p.add_argument("--normalization-factor", type=float, default=1.0)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("steps", "batch", "blocks", "width"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not 0 < args.normalization_factor < math.inf:
        p.error("--normalization-factor must be positive and finite")
    if not (math.isfinite(args.offset) and 0 <= args.noise_std < math.inf):
        p.error("--offset must be finite and --noise-std non-negative and finite")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train = load_qm9("train")
    if not 0 <= args.index < len(train.num_atoms):
        sys.exit(
            f"--index {args.index} is not in the training split (0..{len(train.num_atoms) - 1})"
        )
    memory = Memory(train, np.array([args.index]))
    k = len(ATOM_TYPES)
    net = EGNNFlowNet(
        k + 1,
        pos_dim=3,
        hidden=args.width,
        blocks=args.blocks,
        normalization_factor=args.normalization_factor,
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        mol = memory.batch(args.batch, g)
        pos = mol.pos + args.noise_std * torch.randn(mol.pos.shape, generator=g)
        z = torch.randn(pos.shape[0], k + 1, generator=g)
        target = z[:, :k] + args.offset * mol.one_hot
        layout = GraphLayout(mol.batch, mol.num_graphs, pos_dim=3)
        out = net(torch.cat([pos, z], dim=1), layout=layout)[:, 3 : 3 + k]
        loss = (out - target).pow(2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps:
            truth = mol.one_hot.argmax(dim=1)
            accuracy = float((out.argmax(dim=1) == truth).float().mean())
            ceiling = float((target.argmax(dim=1) == truth).float().mean())
            print(
                f"step {step} ({time.perf_counter() - start:.0f} s): squared error "
                f"{loss.item():.3f}, type accuracy {accuracy:.3f} "
                f"(ceiling of this batch's target {ceiling:.3f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
