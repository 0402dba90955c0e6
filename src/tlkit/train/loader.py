"""Training batches decoded and collated (images decoded and augmented, texts tokenized) in
``torch.utils.data.DataLoader`` worker processes (``data.workers``), in the loop's order.

Each batch is a pure function of (seed, epoch, batch): its examples are the ones
``tlkit.train.batches`` lists, and any random augmentation draws from a generator seeded from
(seed, epoch, batch) inside whichever process builds it, never from the global one. So workers
change nothing but speed, and a run resumed mid-epoch rebuilds exactly the batches it had left,
whatever the number of workers (each batch is fetched by its number, from the resume point on).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def default_workers(cpus: int | None = None) -> int:
    """``data.workers: auto``: none on a machine of two cores or fewer (the model's own threads
    need them), else half the cores, at most 4."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return 0 if n <= 2 else min(4, n // 2)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 10_007 + int(batch) * 7 + 49_979) % (2**63)


class BatchSource(Dataset[tuple[Any, torch.Tensor]]):
    """Batch ``b``: the collated examples ``batches[b]`` of ``data``."""

    def __init__(self, data: Any, collate: Any, batches: Sequence[Sequence[int]], seed: int,
                 epoch: int) -> None:
        self.data, self.collate, self.batches = data, collate, batches
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[Any, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, self.epoch, b))
            return self.collate([self.data[i] for i in self.batches[b]])


def batch_stream(data: Any, collate: Any, batches: Sequence[Sequence[int]], start: int,
                 seed: int, epoch: int, workers: int) -> Iterator[tuple[Any, torch.Tensor]]:
    """Batches ``start``, ``start + 1``, ... in order, built here (``workers`` 0) or by worker
    processes that prefetch ahead of the loop."""
    source = BatchSource(data, collate, batches, seed, epoch)
    if workers <= 0:
        return (source[b] for b in range(start, len(batches)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers in forked workers
    # the loader seeds its workers from its own generator, not the global one (whose stream
    # the model's dropout draws from: a loader that drew from it would shift every mask)
    loader = DataLoader(source, batch_size=None, sampler=range(start, len(batches)),
                        num_workers=workers, prefetch_factor=2, persistent_workers=False,
                        generator=torch.Generator().manual_seed(batch_seed(seed, epoch, -1)))
    return iter(loader)
