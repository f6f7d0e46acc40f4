"""Sanity ladder of the QM9 pipeline: can the molecule flow memorise K molecules of one size?

A flow that learns chemistry must first be able to learn one molecule. This script trains
:class:`molfff.molecules.MoleculeFlow` (the same loss, dequantizer and EGNNs as ``molfff train
qm9``) on K QM9 training molecules of ``--atoms`` atoms, each batch made of randomly rotated
copies, and at regular steps measures what the surrogate loss cannot show:

- samples (at the molecules' size): atom and molecule stability, validity (EDM's metrics,
  :mod:`molfff.molecules.metrics`);
- geometry: RMSD (Å) of each sample to its nearest training molecule after optimal atom matching
  and alignment, mirror images allowed (:mod:`molfff.molecules.alignment`), and the share of its
  atoms whose type agrees with the matched atom; a sample "is" a training molecule when that
  RMSD is below ``--hit-rmsd`` and all types agree (for K > 1: where the mass between the
  memorised molecules goes);
- composition of the sampled atoms (H, C, N, O, F shares) against the training molecules', and
  the share of samples whose atom types, as a multiset, are those of a training molecule;
- whether the encoder maps the data onto the latent N(0, I), which samples are drawn from: the
  standard deviation of ``z = f(x)`` over 256 rotated, dequantized copies of the training
  molecules, separately for the position, atom-type and charge columns (1 when the model fits;
  below 1, samples come from latent regions the data never reach), and the cycle error
  ``||f(g(z)) - z||`` (RMS) for ``z ~ N(0, I)``, next to ``||g(f(x)) - x||`` at the data: where
  encoder and decoder disagree off the data, samples are not what the likelihood has learned;
- the type margin of the latents: the mean over atoms of ``z`` on the atom's own type column
  minus its mean on the other type columns (0 at a fit, where ``z`` given the atom's role is
  N(0, I); above 0, the encoder still reads the type off ``v`` instead of the geometry, and
  samples from N(0, I) get types at random; about 1 with q at N(0, I) and an identity flow),
  and the same margin of q's ``mu`` (where the dequantizer has placed the types);
- the exact NLL given n (nats per molecule, the density of the model that samples, one
  dequantization draw; :meth:`MoleculeFlow.nll`) of the training molecules, with the paper's
  estimate and the reconstruction error next to it.

Each evaluation is one JSON line in ``OUT/ladder.jsonl``; the last is printed as a summary.
The weights are kept as ``OUT/flow.pt`` and as ``OUT/model.ckpt``, a checkpoint that ``molfff
sample``, ``metrics`` and ``evaluate`` read like a ``molfff train qm9`` run's:

    python scripts/qm9_ladder.py --molecules 8 --steps 3000 --out runs/ladder/k8
    molfff sample runs/ladder/k8/model.ckpt --stable-only --n 100 > out.xyz

Run with ``OMP_NUM_THREADS=1`` next to other work; never set the thread count from inside (see
the README: batched LU with a changed thread count can hang on the CPU build).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from qm9_memory import Memory

from molfff.files import atomic_write
from molfff.molecules import ATOM_TYPES
from molfff.molecules.alignment import match, type_agreement
from molfff.molecules.elements import SYMBOL_OF_Z
from molfff.molecules.flow import MoleculeFlow
from molfff.molecules.metrics import evaluate
from molfff.molecules.qm9 import load_qm9

# acetamide CC(N)=O: 9 atoms of 4 elements (H5 C2 N O), index in the standard training split
DEFAULT_MOLECULE = 44356


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--atoms", type=int, default=None, help="molecule size n (default 9, or --index's)"
    )
    p.add_argument(
        "--molecules",
        type=int,
        default=None,
        help="K training molecules of size n (default 1, or as many as --index names)",
    )
    p.add_argument(
        "--index",
        type=int,
        nargs="*",
        default=None,
        help=f"training-split indices to use (default: {DEFAULT_MOLECULE} for K=1, else K "
        "seeded random molecules of --atoms atoms)",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32, help="rotated copies per step")
    p.add_argument("--beta", type=float, default=2000.0, help="reconstruction weight")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--normalization-factor", type=float, default=100.0, help="EGNN sum divisor Z")
    p.add_argument(
        "--default-init",
        action="store_true",
        help="feature output layer with PyTorch's default init (authors' code), not zero",
    )
    p.add_argument(
        "--distinguishable",
        action="store_true",
        help="atom k reads the one-hot index e_k (model.egnn_node_index = n): the density tells "
        "labellings apart, as a diagnostic of their cost (not permutation-equivariant)",
    )
    p.add_argument(
        "--charge-scale",
        type=float,
        default=10.0,
        help="dequantized charge is (c + s) / a (model.charge_scale; 1 = raw atomic numbers, as "
        "in the authors' code)",
    )
    p.add_argument(
        "--type-offset",
        type=float,
        default=0.0,
        help="q's type means start at this times the one-hot (model.type_offset)",
    )
    p.add_argument(
        "--dequantizer-lr",
        type=float,
        default=None,
        help="learning rate of q (default --lr; 0 keeps q at its start)",
    )
    p.add_argument(
        "--cosine", action="store_true", help="anneal the learning rates to 0 over --steps (cosine)"
    )
    p.add_argument("--hutchinson", type=int, default=1, help="Hutchinson vectors per sample")
    p.add_argument(
        "--noise-std",
        type=float,
        default=0.0,
        help="Gaussian noise on the node rows (Å for positions) before encoding (loss.noise_std): "
        "a memorised molecule is a point, whose likelihood grows without bound as the flow "
        "contracts onto it; noise bounds it",
    )
    p.add_argument(
        "--noise-end",
        type=float,
        default=None,
        help="anneal the noise linearly from --noise-std to this, from --noise-anneal-from to "
        "the last step (default: constant noise). Measured on CH4: 0.05 Å teaches the types, "
        "0.02 Å keeps the bonds inside the stability check's cutoffs",
    )
    p.add_argument(
        "--noise-anneal-from",
        type=float,
        default=0.5,
        help="fraction of --steps after which --noise-end's annealing starts",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from the weights of an earlier run's flow.pt or model.ckpt (same model "
        "settings; the optimizer starts afresh, and its first steps shake the model)",
    )
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--hit-rmsd", type=float, default=0.3, help="Å, see the docstring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the ladder run already in --out (its log, flow.pt and model.ckpt)",
    )
    args = p.parse_args(argv)
    for name in (
        *("atoms", "molecules", "steps", "batch", "eval_every", "samples", "hutchinson"),
        *("width", "blocks"),
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.index:  # --atoms is checked against the molecules' size once they are loaded
        if args.molecules is not None and args.molecules != len(args.index):
            p.error(f"--molecules {args.molecules} disagrees with the {len(args.index)} --index")
    else:
        args.atoms = 9 if args.atoms is None else args.atoms
        args.molecules = 1 if args.molecules is None else args.molecules
    positive = {"beta": args.beta, "lr": args.lr, "hit-rmsd": args.hit_rmsd}
    positive["normalization-factor"] = args.normalization_factor
    positive["charge-scale"] = args.charge_scale
    for name, value in positive.items():
        if not 0 < value < math.inf:  # nan fails this too
            p.error(f"--{name} must be positive and finite, got {value}")
    if args.dequantizer_lr is not None and not 0 <= args.dequantizer_lr < math.inf:
        p.error(f"--dequantizer-lr must be non-negative and finite, got {args.dequantizer_lr}")
    if not math.isfinite(args.type_offset):
        p.error(f"--type-offset must be finite, got {args.type_offset}")
    if not 0 <= args.noise_std < math.inf:
        p.error(f"--noise-std must be non-negative and finite, got {args.noise_std}")
    if args.noise_end is not None and not 0 <= args.noise_end < math.inf:
        p.error(f"--noise-end must be non-negative and finite, got {args.noise_end}")
    if not 0 <= args.noise_anneal_from <= 1:
        p.error(f"--noise-anneal-from must be in [0, 1], got {args.noise_anneal_from}")
    return args


def noise_at(step: int, args) -> float:
    """Training noise std at ``step`` (1..``--steps``): ``--noise-std``, then, with
    ``--noise-end``, linear to it from step ``--noise-anneal-from * --steps`` to the last."""
    if args.noise_end is None:
        return args.noise_std
    begin = args.noise_anneal_from * args.steps
    if step <= begin:
        return args.noise_std
    frac = min(1.0, (step - begin) / max(args.steps - begin, 1e-12))
    return args.noise_std + frac * (args.noise_end - args.noise_std)


def pick_molecules(args, train) -> np.ndarray:
    """Training-split indices of the K molecules."""
    if args.index:
        idx = np.asarray(args.index)
        if (idx < 0).any() or (idx >= len(train)).any():
            sys.exit(f"--index must be in [0, {len(train)})")
        sizes = set(train.num_atoms[idx].tolist())
        if len(sizes) != 1:
            sys.exit(f"the --index molecules must have one size, got sizes {sorted(sizes)}")
        return idx
    if args.molecules == 1 and train.num_atoms[DEFAULT_MOLECULE] == args.atoms:
        return np.array([DEFAULT_MOLECULE])
    pool = np.flatnonzero(train.num_atoms == args.atoms)
    if len(pool) < args.molecules:
        sys.exit(f"the training split has {len(pool)} molecules of {args.atoms} atoms")
    return np.sort(np.random.default_rng(args.seed).choice(pool, args.molecules, replace=False))


def _type_margin(values: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """Mean over atoms of (value on the own type's column - mean value on the other columns)."""
    own = (values * one_hot).sum(1)
    others = (values * (1 - one_hot)).sum(1) / (one_hot.shape[1] - 1)
    return (own - others).mean()


@torch.no_grad()
def latent_fit(flow: MoleculeFlow, memory: Memory, g: torch.Generator) -> dict:
    """Std of f(x) per column group over 256 copies, and cycle errors (module docstring)."""
    mol = memory.batch(256, g)
    x, _, layout = flow.dequantize(mol, g)
    z = flow.flow.encoder(x, None, layout)
    k = len(ATOM_TYPES)
    zs = layout.randn(x, generator=g)
    cycle = flow.flow.encoder(flow.flow.decoder(zs, None, layout), None, layout) - zs
    at_data = flow.flow.decoder(z, None, layout) - x
    mu, _ = flow.dequantizer.conditional(mol.pos, mol.one_hot, mol.charge, mol.batch)
    return {
        "latent_type_margin": float(_type_margin(z[:, 3 : 3 + k], mol.one_hot)),
        "q_type_margin": float(_type_margin(mu[:, :k], mol.one_hot)),
        "latent_std_pos": float(z[:, :3].std()),
        "latent_std_types": float(z[:, 3 : 3 + k].std()),
        "latent_std_charge": float(z[:, 3 + k].std()),
        "cycle_rms_latent": float(cycle.pow(2).mean().sqrt()),
        "cycle_rms_data": float(at_data.pow(2).mean().sqrt()),
    }


def composition(zs: list[np.ndarray]) -> dict[str, float]:
    allz = np.concatenate(zs)
    return {SYMBOL_OF_Z[z]: round(float((allz == z).mean()), 4) for z in ATOM_TYPES}


@torch.no_grad()
def measure(flow: MoleculeFlow, memory: Memory, args, g: torch.Generator) -> dict:
    flow.eval()
    sizes = torch.full((args.samples,), memory.n, dtype=torch.long)
    mol = flow.sample(args.samples, generator=g, sizes=sizes)
    z = torch.as_tensor(ATOM_TYPES)[mol.one_hot.argmax(1)].view(args.samples, memory.n).numpy()
    pos = mol.pos.double().view(args.samples, memory.n, 3).numpy()
    samples = list(zip(pos, z, strict=True))
    out = evaluate(samples)
    rmsd, agree, hits = [], [], np.zeros(len(memory.mols), dtype=int)
    for p, zi in samples:
        best = min(
            ((match(p, q), k) for k, (q, _) in enumerate(memory.mols)), key=lambda t: t[0].rmsd
        )
        m, k = best
        a = type_agreement(zi, memory.mols[k][1], m)
        rmsd.append(m.rmsd)
        agree.append(a)
        if m.rmsd < args.hit_rmsd and a == 1.0:
            hits[k] += 1
    rmsd = np.array(rmsd)
    formulas = {tuple(sorted(zs.tolist())) for _, zs in memory.mols}
    out["composition_match"] = float(np.mean([tuple(sorted(zi.tolist())) in formulas for zi in z]))
    right_geometry = rmsd < args.hit_rmsd
    out["types_right_given_geometry"] = (
        float(np.mean(np.array(agree)[right_geometry] == 1.0)) if right_geometry.any() else None
    )
    out.update(latent_fit(flow, memory, g))
    out.update(
        rmsd_median=float(np.median(rmsd)),
        rmsd_q10=float(np.quantile(rmsd, 0.1)),
        type_agreement=float(np.mean(agree)),
        hit_share=float(hits.sum() / args.samples),
        molecules_hit=int((hits > 0).sum()),
        composition_samples=composition(list(z)),
        composition_train=composition([zs for _, zs in memory.mols]),
    )
    nll = flow.nll(memory.batch(len(memory.mols), g, rotate=False), g)
    conv = nll["converged"]
    out.update(
        nll_given_n_exact=float(nll["nll_given_n_exact"][conv].mean()) if conv.any() else None,
        nll_given_n_estimate=float(nll["nll_given_n_estimate"].mean()),
        exact_converged=float(conv.float().mean()),
        reconstruction=float(nll["reconstruction"].mean()),
    )
    flow.train()
    return out


def export_checkpoint(flow: MoleculeFlow, args, path: Path, step: int) -> None:
    """Write the flow as a ``molfff train qm9`` checkpoint whose config records the ladder's
    model and loss settings (``loss.noise_std``: the noise at ``step``)."""
    from molfff.train.config import load_config
    from molfff.train.molecules import save_flow_checkpoint

    overrides = [
        f"seed={args.seed}",
        f"data.batch_size={args.batch}",
        f"model.width={args.width}",
        f"model.blocks={args.blocks}",
        f"model.charge_scale={args.charge_scale}",
        f"model.type_offset={args.type_offset}",
        f"model.egnn_normalization_factor={args.normalization_factor}",
        f"model.egnn_node_index={flow.flow.encoder.node_index}",
        f"model.dequantizer_blocks={len(flow.dequantizer.net.blocks)}",
        f"loss.beta={args.beta}",
        f"loss.noise_std={noise_at(max(step, 1), args)}",
        f"loss.hutchinson_samples={args.hutchinson}",
        f"optim.lr={args.lr}",
    ]
    save_flow_checkpoint(flow, load_config("qm9", overrides), path)


def report(row: dict, log: Path, k: int, flow: MoleculeFlow, args) -> None:
    """Append the evaluation to the log, print it, and keep the weights."""
    right = row["types_right_given_geometry"]
    right = "n/a (no sample has it)" if right is None else f"{right:.3f}"
    # weights first, each whole or absent: after a kill the log's last row has its weights
    with atomic_write(args.out / "flow.pt") as fh:
        torch.save(flow.state_dict(), fh)
    export_checkpoint(flow, args, args.out / "model.ckpt", row["step"])
    with log.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(
        f"step {row['step']} ({row['minutes']} min): molecule stability "
        f"{row['molecule_stability']:.3f}, atom stability {row['atom_stability']:.3f}, "
        f"validity {row.get('validity', float('nan')):.3f}, median RMSD to nearest "
        f"training molecule {row['rmsd_median']:.3f} Å, type agreement "
        f"{row['type_agreement']:.3f}, right composition {row['composition_match']:.3f}, "
        f"all types right where the geometry is {right}, latent std "
        f"of the data pos/types/charge {row['latent_std_pos']:.2f}/"
        f"{row['latent_std_types']:.2f}/{row['latent_std_charge']:.2f}, type margin of the "
        f"latents / of q {row['latent_type_margin']:.2f} / {row['q_type_margin']:.2f}, cycle "
        f"RMS off/at the "
        f"data {row['cycle_rms_latent']:.3f}/{row['cycle_rms_data']:.1e}, samples that are a "
        f"training molecule {row['hit_share']:.3f} ({row['molecules_hit']}/{k} molecules "
        f"hit), exact NLL given n {row['nll_given_n_exact']} nats/molecule, reconstruction "
        f"{row['reconstruction']:.2e}",
        flush=True,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    try:  # before the data and the model: a bad --out fails at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        sys.exit(f"--out {args.out}: cannot create this folder ({err.strerror})")
    if (args.out / "ladder.jsonl").is_file() and not args.overwrite:
        sys.exit(
            f"--out {args.out} already holds a ladder run (ladder.jsonl); choose another folder "
            "(to continue it: --init OUT/flow.pt --out NEW) or pass --overwrite"
        )
    torch.manual_seed(args.seed)
    train = load_qm9("train")
    idx = pick_molecules(args, train)
    memory = Memory(train, idx)
    if args.atoms is not None and memory.n != args.atoms:
        sys.exit(f"molecule {idx[0]} has {memory.n} atoms, not --atoms {args.atoms}")
    p_n = torch.zeros(memory.n + 1)
    p_n[memory.n] = 1.0
    flow = MoleculeFlow(
        len(ATOM_TYPES),
        p_n,
        hidden=args.width,
        blocks=args.blocks,
        charge_scale=args.charge_scale,
        type_offset=args.type_offset,
        egnn={
            "normalization_factor": args.normalization_factor,
            "zero_init": not args.default_init,
            "node_index": memory.n if args.distinguishable else 0,
        },
    )
    if args.init is not None:
        try:  # unreadable, not a torch file, not a state dict, or another model's
            state = torch.load(args.init, weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:  # model.ckpt: its flow
                from molfff.train.checkpoint import module_from_checkpoint, upgrade_checkpoint

                module = module_from_checkpoint(upgrade_checkpoint(state, args.init))
                state = module.flow.state_dict()
                state["log_p_n"] = flow.log_p_n  # the memorised size (model.ckpt pads it)
            flow.load_state_dict(state)
        except Exception as err:  # noqa: BLE001 (pickle, zip, EOF, type errors alike)
            why = str(err).strip() or type(err).__name__
            why = why if len(why) < 500 else why[:500] + " ..."
            sys.exit(f"--init {args.init}: cannot load these weights into this model ({why})")
    q_lr = args.lr if args.dequantizer_lr is None else args.dequantizer_lr
    opt = torch.optim.Adam(
        [
            {"params": flow.flow.parameters(), "lr": args.lr},
            {"params": flow.dequantizer.parameters(), "lr": q_lr},
        ]
    )
    # --cosine: every group's learning rate follows (1 + cos(pi t / steps)) / 2 down to 0
    schedule = (
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, args.steps) / args.steps))
        )
        if args.cosine
        else None
    )
    log = args.out / "ladder.jsonl"
    log.write_text("")
    smiles = None if train.smiles is None else [str(train.smiles[i]) for i in idx]
    header = {"config": {k: str(v) for k, v in vars(args).items()}, "indices": idx.tolist()}
    header["smiles"] = smiles
    print(json.dumps(header), flush=True)
    g = torch.Generator().manual_seed(args.seed)
    ge = torch.Generator().manual_seed(args.seed + 1)
    start, losses = time.perf_counter(), []
    for step in range(0, args.steps + 1):
        if step == 0:  # the untrained model: the baseline of every diagnostic
            row = {"step": 0, "minutes": 0.0}
            row.update(measure(flow, memory, args, ge))
            report(row, log, len(idx), flow, args)
            continue
        terms = flow.loss(
            memory.batch(args.batch, g),
            args.beta,
            g,
            hutchinson_samples=args.hutchinson,
            noise_std=noise_at(step, args),
        )
        loss = terms["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        if schedule is not None:
            schedule.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            sys.exit(f"loss is {losses[-1]} at step {step}")
        if step % args.eval_every == 0 or step == args.steps:
            row = {
                "step": step,
                "minutes": round((time.perf_counter() - start) / 60, 2),
                "train_loss_mean_last": float(np.mean(losses[-args.eval_every :])),
                "train_reconstruction": float(terms["reconstruction"].detach().mean()),
                "noise_std": noise_at(step, args),
            }
            row.update(measure(flow, memory, args, ge))
            report(row, log, len(idx), flow, args)


if __name__ == "__main__":
    main()
