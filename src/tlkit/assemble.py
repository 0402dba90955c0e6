"""From a validated config to a model and its plan: backbone, layer groups, head, phases."""

from __future__ import annotations

from dataclasses import dataclass

from tlkit.backbones import Backbone, LayerGroup, load_backbone
from tlkit.backbones.groups import groups_from_patterns
from tlkit.config import TransferConfig
from tlkit.errors import UserError
from tlkit.heads import build_head
from tlkit.model import TransferModel
from tlkit.plan import Plan, build_plan
from tlkit.plan.apply import group_sizes, head_size


@dataclass
class Assembled:
    model: TransferModel
    groups: list[LayerGroup]
    plan: Plan


def layer_groups_for(backbone: Backbone, tc: TransferConfig) -> list[LayerGroup]:
    if tc.layer_groups:
        names = [n for n, _ in backbone.named_parameters()]
        return groups_from_patterns(names, [(g.name, g.pattern) for g in tc.layer_groups])
    return backbone.layer_groups()


def make_plan(tc: TransferConfig, backbone: Backbone, groups: list[LayerGroup],
              head_sizes) -> Plan:  # type: ignore[no-untyped-def]
    return build_plan(
        tc.source_model, group_sizes(backbone, groups), head_sizes, tc.freeze_strategy,
        tc.epochs, tc.head_lr, tc.backbone_lr, tc.lr_decay_per_layer, tc.weight_decay,
        tc.top_n, [(s.epoch, s.unfreeze) for s in tc.unfreeze_schedule],
    )


def assemble(tc: TransferConfig, num_outputs: int, modality: str | None = None,
             max_length: int | None = None, backbone: Backbone | None = None) -> Assembled:
    if backbone is None:
        backbone = load_backbone(tc.source_model, tc.pretrained_weights, tc.pooling, max_length)
    if modality is not None and backbone.kind != modality:
        raise UserError(
            f"{tc.source_model} is a {backbone.kind} backbone but the data is {modality}; "
            f"choose a {modality} backbone (see `tlkit backbones`) or other data"
        )
    groups = layer_groups_for(backbone, tc)
    head = build_head(backbone.feature_dim, num_outputs, tc.head.type, tc.head.hidden_size,
                      tc.dropout)
    model = TransferModel(backbone, head)
    plan = make_plan(tc, backbone, groups, head_size(head))
    return Assembled(model, groups, plan)
