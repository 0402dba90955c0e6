"""Which examples go in which batch: pure functions of (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tlkit.plan.length import batch_bounds


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training samples in an epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def weighted_order(weights: Sequence[float], seed: int, epoch: int) -> list[int]:
    """``len(weights)`` samples drawn with replacement, each index with probability
    proportional to its weight (the balanced sampler): a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch + 15_485_863)
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    return torch.multinomial(w, len(w), replacement=True, generator=g).tolist()


def batches_of(order: Sequence[int], batch_size: int, smallest: int = 1) -> list[list[int]]:
    return [list(order[a:b]) for a, b in batch_bounds(len(order), batch_size, smallest)]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  lengths: Sequence[int] | None = None, pool: int = 50,
                  weights: Sequence[float] | None = None, smallest: int = 1) -> list[list[int]]:
    """The batches of an epoch, a pure function of (seed, epoch). With ``lengths`` (texts), the
    shuffled order is cut into pools of ``pool`` batches, each pool sorted by length before it
    is cut into batches, and the batches shuffled: per-batch padding then pads little. With
    ``weights`` the examples are drawn with replacement in proportion to them. A last batch of
    fewer than ``smallest`` examples joins the one before (``tlkit.plan.length``: 2 where
    BatchNorm layers train on the batch's statistics, which one example cannot give)."""
    order = epoch_order(n, seed, epoch) if weights is None else weighted_order(weights, seed, epoch)
    if lengths is None:
        return batches_of(order, batch_size, smallest)
    size = pool * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, size):
        chunk = sorted(order[start:start + size], key=lambda i: lengths[i])
        batches.extend(batches_of(chunk, batch_size))
    if len(batches) > 1 and len(batches[-1]) < smallest:  # the last pool's last batch
        batches[-2:] = [batches[-2] + batches[-1]]
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch + 7_919)
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def target_indices(n: int, batch_size: int, seed: int, epoch: int, b: int) -> list[int]:
    """The examples of a second split (adaptation's target) paired with batch ``b`` of an
    epoch: a pure function of (seed, epoch, b), cycling through a shuffled order of the split."""
    order = epoch_order(n, seed + 104_729, epoch)
    return [order[(b * batch_size + j) % n] for j in range(batch_size)]
