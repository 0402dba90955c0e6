"""Discriminative learning rates (ULMFiT): lower groups learn more slowly than upper ones."""

from __future__ import annotations


def discriminative_lrs(n_groups: int, backbone_lr: float, decay: float) -> list[float]:
    """eta_l = backbone_lr * decay ** (L - l) for l = 1 (lowest group) .. L (top group)."""
    return [backbone_lr * decay ** (n_groups - l) for l in range(1, n_groups + 1)]
