"""Where a plan touches a model: requires_grad, frozen BatchNorm statistics, optimizer groups.

The optimizer holds every group from the start, at its planned rate; a frozen group simply has no
gradient, so AdamW leaves it alone. Switching phase flips requires_grad and nothing is rebuilt.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from tlkit.backbones.base import Backbone, LayerGroup
from tlkit.backbones.lora import is_adapter_param
from tlkit.model import TransferModel, frozen_submodules
from tlkit.plan.table import HEAD, GroupRow, GroupSize, Phase, Plan


def _no_decay(name: str, p: nn.Parameter, extra: set[str]) -> bool:
    # biases, norm weights, scalars and listed tokens / embeddings of position
    return p.ndim <= 1 or name in extra


def group_sizes(backbone: Backbone, groups: list[LayerGroup]) -> list[GroupSize]:
    params = dict(backbone.named_parameters())
    extra = backbone.no_weight_decay_names()
    out = []
    for g in groups:
        n = sum(params[q].numel() for q in g.param_names)
        nd = sum(params[q].numel() for q in g.param_names if not _no_decay(q, params[q], extra))
        na = sum(params[q].numel() for q in g.param_names if is_adapter_param(q))
        out.append(GroupSize(g.name, n, nd, na))
    return out


def head_size(head: nn.Module) -> GroupSize:
    n = sum(p.numel() for p in head.parameters())
    nd = sum(p.numel() for name, p in head.named_parameters() if not _no_decay(name, p, set()))
    return GroupSize(HEAD, n, nd)


NormStats = Literal["frozen", "all", "none"]


def norm_stats_mode(setting: bool | str, plan: Plan) -> NormStats:
    """Which BatchNorm layers keep their pretrained running statistics while training, from
    ``freeze_norm_stats``: true, those of frozen groups (``frozen``); ``all``, every one (Keras's
    advice for fine-tuning); false, none (the fastai / Lightning default). ``auto``: ``all``
    when the plan trains the head alone before it unfreezes groups (gradual, lp_ft), else
    ``frozen``. That head was fitted to features normalised by the pretrained statistics;
    batch statistics at the unfreezing hand it other features: on examples/fashion_mnist.yaml
    (MobileNetV2, gradual) the first training batch after the first unfreezing had a loss of
    1.07 against 0.29 with the statistics kept, and the test accuracy went 0.859 -> 0.870."""
    if setting == "all":
        return "all"
    if setting == "auto":
        first = plan.phases[0].rows[:-1]
        later = any(r.trainable for ph in plan.phases[1:] for r in ph.rows[:-1])
        return "all" if not any(r.trainable for r in first) and later else "frozen"
    return "frozen" if setting else "none"


def apply_phase(
    model: TransferModel, groups: list[LayerGroup], phase: Phase, norm_stats: NormStats = "frozen"
) -> None:
    """Set requires_grad from the phase; frozen groups stay in eval mode (BatchNorm statistics
    fixed, dropout off), and with ``norm_stats`` ``all`` every BatchNorm keeps its statistics
    (``none``: every statistic moves, frozen groups' too; ``norm_stats_mode``)."""
    rows = {r.name: r for r in phase.rows}
    params = dict(model.backbone.named_parameters())
    frozen_names: set[str] = set()
    for g in groups:
        row = rows[g.name]
        for q in g.param_names:
            on = _trains(row, q)
            params[q].requires_grad_(on)
            if not on:
                frozen_names.add(q)
    for p in model.head.parameters():
        p.requires_grad_(True)
    frozen = frozen_submodules(model.backbone, frozen_names) if norm_stats != "none" else []
    if norm_stats == "all":
        frozen += [m for m in model.backbone.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.set_frozen_norm_modules(frozen)


def _trains(row: GroupRow, name: str) -> bool:
    """Whether parameter ``name`` of the group of ``row`` trains: with adapters_only (LoRA) the
    adapter matrices train, the pretrained weights do not."""
    return row.trainable and (not row.adapters_only or is_adapter_param(name))


def batchnorm_trains(model: TransferModel, groups: list[LayerGroup], plan: Plan,
                     freeze_norm_stats: bool | str) -> bool:
    """Whether a phase's training batches pass a BatchNorm layer in training mode, as
    ``apply_phase`` sets them: one that normalises by the batch's own statistics, which a
    batch of one example cannot give (``tlkit.plan.length`` then lets no batch hold one). That
    is a BatchNorm layer in a group the phase trains, unless every statistic is kept
    (``norm_stats_mode`` ``all``). Under ``none`` the frozen groups' BatchNorm layers move too,
    but they lie below the phase's cut, which the activation cache serves: not counted."""
    if norm_stats_mode(freeze_norm_stats, plan) == "all":
        return False
    norms = [m for m in model.backbone.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for phase in plan.phases:
        if not norms or not phase.rows:
            continue
        rows = {r.name: r for r in phase.rows}
        frozen = {q for g in groups for q in g.param_names if not _trains(rows[g.name], q)}
        held = {id(m) for f in frozen_submodules(model.backbone, frozen) for m in f.modules()}
        if any(id(m) not in held for m in norms):
            return True
    return False


def optimizer_groups(
    model: TransferModel, groups: list[LayerGroup], phase: Phase
) -> list[dict[str, Any]]:
    """Param groups for AdamW: per layer group, one with weight decay and one without. Each
    carries its layer group's name so schedules and logs can address it."""
    rows = {r.name: r for r in phase.rows}
    params = dict(model.backbone.named_parameters())
    extra = model.backbone.no_weight_decay_names()
    out: list[dict[str, Any]] = []

    def add(name: str, named: list[tuple[str, nn.Parameter]]) -> None:
        r = rows[name]
        decay = [p for n, p in named if not _no_decay(n, p, extra)]
        nodecay = [p for n, p in named if _no_decay(n, p, extra)]
        if decay:
            out.append({"params": decay, "lr": r.lr, "initial_lr": r.lr,
                        "weight_decay": r.weight_decay, "group": name})
        if nodecay:
            out.append({"params": nodecay, "lr": r.lr, "initial_lr": r.lr,
                        "weight_decay": 0.0, "group": name})

    for g in groups:
        add(g.name, [(q, params[q]) for q in g.param_names])
    add(HEAD, list(model.head.named_parameters()))
    return out
