"""One command for a GPU user: device tests, a timed QM9 training run, 1000 samples scored.

    python scripts/gpu_qm9.py                       # CUDA: tests, 10 minutes of qm9, samples
    python scripts/gpu_qm9.py --minutes 30 --set model.ema_decay=0.999
    python scripts/gpu_qm9.py --device cpu --minutes 0.2 --fast   # a dry run without a GPU

Prints steps/s, molecules/s, peak GPU memory (``torch.cuda.max_memory_allocated``), the
validation NLL curve (per validation, from the run's CSV logs: ``val/nll_given_n_exact`` and
``val/nll_given_n_estimate`` without ``-log p(n)``, one of them the best-checkpoint metric,
``val/nll_exact`` with it, the share of converged Newton solves ``val/exact_converged``) and the
metrics of ``--samples`` sampled molecules. Refuses to run without CUDA unless ``--device cpu`` is
given.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Throughput(Callback):
    """Training steps and molecules seen, and the wall time they took (device synchronised)."""

    def __init__(self):
        self.steps = self.molecules = 0
        self.start = self.seconds = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1
        self.molecules += int(batch.num_graphs)

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - (self.start or time.perf_counter())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _duration(minutes: float) -> str:
    """``DD:HH:MM:SS`` for Lightning's max_time (at least one second)."""
    s = max(1, round(minutes * 60))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--minutes", type=float, default=10.0, help="training time (trainer.max_time)")
    p.add_argument("--samples", type=int, default=1000, help="molecules to sample and score")
    p.add_argument("--fast", action="store_true", help="the qm9 config's small `fast` preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides")
    p.add_argument("--skip-tests", action="store_true", help="skip the device tests")
    p.add_argument("--root", default="runs/gpu_qm9", help="where the run folder goes")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.samples <= 0:
        p.error("--minutes and --samples must be positive")
    device = torch.device(args.device)  # raises for nonsense names
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available here; pass --device cpu for a (slow) CPU run")
    if device.type not in ("cuda", "cpu"):
        p.error(f"--device must be cuda[:N] or cpu, got {args.device}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if not args.skip_tests:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "device", "--device", str(device),
               str(ROOT / "tests")]  # fmt: skip
        print("device tests:", " ".join(cmd), flush=True)
        if subprocess.call(cmd, cwd=ROOT) != 0:
            print("device tests failed", file=sys.stderr)
            return 1
    from molfff.molecules.metrics import evaluate
    from molfff.molecules.sampling import sample_molecules
    from molfff.train.config import load_config
    from molfff.train.curves import read_curves
    from molfff.train.runner import train

    index = device.index if device.index is not None else 0
    overrides = [
        "logger.wandb=disabled",
        f"run.root={args.root}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.devices={[index] if device.type == 'cuda' else 1}",
        f"trainer.max_time={_duration(args.minutes)}",
        "trainer.max_epochs=100000",
        "evaluation.samples=0",
        *args.set,
    ]
    config = load_config("qm9", overrides, fast=args.fast)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter = Throughput()
    result = train(config, callbacks=[meter], progress=False)
    seconds = meter.seconds or float("nan")
    print(f"run folder: {result.run_dir}")
    print(f"steps: {meter.steps} in {seconds:.1f} s: {meter.steps / seconds:.2f} steps/s, "
          f"{meter.molecules / seconds:.1f} molecules/s")  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    curves = read_curves(result.run_dir)
    column = {
        key: dict(curves.get(key, []))
        for key in ("val/nll_given_n_estimate", "val/nll_exact", "val/exact_converged")
    }
    outside = dict(curves.get("val/n_size_outside_support", []))
    print(
        "validation NLL curve, nats per molecule (step; without -log p(n): exact, paper "
        "estimate; exact with -log p(n) over the molecules p(n) supports; % Newton solves "
        f"converged; molecules left out); best.ckpt by val/nll_given_n_{config.trainer.select_on}:"
    )
    nan = float("nan")
    for step, exact in curves.get("val/nll_given_n_exact", []):
        estimate, full, converged = (column[k].get(step, nan) for k in column)
        print(
            f"  {step:>8} {exact:10.3f} {estimate:10.3f} {full:10.3f} {100 * converged:6.1f} "
            f"{int(outside.get(step, 0)):6d}"
        )
    from molfff.train.runs import load_model

    _, module, ckpt = load_model(result.run_dir)
    module = module.to(device)
    molecules, sample_s = sample_molecules(module.flow, args.samples, seed=0)
    print(f"{args.samples} molecules from {ckpt} in {sample_s:.1f} s:")
    for key, value in evaluate(molecules).items():
        print(f"  {key:<20} {value:.4f}" if isinstance(value, float) else f"  {key:<20} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
