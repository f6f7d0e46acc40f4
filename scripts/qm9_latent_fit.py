"""Does a trained QM9 model's encoder map the data onto N(0, I), where samples are drawn from?

Samples are ``g(z)`` with ``z ~ N(0, I)``; they look like the data only where the encoder's image
of the data, ``z = f(x)``, is distributed like N(0, I). This script encodes ``--n`` dequantized
molecules of a split and prints, for the position, atom-type and charge columns of ``z``, the mean
and standard deviation (0 and 1 when the model fits), the mean type columns of ``v`` and ``z``
per element, the share of atoms whose type ``g(f(x))`` gives back, and the composition of the
data next to that of ``--n`` samples. ``--type-temperatures 1 0.5 0`` also samples ``--n`` molecules
with the type and charge columns of ``z`` scaled by each T (positions' columns unchanged) and
prints their atom and molecule stability and composition: a decoder that reads the types off the
geometry it decodes keeps them right as T falls; one that takes them from the latent noise does not.
T != 1 is a diagnostic, not the model's distribution.

    python scripts/qm9_latent_fit.py runs/qm9_small/<run>            # best checkpoint
    python scripts/qm9_latent_fit.py runs/qm9_small/<run>/checkpoints/last.ckpt --n 512
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from molfff.molecules.elements import ELEMENTS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run folder or checkpoint file")
    p.add_argument("--n", type=int, default=256, help="molecules encoded and sampled")
    p.add_argument("--split", choices=("train", "val", "test"), default="val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--type-temperatures",
        type=float,
        nargs="+",
        default=[],
        metavar="T",
        help="also sample with the type/charge latents scaled by each T (e.g. 1 0.5 0)",
    )
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    if any(not 0 <= t < float("inf") for t in args.type_temperatures):
        p.error("--type-temperatures must be non-negative and finite")
    from torch_geometric.loader import DataLoader

    from molfff.errors import UserError
    from molfff.molecules.flow import MoleculeBatch
    from molfff.train.runs import load_model
    from molfff.train.tasks import build_task

    try:
        config, module, ckpt = load_model(args.run, Path("runs"))
    except UserError as err:
        sys.exit(f"error: {err}")
    if config.data.name != "qm9":
        sys.exit(f"error: {ckpt} is a {config.data.name} model, not a QM9 one")
    flow = module.flow.eval()
    data = build_task(config.data, config.seed).pyg(args.split)[: args.n]
    mol = MoleculeBatch.from_pyg(next(iter(DataLoader(data, batch_size=len(data)))))
    g = torch.Generator().manual_seed(args.seed)
    k = len(ELEMENTS)
    with torch.no_grad():
        x, _, layout = flow.dequantize(mol, g)
        z = flow.flow.encoder(x, None, layout)
        back = flow.flow.decoder(z, None, layout)
        samples = flow.sample(len(data), g)
    types = mol.one_hot.argmax(1)
    print(f"{ckpt}: {len(data)} {args.split} molecules, {len(types)} atoms")
    for name, cols in (("positions", slice(0, 3)), ("types", slice(3, 3 + k))):
        zc = z[:, cols]
        print(
            f"z of the data, {name} columns: mean {zc.mean(0).numpy().round(2)}, "
            f"std {zc.std(0).numpy().round(2)} (a fit: 0 and 1)"
        )
    zc = z[:, 3 + k]
    print(f"z of the data, charge column: mean {zc.mean():.2f}, std {zc.std():.2f}")
    for i, element in enumerate(ELEMENTS):
        rows = types == i
        if rows.any():
            print(
                f"  {element}: mean v {x[rows, 3 : 3 + k].mean(0).numpy().round(2)}, "
                f"mean z {z[rows, 3 : 3 + k].mean(0).numpy().round(2)}"
            )
    right = (back[:, 3 : 3 + k].argmax(1) == types).float().mean()
    print(f"atoms whose type g(f(x)) gives back: {100 * float(right):.1f} %")
    for name, atom_types in (("data", types), ("samples", samples.one_hot.argmax(1))):
        print(f"composition of the {name}: {_composition(atom_types)}")
    for t in args.type_temperatures:
        print(
            f"type/charge latents scaled by T = {t:g}: {_tempered(flow, len(data), t, args.seed)}"
        )


def _composition(types: torch.Tensor) -> str:
    share = torch.bincount(types, minlength=len(ELEMENTS)).float() / max(len(types), 1)
    return ", ".join(f"{e} {100 * float(s):.1f} %" for e, s in zip(ELEMENTS, share, strict=True))


@torch.no_grad()
def tempered_sample(flow, n: int, t: float, generator: torch.Generator):
    """``n`` molecules (a :class:`~molfff.molecules.flow.MoleculeBatch`) decoded from latents
    whose type and charge columns are scaled by ``t``; drawn as :meth:`MoleculeFlow.sample`
    draws them, so ``t = 1`` gives its molecules."""
    z, batch = flow.sample_latent(n, generator)
    z[:, 3:] *= t
    return flow.decode_latent(z, batch, n)


def _tempered(flow, n: int, t: float, seed: int) -> str:
    """Stability and composition of :func:`tempered_sample`'s molecules, in words."""
    from molfff.molecules.metrics import evaluate
    from molfff.molecules.sampling import molecules_of

    mol = tempered_sample(flow, n, t, torch.Generator().manual_seed(seed))
    scores = evaluate(molecules_of(mol), rdkit=False)
    return (
        f"molecule stability {100 * scores['molecule_stability']:.1f} %, "
        f"atom stability {100 * scores['atom_stability']:.1f} %; "
        f"composition {_composition(mol.one_hot.argmax(1))}"
    )


if __name__ == "__main__":
    main()
