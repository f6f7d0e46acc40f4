"""DataModule for in-memory arrays: dense ``(B, D)`` data with optional conditioning ``(B, C)``."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from molfff.dense.splits import Split


class EpochShuffleSampler(Sampler[int]):
    """Random order that depends only on (seed, epoch), so resumed runs see the same batches.

    Lightning calls :meth:`set_epoch` at the start of every epoch (and wraps this sampler in a
    distributed one under DDP).
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class ArrayDataModule(L.LightningDataModule):
    """Train/validation/test splits held in memory.

    Args:
        splits: ``{"train": Split, "val": Split, "test": Split}``.
        batch_size: training batch size (the last incomplete batch is dropped).
        eval_batch_size: batch size for validation and test (exact NLL).
        seed: shuffling seed.
    """

    def __init__(
        self,
        splits: dict[str, Split],
        batch_size: int,
        eval_batch_size: int = 1024,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        missing = {"train", "val", "test"} - set(splits)
        if missing:
            raise ValueError(f"missing splits: {sorted(missing)}")
        self.splits = splits
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers

    @property
    def dim(self) -> int:
        return self.splits["train"].x.shape[1]

    @property
    def cond_dim(self) -> int:
        c = self.splits["train"].c
        return 0 if c is None else c.shape[1]

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(*self.splits["train"].tensors())
        batch = min(self.batch_size, len(data))
        return DataLoader(
            data,
            batch_size=batch,
            sampler=EpochShuffleSampler(len(data), self.seed),
            drop_last=True,
            num_workers=self.num_workers,
        )

    def _eval(self, name: str) -> DataLoader:
        data = TensorDataset(*self.splits[name].tensors())
        return DataLoader(data, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")
