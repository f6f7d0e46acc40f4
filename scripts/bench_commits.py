"""Training-step time of configs at two commits, measured in one run (alternating processes).

Refactors must not slow training down. For each config this script checks out both commits into
temporary git worktrees (sharing this repository's ``data/`` caches and ``../shared``), then runs
one child process per commit and round, alternating, so machine noise hits both alike. A child
builds the config's module and data through ``molfff.train.runner.build`` (an API both commits
have), takes one training batch and times ``--steps`` optimizer steps (surrogate loss, backward,
Adam) after one warm-up step. Printed: median seconds per step over the rounds and the ratio
new / old.

    python scripts/bench_commits.py OLD NEW [--configs qm9 dw4] [--rounds 3] [--steps 3] \\
        [--set qm9:data.batch_size=32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from molfff.train.config import load_config
from molfff.train.runner import build
name, steps, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
config = load_config(name, overrides)
module, dm, _ = build(config)
dm.setup("fit")
batch = next(iter(dm.train_dataloader()))
opt = torch.optim.Adam(module.parameters(), lr=1e-4)
def step(i):
    opt.zero_grad(set_to_none=True)
    module.training_step(batch, i).backward()
    opt.step()
step(0)
t0 = time.perf_counter()
for i in range(steps):
    step(i + 1)
print((time.perf_counter() - t0) / steps)
"""


def worktree(rev: str, root: Path) -> Path:
    path = root / rev.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), rev], check=True
    )
    if (REPO / "data").is_dir():  # processed data caches (e.g. data/qm9), not in git
        for item in (REPO / "data").iterdir():
            if item.is_dir() and not (path / "data" / item.name).exists():
                (path / "data" / item.name).symlink_to(item)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--configs", nargs="+", default=["qm9", "dw4"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CONFIG:KEY=VALUE",
        help="an override for one config, e.g. qm9:data.batch_size=32",
    )
    args = p.parse_args(argv)
    overrides: dict[str, list[str]] = {c: ["logger.wandb=disabled"] for c in args.configs}
    for item in args.set:
        name, _, kv = item.partition(":")
        if name not in overrides or "=" not in kv:
            p.error(f"--set {item}: expected CONFIG:KEY=VALUE with CONFIG in --configs")
        overrides[name].append(kv)
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        if (REPO.parent / "shared").is_dir():  # reference data beside the repository
            (Path(tmp) / "shared").symlink_to(REPO.parent / "shared")
        trees = {rev: worktree(rev, Path(tmp)) for rev in (args.old, args.new)}
        try:
            print(f"{'config':8} {'old s/step':>11} {'new s/step':>11} {'new/old':>8}  overrides")
            for name in args.configs:
                times: dict[str, list[float]] = {rev: [] for rev in trees}
                for _ in range(args.rounds):
                    for rev, tree in trees.items():
                        out = subprocess.run(
                            [sys.executable, "-c", CHILD, name, str(args.steps), *overrides[name]],
                            cwd=tree,
                            env={**os.environ, "PYTHONPATH": str(tree)},
                            capture_output=True,
                            text=True,
                        )
                        if out.returncode:
                            print(out.stderr[-3000:], file=sys.stderr)
                            return 1
                        times[rev].append(float(out.stdout.strip().splitlines()[-1]))
                old, new = (statistics.median(times[r]) for r in (args.old, args.new))
                given = " ".join(overrides[name])
                print(f"{name:8} {old:11.3f} {new:11.3f} {new / old:8.2f}  {given}")
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                    check=False,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
