"""Plans: which groups train in each phase, at which rate and weight decay; and what applying a
phase does to the model (requires_grad, frozen BatchNorm statistics, optimizer groups)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from tlkit.assemble import assemble
from tlkit.config import TransferConfig
from tlkit.errors import UserError
from tlkit.plan import (
    HEAD,
    GroupSize,
    build_plan,
    discriminative_lrs,
    format_plan,
    phase_at,
    selector_count,
)
from tlkit import strategies
from tlkit.config import PlanSettings, UnfreezeStep
from tlkit.plan.apply import apply_phase, norm_stats_mode, optimizer_groups

SIZES = [GroupSize(f"g{i}", 100 * (i + 1), 90 * (i + 1)) for i in range(6)]  # g0 lowest
HEAD_SIZE = GroupSize(HEAD, 50, 40)




def _flags(phase) -> list[bool]:
    """Trainable flags of the backbone groups, lowest first (the head is always last)."""
    assert phase.rows[-1].name == HEAD and phase.rows[-1].trainable
    return [r.trainable for r in phase.rows[:-1]]


def _settings(strategy: str, epochs: int = 4, top_n: int = 2, schedule=None,
              decay: float = 0.5, lp_epochs=None) -> PlanSettings:
    # unvalidated on purpose: the plan's own checks are under test here
    steps = tuple(UnfreezeStep.model_construct(epoch=e, unfreeze=u) for e, u in schedule or [])
    return PlanSettings.model_construct(
        source_model="test", freeze_strategy=strategy, epochs=epochs, top_n=top_n,
        unfreeze_schedule=steps, lp_epochs=lp_epochs, lora=None, head_lr=1e-3, backbone_lr=1e-4,
        lr_decay_per_layer=decay, weight_decay=0.01, l2sp_lambda=0.0)


def _plan(strategy: str, epochs: int = 4, top_n: int = 2, schedule=None, decay: float = 0.5):
    return build_plan("test", SIZES, HEAD_SIZE, _settings(strategy, epochs, top_n, schedule,
                                                          decay))


def _tc(source: str = "timm:test_resnet", **kw) -> TransferConfig:
    kw.setdefault("freeze_strategy", "all_frozen")
    return TransferConfig(source_model=source, pretrained_weights="none", **kw)


# --------------------------------------------------------------------------------------------------
# Strategies (pure)
# --------------------------------------------------------------------------------------------------


def test_all_frozen_trains_only_the_head():
    plan = _plan("all_frozen")
    assert len(plan.phases) == 1
    assert _flags(plan.phases[0]) == [False] * 6
    assert plan.phases[0].trainable_params == HEAD_SIZE.n_params
    assert (plan.phases[0].start_epoch, plan.phases[0].end_epoch) == (0, 4)


def test_none_trains_everything():
    plan = _plan("none")
    assert len(plan.phases) == 1 and _flags(plan.phases[0]) == [True] * 6
    assert plan.phases[0].trainable_params == plan.total_params


@pytest.mark.parametrize("n", [0, 1, 2, 5, 6])
def test_top_n_unfrozen(n):
    plan = _plan("top_n_unfrozen", top_n=n)
    assert len(plan.phases) == 1
    assert _flags(plan.phases[0]) == [False] * (6 - n) + [True] * n


def test_top_n_larger_than_the_backbone_is_refused():
    with pytest.raises(UserError, match="top_n"):
        _plan("top_n_unfrozen", top_n=7)


def test_gradual_design_schedule():
    plan = _plan("gradual", schedule=[(1, "last_block"), (2, "last_two_blocks"), (3, "all")])
    assert [(p.start_epoch, p.end_epoch) for p in plan.phases] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [_flags(p) for p in plan.phases] == [
        [False] * 6,
        [False] * 5 + [True],
        [False] * 4 + [True] * 2,
        [True] * 6,
    ]


def test_gradual_last_n_blocks():
    plan = _plan("gradual", epochs=5, schedule=[(0, "last_3_blocks"), (2, "last_5_blocks")])
    # a step at epoch 0: no head-only phase first
    assert [(p.start_epoch, p.end_epoch) for p in plan.phases] == [(0, 2), (2, 5)]
    assert _flags(plan.phases[0]) == [False] * 3 + [True] * 3
    assert _flags(plan.phases[1]) == [False] + [True] * 5


@pytest.mark.parametrize(
    "selector, count",
    [("last_block", 1), ("last_two_blocks", 2), ("last_1_blocks", 1), ("last_4_blocks", 4),
     ("last_6_blocks", 6), ("all", 6)],
)
def test_selector_counts(selector, count):
    assert selector_count(selector, 6) == count


@pytest.mark.parametrize("selector", ["last_99_blocks", "last_7_blocks", "last_0_blocks",
                                      "top_block"])
def test_bad_selector_is_a_user_error(selector):
    with pytest.raises(UserError, match=selector):
        _plan("gradual", schedule=[(1, selector)])


def test_schedule_may_not_refreeze():
    with pytest.raises(UserError, match="epoch 2"):
        _plan("gradual", schedule=[(1, "last_two_blocks"), (2, "last_block")])


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(UserError, match="all_frozen"):
        _plan("frozen")


def test_phase_at_covers_every_epoch():
    specs = strategies.get("gradual").phases(6, _settings("gradual", 6, schedule=[
        (2, "last_block"), (4, "all")]))
    assert [phase_at(specs, e) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    assert phase_at(specs, 99) == 2  # past the end stays in the last phase


# --------------------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------------------


def _sig3(x: float) -> float:
    return float(f"{x:.3g}")


@pytest.mark.parametrize("decay", [0.5, 0.8, 1.0])
def test_discriminative_rates_follow_the_formula(decay):
    plan = _plan("none", decay=decay)
    L = len(SIZES)
    for level, row in enumerate(plan.phases[0].rows[:-1], start=1):
        assert _sig3(row.lr) == _sig3(1e-4 * decay ** (L - level)), row
    assert plan.phases[0].rows[-1].lr == 1e-3  # head at head_lr
    assert plan.phases[0].rows[-2].lr == pytest.approx(1e-4)  # top group at backbone_lr


def test_rates_do_not_change_between_phases():
    plan = _plan("gradual", schedule=[(1, "last_block"), (3, "all")])
    rates = [[r.lr for r in p.rows] for p in plan.phases]
    assert all(r == rates[0] for r in rates)


def test_discriminative_lrs_values():
    assert discriminative_lrs(3, 1e-4, 0.5) == pytest.approx([2.5e-5, 5e-5, 1e-4])
    assert discriminative_lrs(1, 3e-4, 0.1) == pytest.approx([3e-4])


def test_printed_plan_rates_and_groups():
    plan = _plan("gradual", schedule=[(1, "last_block"), (2, "all")], decay=0.7)
    text = format_plan(plan)
    blocks = text.split("\nphase ")[1:]
    assert len(blocks) == len(plan.phases)
    for block, phase in zip(blocks, plan.phases, strict=True):
        for row in phase.rows:
            line = next(ln for ln in block.splitlines() if ln.split()[:1] == [row.name])
            shown = re.search(r"\(?([0-9.e+-]+)\)?\s+[0-9.]+\s+[0-9,]+$", line).group(1)
            assert float(shown) == pytest.approx(row.lr, rel=5e-3), line
            assert ("trainable" in line) == row.trainable
            assert f"{row.n_params:,}" in line


# --------------------------------------------------------------------------------------------------
# Plans of real (tiny) models
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["timm:test_resnet", "timm:test_vit", "torchvision:resnet18"])
def test_group_counts_add_up_to_the_model(source):
    asm = assemble(_tc(source, freeze_strategy="none"), 3)
    total = sum(p.numel() for p in asm.model.parameters())
    assert asm.plan.total_params == total
    for phase in asm.plan.phases:
        assert sum(r.n_params for r in phase.rows) == total
    rows = asm.plan.phases[0].rows
    params = dict(asm.model.backbone.named_parameters())
    for g, r in zip(asm.groups, rows[:-1], strict=True):
        assert r.name == g.name
        assert r.n_params == sum(params[n].numel() for n in g.param_names)
    assert rows[-1].n_params == sum(p.numel() for p in asm.model.head.parameters())


def _requires_grad_matches(asm, phase) -> None:
    params = dict(asm.model.backbone.named_parameters())
    for g, row in zip(asm.groups, phase.rows[:-1], strict=True):
        assert row.name == g.name
        assert all(params[n].requires_grad == row.trainable for n in g.param_names), g.name
    assert all(p.requires_grad for p in asm.model.head.parameters())


@pytest.mark.parametrize(
    "kw",
    [
        {"freeze_strategy": "all_frozen"},
        {"freeze_strategy": "none"},
        {"freeze_strategy": "top_n_unfrozen", "top_n": 2},
        {"freeze_strategy": "gradual", "epochs": 4,
         "unfreeze_schedule": [{"epoch": 1, "unfreeze": "last_block"},
                               {"epoch": 2, "unfreeze": "last_two_blocks"},
                               {"epoch": 3, "unfreeze": "all"}]},
    ],
)
def test_apply_phase_sets_requires_grad_as_planned(kw):
    asm = assemble(_tc(**kw), 3)
    for phase in asm.plan.phases:
        apply_phase(asm.model, asm.groups, phase)
        _requires_grad_matches(asm, phase)


def test_bad_selector_through_assemble():
    tc = _tc(freeze_strategy="gradual", epochs=3,
             unfreeze_schedule=[{"epoch": 1, "unfreeze": "last_99_blocks"}])
    with pytest.raises(UserError, match="last_99_blocks"):
        assemble(tc, 2)


# --------------------------------------------------------------------------------------------------
# Frozen BatchNorm
# --------------------------------------------------------------------------------------------------


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.running_mean.clone() for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def _changed_after_train_forward(asm) -> set[str]:
    before = _bn_stats(asm.model.backbone)
    asm.model.train()
    asm.model(torch.randn(4, 3, 32, 32) * 3 + 1)
    after = _bn_stats(asm.model.backbone)
    return {n for n in before if not torch.equal(before[n], after[n])}


def _bn_in(asm, group_index: int) -> set[str]:
    names = set(asm.groups[group_index].param_names)
    return {n for n in _bn_stats(asm.model.backbone) if f"{n}.weight" in names}


def test_frozen_groups_keep_batchnorm_statistics():
    asm = assemble(_tc(freeze_strategy="top_n_unfrozen", top_n=1), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    changed = _changed_after_train_forward(asm)
    top = _bn_in(asm, len(asm.groups) - 1)
    assert top and top <= changed, "the trainable group's statistics follow the data"
    frozen = set().union(*(_bn_in(asm, i) for i in range(len(asm.groups) - 1)))
    assert frozen and not (frozen & changed), "frozen groups' statistics stay put"
    # the frozen BatchNorms stay in eval after model.train(), the trainable ones train
    mods = dict(asm.model.backbone.named_modules())
    assert not any(mods[n].training for n in frozen)
    assert all(mods[n].training for n in top)


def test_all_frozen_moves_no_batchnorm_statistics():
    asm = assemble(_tc(freeze_strategy="all_frozen"), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    assert _changed_after_train_forward(asm) == set()


def test_unfreezing_lets_statistics_move_again():
    tc = _tc(freeze_strategy="gradual", epochs=2,
             unfreeze_schedule=[{"epoch": 1, "unfreeze": "all"}])
    asm = assemble(tc, 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    assert _changed_after_train_forward(asm) == set()
    apply_phase(asm.model, asm.groups, asm.plan.phases[1])
    assert _changed_after_train_forward(asm) == set(_bn_stats(asm.model.backbone))


def test_freeze_norm_stats_auto_keeps_every_statistic_when_the_head_trains_alone_first():
    gradual = assemble(_tc(freeze_strategy="gradual", epochs=2,
                           unfreeze_schedule=[{"epoch": 1, "unfreeze": "all"}]), 3)
    assert norm_stats_mode("auto", gradual.plan) == "all"
    assert norm_stats_mode(True, gradual.plan) == "frozen"
    # trained from the first epoch: its head never saw the pretrained statistics alone
    for tc in (_tc(freeze_strategy="none"), _tc(freeze_strategy="top_n_unfrozen", top_n=1),
               _tc(freeze_strategy="all_frozen"),
               _tc(freeze_strategy="gradual", epochs=2,
                   unfreeze_schedule=[{"epoch": 0, "unfreeze": "last_block"},
                                      {"epoch": 1, "unfreeze": "all"}])):
        plan = assemble(tc, 3).plan
        assert norm_stats_mode("auto", plan) == "frozen"
        assert norm_stats_mode("all", plan) == "all" and norm_stats_mode(False, plan) == "none"
    # "all": unfrozen, the weights train but no statistic moves, and model.eval() still works
    apply_phase(gradual.model, gradual.groups, gradual.plan.phases[1], "all")
    assert all(p.requires_grad for p in gradual.model.parameters())
    assert _changed_after_train_forward(gradual) == set()
    gradual.model.eval()
    assert not any(m.training for m in gradual.model.modules())


def test_freeze_norm_stats_off_lets_every_statistic_move():
    asm = assemble(_tc(freeze_strategy="all_frozen"), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0], "none")
    assert _changed_after_train_forward(asm) == set(_bn_stats(asm.model.backbone))


def test_eval_still_means_eval():
    asm = assemble(_tc(freeze_strategy="none"), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    asm.model.eval()
    assert not any(m.training for m in asm.model.modules())


# --------------------------------------------------------------------------------------------------
# Optimizer groups
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["timm:test_resnet", "timm:test_vit"])
def test_optimizer_groups_rates_and_weight_decay(source):
    asm = assemble(_tc(source, freeze_strategy="none", weight_decay=0.05), 3)
    phase = asm.plan.phases[0]
    apply_phase(asm.model, asm.groups, phase)
    groups = optimizer_groups(asm.model, asm.groups, phase)
    names = {id(p): n for n, p in asm.model.named_parameters()}
    modules = dict(asm.model.named_modules())
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    seen: list[str] = []
    rates = {r.name: r.lr for r in phase.rows}
    for og in groups:
        assert og["lr"] == rates[og["group"]]
        for p in og["params"]:
            n = names[id(p)]
            seen.append(n)
            owner = modules[n.rsplit(".", 1)[0]] if "." in n else asm.model
            if n.endswith(".bias") or isinstance(owner, norm_types):
                assert og["weight_decay"] == 0.0, n
            elif n.endswith(("cls_token", "pos_embed")):
                assert og["weight_decay"] == 0.0, n  # timm's no_weight_decay list
            else:
                assert og["weight_decay"] == 0.05, n
    assert sorted(seen) == sorted(n for n, _ in asm.model.named_parameters())


def test_one_optimizer_step_moves_only_trainable_groups():
    asm = assemble(_tc(freeze_strategy="top_n_unfrozen", top_n=1, weight_decay=0.1), 3)
    phase = asm.plan.phases[0]
    apply_phase(asm.model, asm.groups, phase)
    opt = torch.optim.AdamW(optimizer_groups(asm.model, asm.groups, phase))
    before = {n: p.detach().clone() for n, p in asm.model.named_parameters()}
    asm.model.train()
    loss = asm.model(torch.randn(4, 3, 32, 32)).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    moved = {n for n, p in asm.model.named_parameters() if not torch.equal(p, before[n])}
    top = {f"backbone.{n}" for n in asm.groups[-1].param_names}
    head = {f"head.{n}" for n, _ in asm.model.head.named_parameters()}
    assert head <= moved
    assert moved - head, "the unfrozen top group learns"
    assert moved <= top | head, "frozen groups stay exactly as they were"
    has_grad = {n for n, p in asm.model.named_parameters() if p.grad is not None}
    assert has_grad == top | head


def test_plan_for_a_text_model_has_every_layer():
    # A plan is data: built from the group sizes alone, no model needed.
    groups = [GroupSize("embeddings", 1000, 900)] + [
        GroupSize(f"encoder.layer.{i}", 500, 450) for i in range(6)]
    plan = build_plan("minilm-l6", groups, HEAD_SIZE, _settings(
        "gradual", 4, schedule=[(1, "last_block"), (2, "last_two_blocks"), (3, "all")]))
    for phase in plan.phases:
        assert [r.name for r in phase.rows] == [g.name for g in groups] + [HEAD]
    assert plan.phases[0].rows[0].lr == pytest.approx(1e-4 * 0.5 ** 6)
    assert plan.total_params == 1000 + 6 * 500 + 50
    assert math.isclose(plan.phases[-1].rows[0].lr, 1.5625e-6)
