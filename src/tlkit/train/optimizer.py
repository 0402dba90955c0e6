"""AdamW from the plan: every group at its planned rate from the start (or a hook's own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tlkit.backbones.base import LayerGroup
from tlkit.config import LoopSettings
from tlkit.model import TransferModel
from tlkit.plan import Phase, Plan
from tlkit.plan.apply import optimizer_groups
from tlkit.train.hooks import with_method


def make_optimizer(model: TransferModel, groups: list[LayerGroup], plan: Plan,
                   hooks: Sequence[Any], settings: LoopSettings) -> torch.optim.Optimizer:
    """Every group is in the optimizer from the start; frozen ones have no gradient and AdamW
    skips them, so a phase change only flips requires_grad and the moments carry over. A hook's
    own parameters (DANN's domain classifier) train at the head's rate and weight decay. A
    hook with an optimizer of its own (continued pretraining's objective) brings it instead."""
    own = with_method(hooks, "optimizer")
    if own:
        optimizer: torch.optim.Optimizer = own[0].optimizer()
        return optimizer
    pg = optimizer_groups(model, groups, plan.phases[-1])
    for h in with_method(hooks, "parameters"):
        params = list(h.parameters())
        if params:
            pg.append({"params": params, "lr": settings.head_lr,
                       "initial_lr": settings.head_lr, "weight_decay": settings.weight_decay,
                       "group": h.name})
    # the fused kernel (one op for all tensors) on CPU and CUDA, as Trainer uses by default
    return torch.optim.AdamW(pg, fused=True)


def set_phase_rates(optimizer: torch.optim.Optimizer, phase: Phase) -> None:
    """Each group's planned rate in this phase (the schedule multiplies it at every step)."""
    rates = {r.name: r.lr for r in phase.rows}
    for g in optimizer.param_groups:
        if g.get("group") in rates:
            g["initial_lr"] = rates[g["group"]]
