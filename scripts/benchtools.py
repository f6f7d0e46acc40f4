"""Timing helpers shared by the benchmark scripts (interleaved rounds, medians, CUDA sync)."""

from __future__ import annotations

import os
import statistics
import time

import torch


def malloc_note(device: torch.device) -> str:
    if device.type != "cpu":
        return ""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return f"MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}"
    return "glibc default malloc thresholds (large batches pay page faults; see the docstring)"


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def interleaved(
    fns: dict,
    device: torch.device,
    repeats: int,
    budget: float,
    warmup: int = 2,
    min_rounds: int = 3,
) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin.

    The number of rounds is ``repeats``, lowered (to at least ``min_rounds``) so that the rounds
    fit in about ``budget`` seconds judging by the last warm-up round.
    """
    for _ in range(warmup):
        last = sum(timed(fn, device) for fn in fns.values())
    rounds = max(min_rounds, min(repeats, int(budget / max(last, 1e-9))))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}
