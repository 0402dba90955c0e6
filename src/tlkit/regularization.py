"""Regularizers toward the source model, added to the training loss.

L2-SP (Li, Grandvalet and Davoine, 2018, "Explicit inductive bias for transfer learning with
convolutional networks"): ``lambda * ||theta - theta_source||^2`` over the pretrained backbone's
parameters, so fine-tuning stays near the solution transfer started from. The new head has no
source to return to and is left to ordinary weight decay. The plan drops the backbone's weight
decay when L2-SP is on: decay toward zero would pull against decay toward the source.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tlkit.backbones.lora import is_adapter_param


def l2sp_penalty(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], lam: float) -> torch.Tensor:
    """``lam * sum ||p - p0||^2`` over (parameter, source value) pairs: a pure function, zero
    at the source, quadratic in the distance from it."""
    total: torch.Tensor | None = None
    for p, p0 in pairs:
        d = (p - p0).pow(2).sum()
        total = d if total is None else total + d
    if total is None:
        return torch.zeros(())
    return lam * total


class _SquaredDistance(torch.autograd.Function):
    """``sum ||p - p0||^2`` over tensors, differentiable in ``p``. The same value and gradient
    as ``l2sp_penalty``'s autograd, but it writes ``p - p0`` into one persistent scratch tensor
    per parameter instead of allocating autograd's temporaries every step: on a CPU those fresh
    allocations (tens of MB per tensor, page faults and all), not the arithmetic, cost the most."""

    @staticmethod
    def forward(ctx, sources, scratch, *params):
        total = torch.zeros((), dtype=torch.float32, device=params[0].device)
        for p, p0, d in zip(params, sources, scratch, strict=True):
            torch.sub(p.detach(), p0, out=d)
            flat = d.view(-1)
            total += torch.dot(flat, flat)
        ctx.scratch = scratch
        return total

    @staticmethod
    def backward(ctx, grad):
        # d/dp ||p - p0||^2 = 2 (p - p0); the scratch still holds p - p0 (nothing stepped
        # in between) and is overwritten by the next forward, so it can carry the gradient.
        scratch = ctx.scratch
        ctx.scratch = None
        return (None, None, *(d.mul_(2 * grad) for d in scratch))


class L2SP:
    """The L2-SP penalty of a ``TransferModel``: a hook of ``train.loop.fit`` that adds its
    ``extra_loss`` to the task loss (the same on every process: ``shared``).

    Built from the backbone as it is at construction: build it right after the pretrained model
    is assembled and before any checkpoint is loaded into it, so that a resumed run pulls toward
    the pretrained weights and not toward where the interrupted run had got to. LoRA matrices
    are not pretrained and have no source value; they are left out.

    Only parameters that train contribute: a frozen one never leaves its source value, so its
    term is zero, and skipping it saves the work (this holds across gradual unfreezing, where
    a group starts moving from the source when it unfreezes).
    """

    def __init__(self, backbone: nn.Module, lam: float) -> None:
        if lam < 0:
            raise ValueError("the L2-SP strength must be non-negative")
        self.lam = float(lam)
        self.source: dict[str, torch.Tensor] = {
            n: p.detach().clone() for n, p in backbone.named_parameters()
            if not is_adapter_param(n)
        }
        self._scratch: dict[str, torch.Tensor] = {}

    name = "l2sp"
    loss_name = "train_penalty"  # the column of metrics.jsonl
    shared = True

    def extra_loss(self, model: nn.Module) -> torch.Tensor:
        return self(model)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """``lam * ||theta - theta_source||^2`` over the backbone's trainable pretrained
        parameters, as a scalar the loss can add (zero, without a graph, when none trains)."""
        backbone = getattr(model, "backbone", model)
        params, sources, scratch = [], [], []
        for n, p in backbone.named_parameters():
            if not p.requires_grad or n not in self.source:
                continue
            p0 = self.source[n]
            if p0.device != p.device:  # the model moved after the snapshot (to a GPU)
                p0 = self.source[n] = p0.to(p.device)
                self._scratch.pop(n, None)
            d = self._scratch.get(n)
            if d is None:
                d = self._scratch[n] = torch.empty_like(p0, memory_format=torch.contiguous_format)
            params.append(p)
            sources.append(p0)
            scratch.append(d)
        if not params:
            return torch.zeros((), device=next(backbone.parameters()).device)
        return self.lam * _SquaredDistance.apply(sources, scratch, *params)

    def distance(self, model: nn.Module) -> float:
        """||theta - theta_source||^2 over every pretrained backbone parameter, trainable or not
        (for reports and tests)."""
        backbone = getattr(model, "backbone", model)
        with torch.no_grad():
            named = dict(backbone.named_parameters())
            return float(l2sp_penalty(
                ((named[n], p0.to(named[n].device)) for n, p0 in self.source.items()), 1.0))
