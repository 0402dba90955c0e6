"""Learning-rate schedules as pure functions of training progress (the optimizer step)."""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, kind: str = "cosine") -> float:
    """Multiplier of each group's planned rate at optimizer step ``step`` (0-based): a linear
    warmup from 0 over ``warmup_steps``, then cosine or linear decay to 0 at ``total_steps``,
    or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def rewarm_factor(step: int, unfrozen_at: int, warmup_steps: int) -> float:
    """Multiplier of the rate of a group that first trains at optimizer step ``unfrozen_at``
    (0-based) after the run's start: a linear warmup of its own over ``warmup_steps`` (the loop
    applies it where BatchNorm statistics stay fixed in unfrozen layers, ``freeze_norm_stats``)."""
    if unfrozen_at <= 0 or warmup_steps <= 0:
        return 1.0
    return min(1.0, max(0, step - unfrozen_at + 1) / warmup_steps)
