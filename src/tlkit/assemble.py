"""From a validated config to a model and its plan: backbone, layer groups, head, phases."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from tlkit import strategies
from tlkit.backbones import Backbone, LayerGroup, load_backbone
from tlkit.backbones.groups import groups_from_patterns
from tlkit.config import HeadSettings, PlanSettings, TransferConfig
from tlkit.errors import UserError
from tlkit.heads import build_head
from tlkit.model import TransferModel
from tlkit.plan import GroupSize, Plan, build_plan
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


def make_plan(ps: PlanSettings, backbone: Backbone, groups: list[LayerGroup],
              head_sizes: GroupSize) -> Plan:
    return build_plan(
        ps.source_model, group_sizes(backbone, groups), head_sizes, ps,
        # L2-SP replaces the backbone's decay toward zero with its pull toward the source
        backbone_weight_decay=0.0 if ps.l2sp_lambda > 0 else None,
        notes=plan_notes(ps, backbone),
    )


def plan_notes(ps: PlanSettings, backbone: Backbone) -> tuple[str, ...]:
    """What the table does not show: the strategy's own settings, and L2-SP's."""
    notes = strategies.get(ps.freeze_strategy).notes(ps, backbone)
    if ps.l2sp_lambda > 0:
        notes.append(f"L2-SP: the loss adds {ps.l2sp_lambda:g} * ||theta - theta_pretrained||^2 "
                     "over the backbone's trainable parameters, in place of their weight decay "
                     "(wd 0 above); the head keeps weight_decay.")
    return tuple(notes)


def head_normalization(hs: HeadSettings, backbone: Backbone, task: str | None = None
                       ) -> str | None:
    """Why the head scales the pooled features to unit length (``head.normalize``), or None
    where it does not (auto: never for token classification, whose rows are per-word states,
    not sentence vectors)."""
    if hs.normalize is True:
        return "head.normalize: true"
    if hs.normalize is False or hs.type != "linear" \
            or task in ("token_classification", "question_answering") \
            or hs.freeze_strategy not in strategies.names():
        return None
    why = strategies.get(hs.freeze_strategy).normalizes_head(backbone, hs.head_solver == "convex")
    return f"head.normalize auto: {why}" if why else None


def build_model(backbone: Backbone, num_outputs: int, hs: HeadSettings,
                normalize: bool = False) -> TransferModel:
    head = build_head(backbone.feature_dim, num_outputs, hs.type, hs.hidden_size, hs.dropout,
                      normalize=normalize)
    return TransferModel(backbone, head)


# BERT's initializer_range: AutoModelForQuestionAnswering's qa_outputs starts as N(0, 0.02^2)
SPAN_HEAD_STD = 0.02


def span_head_init(head: torch.nn.Module) -> None:
    """Question answering's start / end layer as BERT initialises its qa_outputs: weights
    N(0, 0.02^2), biases 0. PyTorch's default (uniform, about 1.5 times the spread, random
    biases) cost 11.4 F1 points after bench/qa.py's one epoch (15.38 against 26.79, seed 0)."""
    for m in head.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=SPAN_HEAD_STD)
            torch.nn.init.zeros_(m.bias)


def assemble(tc: TransferConfig, num_outputs: int, modality: str | None = None,
             max_length: int | None = None, backbone: Backbone | None = None,
             task: str | None = None) -> Assembled:
    if backbone is None:
        # Loading draws from the random generator, and not the same on a process's first load
        # as on later ones (timm and transformers set things up once): the head's initialisation
        # must not depend on what loaded before in the process (auto's trials, compare's
        # variants), so the load draws from a copy. A random initialisation (pretrained_weights
        # none) starts from the caller's state all the same.
        # question answering's head reads every token's state: the backbone does not pool
        pooling = "tokens" if task == "question_answering" else tc.pooling
        with torch.random.fork_rng(devices=[]):
            backbone = load_backbone(tc.source_model, tc.pretrained_weights, pooling,
                                     max_length)
    if modality is not None and backbone.kind != modality:
        raise UserError(
            f"{tc.source_model} is a {backbone.kind} backbone but the data is {modality}; "
            f"choose a {modality} backbone (see `tlkit backbones`) or other data"
        )
    ps = tc.plan_settings
    groups = strategies.get(ps.freeze_strategy).prepare(backbone, layer_groups_for(backbone, tc),
                                                        ps)
    backbone.use_groups(groups)
    why = head_normalization(tc.head_settings, backbone, task)
    model = build_model(backbone, num_outputs, tc.head_settings, normalize=why is not None)
    if task == "question_answering":
        span_head_init(model.head)
    plan = make_plan(ps, backbone, groups, head_size(model.head))
    if why is not None:
        plan = dataclasses.replace(plan, notes=plan.notes + (
            f"the head reads the pooled features scaled to unit length ({why}).",))
    return Assembled(model, groups, plan)
