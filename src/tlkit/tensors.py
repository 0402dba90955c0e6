"""Moving a batch (a tensor, or a dict of tensors for text) to a device: one helper for the
loop, the cache, the diagnostics and adaptation."""

from __future__ import annotations

from typing import Any

import torch


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x
