"""A backbone with its new task head; keeps frozen groups' normalisation statistics frozen."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlkit.backbones.base import Backbone


class TransferModel(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        # Modules wholly inside frozen groups: they stay in eval mode (BatchNorm statistics
        # fixed, no dropout), so a frozen layer is one fixed function, the same every epoch.
        self._frozen_stat_modules: list[nn.Module] = []

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.backbone(inputs))

    def forward_from_cut(self, activations: Any, cut: int) -> torch.Tensor:
        """The output from cached activations at the input of group ``cut + 1`` (or from
        pooled features when every group is below the cut)."""
        return self.head(self.backbone.forward_from(activations, cut))

    def set_frozen_norm_modules(self, modules: list[nn.Module]) -> None:
        self._frozen_stat_modules = list(modules)
        if self.training:
            self.train(True)

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if mode:
            # A frozen layer is a fixed function: its BatchNorm keeps the pretrained running
            # statistics (fastai and Lightning default to updating them, which drifts the body)
            # and its dropout is off, so its output can be computed once and cached.
            for m in self._frozen_stat_modules:
                m.eval()
        return self


def frozen_submodules(module: nn.Module, frozen_names: set[str]) -> list[nn.Module]:
    """The largest submodules whose parameters are all in ``frozen_names`` (and that have
    some), plus BatchNorm layers without parameters whose parent's parameters are frozen."""
    out: list[nn.Module] = []
    taken: list[str] = []
    for mname, m in module.named_modules():
        if mname == "" or any(mname.startswith(t + ".") for t in taken):
            continue
        names = [f"{mname}.{p}" for p, _ in m.named_parameters()]
        if names and all(n in frozen_names for n in names):
            out.append(m)
            taken.append(mname)
    for m in batchnorm_modules_of(module, frozen_names):
        if all(m is not o for o in out):
            out.append(m)
    return out


def batchnorm_modules_of(module: nn.Module, param_names: set[str]) -> list[nn.Module]:
    """The BatchNorm modules that belong to a set of parameter names: a module belongs where its
    own parameters are, or, for one without parameters (affine=False), where its parent's are."""
    out: list[nn.Module] = []
    for mname, m in module.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        own = [f"{mname}.{p}" for p, _ in m.named_parameters(recurse=False)]
        if own:
            if all(p in param_names for p in own):
                out.append(m)
            continue
        parts = mname.split(".")
        while parts:
            parts.pop()
            prefix = ".".join(parts) + "." if parts else ""
            found = [p for p in param_names if p.startswith(prefix)]
            if found:
                out.append(m)
                break
    return out
