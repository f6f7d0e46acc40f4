"""How many copies of one rigid shape must a permutation-equivariant flow learn?

A flow ``x = g(z)`` whose networks are permutation-equivariant and whose latent density is
permutation-invariant gives every relabelling of a point cloud the same density. Trained on one
rigid shape of n unlabelled points (random rotations, small noise), its target is therefore not
one point up to E(3) but ``n! / |G|`` of them: one per labelling, where ``G`` is the group of
permutations that a rotation or reflection of the shape realises (its point group acting on the
points). A continuous decoder has to cut the latent space into that many regions, and the mass
near their borders decodes to something between two labellings: not the shape.

This script tests that prediction without atom types or chemistry. It trains the same
``ParticleEGNN`` free-form flow on one shape at a time, with equal settings, and reports the
share of samples that are the shape (RMSD below ``--tolerance`` after the best permutation and
rotation or reflection, searched exhaustively) next to the number of labellings, which it counts
the same way (permutations whose aligned RMSD to the shape is ~0). Shapes, all with nearest
neighbours about 1.5 apart (bond lengths, in Å):

- ``tetrahedron``: regular, 4 points, all 24 permutations realised, 1 labelling;
- ``square``: 4 points in a plane, 8 realised (D4h), 3 labellings;
- ``scalene4``: a tetrahedron with six different edges, 24 labellings;
- ``octahedron``: regular, 6 points, 48 realised (Oh), 15 labellings;
- ``scalene6``: a distorted octahedron with no symmetry, 720 labellings.

With ``--distinguishable`` every point carries its index as a fixed one-hot attribute
(:class:`~molfff.nn.ParticleEGNN`'s ``distinguishable``): the networks stay E(3)-equivariant but
are no longer permutation-equivariant, so the training order is the only labelling the density
has to learn. If labellings are what costs samples, this flag should bring every shape close to
the regular tetrahedron's share; the score is the same (best permutation and alignment).

A QM9 molecule's geometry (``--molecule INDEX``, a training-split index; acetamide is 44356)
is trained the same way, positions only, with its atoms either labelled (``--distinguishable``)
or typed (``--types``: each atom reads the one-hot of its element, ``ParticleEGNN``'s
``species``, so the networks stay permutation-equivariant among atoms of one element and the
density must learn the relabellings within an element, 5! · 2! for acetamide's H5 C2). The score
is then over element-preserving permutations only, and the samples, with the molecule's
elements, also get EDM's atom and molecule stability (:mod:`molfff.molecules.metrics`). This
separates the two halves of the QM9 ladder's 9-atom rung: the geometry, which this learns, and
the types, which the ladder's argmax flow must also read off it.

    python scripts/symmetry_rung.py --steps 2000 --batch 64 --out symmetry_rung.jsonl
    python scripts/symmetry_rung.py --steps 2000 --batch 64 --distinguishable --out labelled.jsonl
    python scripts/symmetry_rung.py --molecule 44356 --types --beta 200 --steps 8000 --batch 32 \
        --noise-std 0.05 --noise-end 0.02 --out acetamide.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from qm9_ladder import noise_at  # the ladder's schedule (anneals from the midpoint)

from molfff.fff import FreeFormFlow, ParticleLayout
from molfff.nn import ParticleEGNN

BOND = 1.5
MAX_PERMUTATIONS = 50_000  # the exhaustive RMSD search's limit (acetamide: 240)


def shapes() -> dict[str, np.ndarray]:
    """Name -> ``(n, 3)`` positions with zero centre of mass."""
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    tet *= BOND / np.linalg.norm(tet[0] - tet[1])
    square = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], float) * BOND / math.sqrt(2)
    scalene4 = tet * np.array([1.0, 1.25, 0.8]) + np.array(
        [[0.1, 0.0, 0.0], [0.0, 0.15, 0.0], [0.0, 0.0, -0.2], [0.05, -0.1, 0.1]]
    )
    octa = np.concatenate([np.eye(3), -np.eye(3)]) * BOND / math.sqrt(2)
    scalene6 = octa * np.array([1.0, 1.2, 0.85]) + np.array(
        [
            [0.0, 0.1, 0.0],
            [0.12, 0.0, 0.0],
            [0.0, -0.1, 0.15],
            [0.0, 0.0, 0.0],
            [-0.15, 0.0, 0.05],
            [0.05, 0.1, 0.0],
        ]
    )
    out = {
        "tetrahedron": tet,
        "square": square,
        "scalene4": scalene4,
        "octahedron": octa,
        "scalene6": scalene6,
    }
    return {k: v - v.mean(0) for k, v in out.items()}


def orthogonal_fit_sq(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``(..., n, 3), (n, 3) -> (...)``: summed squared residual of centred ``a`` (in its given
    order) to centred ``ref`` after the best orthogonal map.

    Kabsch with reflections allowed: the optimal map's fit is the sum of the singular values of
    the cross-covariance ``a^T ref``, so the residual is ``|a|^2 + |ref|^2 - 2 sum(sigma)``.
    """
    sv = np.linalg.svd(np.einsum("...ni,nj->...ij", a, ref), compute_uv=False).sum(-1)
    return np.clip((a**2).sum((-1, -2)) + (ref**2).sum() - 2 * sv, 0, None)


def permutations(species: list[int] | None, n: int) -> np.ndarray:
    """``(P, n)``: every permutation of n points that maps each point to one of its own
    species (all n! without species)."""
    if species is None:
        return np.array(list(itertools.permutations(range(n))))
    groups = [[i for i in range(n) if species[i] == s] for s in sorted(set(species))]
    out = []
    for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
        perm = np.empty(n, dtype=np.int64)
        for g, image in zip(groups, choice, strict=True):
            perm[g] = image
        out.append(perm)
    return np.array(out)


def aligned_rmsd(samples: np.ndarray, ref: np.ndarray, species=None) -> np.ndarray:
    """``(S, n, 3), (n, 3) -> (S,)``: RMSD after the best permutation (within species, if
    given) and orthogonal map, searched exhaustively."""
    n = ref.shape[0]
    perms = permutations(species, n)  # (P, n)
    a = samples - samples.mean(1, keepdims=True)
    best = np.full(len(a), np.inf)
    for chunk in np.array_split(np.arange(len(a)), max(1, len(a) * len(perms) // 200_000)):
        best[chunk] = np.sqrt(orthogonal_fit_sq(a[chunk][:, perms], ref).min(1) / n)
    return best


def labellings(ref: np.ndarray, species=None) -> int:
    """n! / |G|: permutations of the shape (within species, if given) that no rotation or
    reflection realises, counted."""
    n = ref.shape[0]
    perms = permutations(species, n)
    realised = int((np.sqrt(orthogonal_fit_sq(ref[perms], ref) / n) < 1e-4).sum())
    return len(perms) // realised


def random_rotations(b: int, g: torch.Generator) -> torch.Tensor:
    q = torch.randn(b, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        1,
    ).reshape(b, 3, 3)


def train_one(ref: np.ndarray, args, species=None) -> dict:
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    n = ref.shape[0]
    layout = ParticleLayout(n, 3)
    kw = dict(
        hidden=args.width,
        blocks=args.blocks,
        normalization_factor=1.0,
        distinguishable=args.distinguishable,
        species=species if args.types else None,
    )
    flow = FreeFormFlow(
        ParticleEGNN(n, 3, **kw), ParticleEGNN(n, 3, **kw), layout=layout, event_shape=(3 * n,)
    )
    opt = torch.optim.Adam(flow.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    r = torch.as_tensor(ref)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        rot = random_rotations(args.batch, g)
        x = torch.einsum("nj,bij->bni", r, rot)
        x = x + noise_at(step, args) * torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = layout.project(x.reshape(args.batch, 3 * n).float())
        loss = flow.loss(x, beta=args.beta).loss.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        s = flow.sample(args.samples, generator=g).reshape(args.samples, n, 3).double().numpy()
    rmsd = aligned_rmsd(s, ref, species)
    out = {
        "steps": args.steps,
        "train_seconds": round(seconds, 1),
        "share_is_shape": float((rmsd < args.tolerance).mean()),
        "median_rmsd": float(np.median(rmsd)),
    }
    if species is not None:  # a molecule: its elements make the samples molecules
        from molfff.molecules.metrics import evaluate

        m = evaluate([(p, np.asarray(species)) for p in s], rdkit=False)
        out.update(atom_stability=m["atom_stability"], molecule_stability=m["molecule_stability"])
    return out


def load_molecule(index: int) -> tuple[np.ndarray, list[int]]:
    """Centred positions (Å) and atomic numbers of QM9 training molecule ``index``."""
    from molfff.molecules.qm9 import load_qm9

    train = load_qm9("train")
    if not 0 <= index < len(train):
        sys.exit(f"--molecule must be a training-split index in [0, {len(train)})")
    pos, z = train.molecule(index)
    z = [int(a) for a in z]
    count = math.prod(math.factorial(z.count(e)) for e in set(z))
    if count > MAX_PERMUTATIONS:
        sys.exit(
            f"--molecule {index}: {count:,} element-preserving permutations, more than the "
            f"exhaustive score searches ({MAX_PERMUTATIONS:,}); choose a molecule with fewer "
            "atoms of one element"
        )
    return np.asarray(pos, float) - np.mean(pos, 0), z


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    catalogue = shapes()
    p.add_argument(
        "--shapes", nargs="+", default=None, choices=list(catalogue), help="default: all"
    )
    p.add_argument("--steps", type=int, default=3000, help="Adam steps per shape")
    p.add_argument("--batch", type=int, default=128, help="rotated noisy copies per step")
    p.add_argument("--lr", type=float, default=1e-3, help="annealed to 0 (cosine)")
    p.add_argument("--beta", type=float, default=100.0, help="FFF reconstruction weight")
    p.add_argument("--width", type=int, default=64, help="EGNN hidden width")
    p.add_argument("--blocks", type=int, default=4, help="EGNN blocks")
    p.add_argument("--noise-std", type=float, default=0.05, help="per coordinate, Å")
    p.add_argument(
        "--noise-end",
        type=float,
        default=None,
        help="anneal the noise linearly to this std over the second half (default: constant)",
    )
    p.add_argument(
        "--molecule",
        type=int,
        default=None,
        help="train on this QM9 training molecule's geometry instead of the shapes",
    )
    p.add_argument(
        "--types",
        action="store_true",
        help="with --molecule: atoms read their element (equivariant within an element)",
    )
    p.add_argument("--tolerance", type=float, default=0.15, help="RMSD that counts as the shape, Å")
    p.add_argument("--samples", type=int, default=2000, help="samples scored per shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--distinguishable",
        action="store_true",
        help="each point gets its index as a fixed attribute (not permutation-equivariant)",
    )
    p.add_argument("--out", type=Path, default=None, help="append one JSON line per shape")
    p.set_defaults(noise_anneal_from=0.5)  # read by the ladder's noise_at
    args = p.parse_args(argv)
    for key in ("steps", "batch", "width", "blocks", "samples"):
        if getattr(args, key) < 1:
            sys.exit(f"--{key} must be >= 1")
    for key in ("lr", "beta", "tolerance"):
        if not getattr(args, key) > 0:
            sys.exit(f"--{key} must be > 0")
    noise = [args.noise_std] + ([] if args.noise_end is None else [args.noise_end])
    if not all(math.isfinite(v) and v >= 0 for v in noise):
        sys.exit("--noise-std and --noise-end must be finite and >= 0")
    if args.molecule is not None and args.shapes is not None:
        sys.exit("give --shapes or --molecule, not both")
    if args.types and args.molecule is None:
        sys.exit("--types needs --molecule (the shapes have no elements)")
    if args.types and args.distinguishable:
        sys.exit("give --types or --distinguishable, not both")
    if args.molecule is not None and not (args.types or args.distinguishable):
        sys.exit(
            "--molecule needs --types or --distinguishable (unlabelled molecules are the QM9 "
            "ladder's: scripts/qm9_ladder.py)"
        )
    if args.out is not None and args.out.is_dir():
        sys.exit(f"--out: {args.out} is a folder; give a file to append JSON lines to")
    if args.out is not None and not args.out.parent.is_dir():
        sys.exit(f"--out: folder {args.out.parent} does not exist")
    targets = {name: (catalogue[name], None) for name in args.shapes or catalogue}
    if args.molecule is not None:
        targets = {f"qm9:{args.molecule}": load_molecule(args.molecule)}
    if args.distinguishable:
        print(
            "points carry their index (--distinguishable); labellings: of the unlabelled shape "
            "(within elements, for a molecule)"
        )
    if args.types:
        print("atoms carry their element (--types); labellings: within elements")
    print(f"{'shape':<12} {'n':>2} {'labellings':>10} {'is the shape':>12} {'median RMSD':>11}  s")
    for name, (ref, species) in targets.items():
        row = {
            "shape": name,
            "n": len(ref),
            "labellings": labellings(ref, species),
            "distinguishable": args.distinguishable,
            "types": args.types,
            "seed": args.seed,
            "beta": args.beta,
            "noise_std": args.noise_std,
            "noise_end": args.noise_end,
            "tolerance": args.tolerance,
        }
        row.update(train_one(ref, args, species))
        stability = ""
        if species is not None:
            stability = (
                f"  molecule / atom stability {row['molecule_stability']:.3f} / "
                f"{row['atom_stability']:.3f}"
            )
        print(
            f"{name:<12} {row['n']:>2} {row['labellings']:>10} {row['share_is_shape']:>12.3f} "
            f"{row['median_rmsd']:>11.3f}  {row['train_seconds']:.0f}{stability}",
            flush=True,
        )
        if args.out is not None:
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
