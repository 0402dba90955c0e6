"""From a validated config to a model and its plan: backbone, layer groups, head, phases."""

from __future__ import annotations

from dataclasses import dataclass

from tlkit.backbones import Backbone, LayerGroup, load_backbone
from tlkit.backbones.groups import groups_from_patterns
from tlkit.config import TransferConfig, lora_of, lp_epochs_of
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
        lp_epochs=lp_epochs_of(tc) if tc.freeze_strategy == "lp_ft" else None,
        # L2-SP replaces the backbone's decay toward zero with its pull toward the source
        backbone_weight_decay=0.0 if tc.l2sp_lambda > 0 else None,
        notes=plan_notes(tc, backbone),
    )


def plan_notes(tc: TransferConfig, backbone: Backbone) -> tuple[str, ...]:
    """What the table does not show: the settings of LoRA, lp_ft and L2-SP."""
    notes = []
    if tc.freeze_strategy == "lora":
        from tlkit.lora import lora_spec

        lc = lora_of(tc)
        layers = sorted({n.split(".lora_A")[0] for n, _ in backbone.named_parameters()
                         if ".lora_A." in n})
        kinds = list((lora_spec(backbone) or {}).get("target_modules") or [])
        if len(kinds) > 6:  # a long list of full names (a CNN's pointwise convolutions)
            kinds = sorted({n.rsplit(".", 1)[-1] for n in kinds})
            if any(k.isdigit() for k in kinds):  # numbered layers (torchvision)
                kinds = [n.removeprefix("model.") for n in layers]
        notes.append(f"LoRA (PEFT): r {lc.r}, alpha {lc.alpha:g}, dropout {lc.dropout:g} on "
                     f"{len(layers)} layers ({', '.join(kinds[:6])}"
                     f"{', ...' if len(kinds) > 6 else ''}); set lora.target_modules to change.")
    if tc.freeze_strategy == "lp_ft":
        notes.append("lp_ft (Kumar et al., 2022): phase 2 fine-tunes from the head phase 1 "
                     "trained; each group keeps its rate in both phases (the backbone's are the "
                     "small ones).")
    if tc.l2sp_lambda > 0:
        notes.append(f"L2-SP: the loss adds {tc.l2sp_lambda:g} * ||theta - theta_pretrained||^2 "
                     "over the backbone's trainable parameters, in place of their weight decay "
                     "(wd 0 above); the head keeps weight_decay.")
    return tuple(notes)


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
    if tc.freeze_strategy == "lora":
        from tlkit.lora import add_lora

        lc = lora_of(tc)
        groups = add_lora(backbone, groups, lc.r, lc.alpha, lc.dropout, lc.target_modules)
    backbone.use_groups(groups)
    head = build_head(backbone.feature_dim, num_outputs, tc.head.type, tc.head.hidden_size,
                      tc.dropout)
    model = TransferModel(backbone, head)
    plan = make_plan(tc, backbone, groups, head_size(head))
    return Assembled(model, groups, plan)
