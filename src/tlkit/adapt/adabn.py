"""AdaBN (Li et al., 2016): the BatchNorm layers' running statistics re-estimated on target
data, with no training: the normalisation then matches the target's inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tlkit.tensors import to_device
from tlkit.plan.length import batch_bounds


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer (AdaBN has something to re-estimate)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def adabn(backbone: nn.Module, data: Sequence[Any], collate: Callable[[list[Any]], Any],
          device: torch.device, batch_size: int = 64) -> int:
    """Recompute every BatchNorm's running mean and variance over ``data`` (a cumulative
    average over all its batches); returns how many BatchNorm layers were updated. A last batch
    of one example joins the one before: alone it has no batch statistics."""
    bns = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was = backbone.training
    backbone.eval()
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    try:
        for start, end in batch_bounds(len(data), batch_size, 2):
            inputs, _ = collate([data[i] for i in range(start, end)])
            backbone(to_device(inputs, device))
    finally:
        for m, (mom, tr) in zip(bns, saved):
            m.momentum = mom
            m.train(tr)
        backbone.train(was)
    return len(bns)
