"""Pooled features of a data set at the output of each layer group, in one pass.

The diagnostics (probes, divergence, forgetting, transferability) all look at what a backbone
computes: the top group's pooled output (the features a head sees) and, where the backbone can
be cut between groups, each lower group's output pooled the same way (mean over the spatial
positions of a feature map, over the real tokens of a text). This module only computes; the
commands decide what to measure with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tlkit.backbones.base import Backbone
from tlkit.data.types import Examples
from tlkit.device import autocast
from tlkit.tensors import to_device


def pool(state: Any) -> torch.Tensor:
    """A cut's activations pooled to one vector per example."""
    if isinstance(state, dict):  # text: hidden states and the attention mask
        hidden, mask = state["hidden"], state["attention_mask"]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if state.ndim == 4:  # a feature map (N, C, H, W)
        return state.mean(dim=(2, 3))
    if state.ndim == 3:  # tokens (N, T, C)
        return state.mean(dim=1)
    return state.flatten(1)


def cuttable_groups(backbone: Backbone, n_groups: int) -> list[int]:
    """The cuts (1 = after the lowest group, ``n_groups`` = the pooled output) at which this
    backbone's features can be read: every group where it can be cut, else only the top."""
    if not backbone.can_cut():
        return [n_groups]
    bounds = backbone._bounds or []
    cuts = [k for k in range(1, n_groups) if bounds[k] > bounds[k - 1]]
    return [*cuts, n_groups]


@torch.inference_mode()
def layer_features(
    backbone: Backbone,
    data: Examples,
    collate: Callable[[list[Any]], tuple[Any, torch.Tensor]],
    n_groups: int,
    cuts: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    mixed_precision: bool = False,
    indices: Sequence[int] | np.ndarray | None = None,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Pooled features at each cut in ``cuts`` (default: every group where the backbone can be
    cut, and the top) for the examples of ``data`` (or ``indices`` of it), with their targets.
    One forward pass: the lower cuts are read on the way to the top."""
    device = torch.device(device)
    wanted = sorted(set(cuts if cuts is not None else cuttable_groups(backbone, n_groups)))
    if any(c < n_groups for c in wanted) and not backbone.can_cut():
        raise ValueError("this backbone cannot be cut between its groups")
    bounds = backbone._bounds if backbone.can_cut() else None
    n_units = len(backbone.units() or []) if bounds is not None else 0
    # unit index after which each lower cut is read
    at_unit: dict[int, list[int]] = {}
    for c in wanted:
        if c < n_groups:
            at_unit.setdefault(bounds[c] - 1, []).append(c)  # type: ignore[index]
    order = list(indices) if indices is not None else list(range(len(data)))
    feats: dict[int, list[torch.Tensor]] = {c: [] for c in wanted}
    targets: list[torch.Tensor] = []
    was_training = backbone.training
    backbone.eval()
    amp = autocast(device, mixed_precision)
    try:
        for start in range(0, len(order), batch_size):
            inputs, y = collate([data[i] for i in order[start:start + batch_size]])
            inputs = to_device(inputs, device)
            with amp:
                if bounds is None or not at_unit:
                    feats[n_groups].append(backbone(inputs).float().cpu())
                else:
                    state = backbone.begin(inputs)
                    for u in range(n_units):
                        state = backbone.run_unit(u, state)
                        for c in at_unit.get(u, []):
                            feats[c].append(pool(backbone.export_state(state)).float().cpu())
                    if n_groups in feats:
                        feats[n_groups].append(backbone.end(state).float().cpu())
            targets.append(torch.as_tensor(y).cpu())
    finally:
        backbone.train(was_training)
    out = {c: torch.cat(v).numpy() for c, v in feats.items() if v}
    return out, torch.cat(targets).numpy() if targets else np.zeros(0)


def group_names(groups: Sequence[Any], cuts: Sequence[int]) -> dict[int, str]:
    """A cut's name: the group whose output it is."""
    return {c: groups[c - 1].name for c in cuts}
