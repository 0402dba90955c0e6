"""Layer groups: every parameter in exactly one group, ordered from input to output, for every
kind of backbone; user patterns override; a parameter nobody placed is an error that names it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from tlkit.backbones import load_backbone
from tlkit.backbones.groups import (
    UnplacedParameterError,
    groups_by_generic_rule,
    groups_from_patterns,
)
from tlkit.errors import UserError

TIMM = ["timm:test_vit", "timm:test_efficientnet", "timm:test_resnet"]
TORCHVISION = ["torchvision:mobilenet_v2", "torchvision:resnet18"]




# --------------------------------------------------------------------------------------------------
# Tiny models, built offline
# --------------------------------------------------------------------------------------------------




class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.bn(self.conv(x)))


class SmallCNN(nn.Module):
    """A hand-written CNN: stem (conv, bn, relu), three blocks, a 1x1 projection with its norm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Block(8), Block(8), Block(8))
        self.proj = nn.Conv2d(8, 16, 1)
        self.norm = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.blocks(self.stem(x)))).mean((2, 3))


class ResNetLike(nn.Module):
    """conv1/bn1 stem and stages of blocks side by side, as torchvision's ResNet is written."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.layer2 = nn.Sequential(Block(8), Block(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x))))).mean((2, 3))


class Wrapped(nn.Module):
    """A backbone that holds its network one level down (as tlkit's adapters do)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.model = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _backbone(spec: str, tiny_bert_dir: Path | None = None, **kw):
    if spec == "hf":
        return load_backbone(f"hf:{tiny_bert_dir}", "packaged", **kw)
    return load_backbone(spec, "none", **kw)


def _example_input(backbone):
    if backbone.kind == "text":
        ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}
    return torch.randn(2, 3, 64, 64)


def _forward_order(module: nn.Module, inputs) -> list[str]:
    """Parameter names in the order the forward pass first uses their modules."""
    order: list[str] = []
    hooks = []
    for mname, m in module.named_modules():
        own = [f"{mname}.{p}" if mname else p for p, _ in m.named_parameters(recurse=False)]
        if own:
            hooks.append(m.register_forward_pre_hook(
                lambda _m, _i, own=own: order.extend(n for n in own if n not in order)))
    try:
        with torch.no_grad():
            module.eval()(inputs)
    finally:
        for h in hooks:
            h.remove()
    return order


def _assert_partition(module: nn.Module, groups) -> None:
    names = [n for n, _ in module.named_parameters()]
    placed = Counter(n for g in groups for n in g.param_names)
    assert set(placed) == set(names), set(names) ^ set(placed)
    assert all(c == 1 for c in placed.values()), [n for n, c in placed.items() if c > 1]
    assert all(g.param_names for g in groups), "no group is empty"
    assert len({g.name for g in groups}) == len(groups), "group names are unique"


def _assert_input_to_output(module: nn.Module, groups, inputs) -> None:
    index = {n: i for i, g in enumerate(groups) for n in g.param_names}
    seq = [index[n] for n in _forward_order(module, inputs)]
    assert seq, "the forward pass used parameters"
    assert seq == sorted(seq), f"groups out of forward order: {seq}"
    assert seq[0] == 0 and seq[-1] == len(groups) - 1


# --------------------------------------------------------------------------------------------------
# Every backbone kind
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", TIMM + TORCHVISION + ["hf"])
def test_every_parameter_in_exactly_one_group_in_forward_order(spec, tiny_bert_dir):
    b = _backbone(spec, tiny_bert_dir)
    groups = b.layer_groups()
    assert len(groups) >= 3, [g.name for g in groups]
    _assert_partition(b, groups)
    _assert_input_to_output(b, groups, _example_input(b))


def test_timm_vit_groups():
    b = _backbone("timm:test_vit")
    groups = b.layer_groups()
    first, last = groups[0].param_names, groups[-1].param_names
    assert {"model.cls_token", "model.pos_embed"} <= set(first)
    assert any(n.startswith("model.patch_embed.") for n in first)
    depth = len(b.model.blocks)
    assert len(groups) == depth + 1  # stem + one group per block
    # the final norm goes with the last block (timm's MATCH_PREV_GROUP): "last_block" trains a
    # block, not a lone LayerNorm
    assert "model.norm.weight" in last
    assert any(n.startswith(f"model.blocks.{depth - 1}.") for n in last)


def test_timm_efficientnet_groups():
    b = _backbone("timm:test_efficientnet")
    groups = b.layer_groups()
    assert "model.conv_stem.weight" in groups[0].param_names
    assert "model.conv_head.weight" in groups[-1].param_names
    stages = len(b.model.blocks)
    assert len(groups) == stages + 1
    assert any(n.startswith(f"model.blocks.{stages - 1}.") for n in groups[-1].param_names)


def test_timm_resnet_groups():
    b = _backbone("timm:test_resnet")
    groups = b.layer_groups()
    assert any(n.startswith("model.conv1") for n in groups[0].param_names)
    assert all(n.startswith("model.layer4.") for n in groups[-1].param_names)
    assert len(groups) == 5  # stem + layer1..4


@pytest.mark.parametrize("pooling, top", [("mean", "encoder.layer.1"), ("pooler", "pooler")])
def test_bert_groups(tiny_bert_dir, pooling, top):
    b = _backbone("hf", tiny_bert_dir, pooling=pooling)
    groups = b.layer_groups()
    names = [g.name for g in groups]
    assert names[:3] == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    assert names[-1] == top
    assert "model.embeddings.word_embeddings.weight" in groups[0].param_names
    _assert_partition(b, groups)


def test_torchvision_mobilenet_groups():
    b = _backbone("torchvision:mobilenet_v2")
    groups = b.layer_groups()
    assert len(groups) == len(b.model.features)  # one group per features stage
    assert groups[0].param_names[0].startswith("model.features.0.")
    assert all(n.startswith("model.features.18.") for n in groups[-1].param_names)


def test_torchvision_resnet_groups_are_stem_and_stages():
    # Not one group holding the whole network: the plan would have nothing to unfreeze gradually.
    b = _backbone("torchvision:resnet18")
    groups = b.layer_groups()
    assert len(groups) == 5
    assert set(groups[0].param_names) == {"model.conv1.weight", "model.bn1.weight",
                                          "model.bn1.bias"}
    for i, g in enumerate(groups[1:], start=1):
        assert all(n.startswith(f"model.layer{i}.") for n in g.param_names)


def test_timm_matcher_refuses_a_parameter_it_does_not_know():
    # timm's own layer-decay helper would give such a parameter the top group's rate.
    b = _backbone("timm:test_vit")
    b.model.extra_token = nn.Parameter(torch.zeros(1, 1, b.feature_dim))
    with pytest.raises(UnplacedParameterError, match=r"model\.extra_token"):
        b.layer_groups()


def test_timm_matcher_with_anchored_alternatives():
    # Newer timm models write `^a|^b`; every alternative must still match its parameters.
    b = _backbone("timm:test_vit")
    b.model.group_matcher = lambda coarse=False: {
        "stem": r"^cls_token|^pos_embed|^patch_embed",
        "blocks": [(r"^blocks\.(\d+)", None), (r"^norm|^fc_norm", (99999,))],
    }
    groups = b.layer_groups()
    _assert_partition(b, groups)
    assert {"model.cls_token", "model.pos_embed"} <= set(groups[0].param_names)
    assert "model.norm.weight" in groups[-1].param_names


# --------------------------------------------------------------------------------------------------
# The generic rule on hand-written modules
# --------------------------------------------------------------------------------------------------


def test_generic_rule_on_a_small_cnn():
    m = SmallCNN()
    groups = groups_by_generic_rule(m)
    assert [g.name for g in groups] == ["stem", "blocks.0", "blocks.1", "blocks.2", "proj+norm"]
    # a convolution stays with its own BatchNorm
    assert set(groups[0].param_names) == {"stem.0.weight", "stem.0.bias", "stem.1.weight",
                                          "stem.1.bias"}
    _assert_partition(m, groups)
    _assert_input_to_output(m, groups, torch.randn(2, 3, 16, 16))


def test_generic_rule_on_stages_side_by_side():
    m = ResNetLike()
    groups = groups_by_generic_rule(m)
    assert [g.name for g in groups] == ["conv1+bn1", "layer1", "layer2"]
    _assert_partition(m, groups)
    _assert_input_to_output(m, groups, torch.randn(2, 3, 16, 16))


def test_generic_rule_steps_through_a_wrapper():
    m = Wrapped(SmallCNN())
    groups = groups_by_generic_rule(m)
    assert len(groups) == 5
    assert groups[0].name == "model.stem"
    _assert_partition(m, groups)


def test_generic_rule_puts_direct_parameters_first():
    class WithToken(SmallCNN):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    groups = groups_by_generic_rule(WithToken())
    assert groups[0].param_names == ("scale",)
    _assert_partition(WithToken(), groups)


# --------------------------------------------------------------------------------------------------
# User patterns
# --------------------------------------------------------------------------------------------------


def test_patterns_override_the_automatic_groups(tiny_bert_dir):
    b = _backbone("hf", tiny_bert_dir)
    names = [n for n, _ in b.named_parameters()]
    groups = groups_from_patterns(
        names, [("bottom", r"embeddings|encoder\.layer\.0\."), ("top", r"encoder\.layer\.1\.")]
    )
    assert [g.name for g in groups] == ["bottom", "top"]
    _assert_partition(b, groups)
    assert all(".layer.1." in n for n in groups[1].param_names)


def test_first_matching_pattern_wins():
    m = SmallCNN()
    names = [n for n, _ in m.named_parameters()]
    groups = groups_from_patterns(names, [("convs", r"conv|stem\.0|proj"), ("rest", r".")])
    _assert_partition(m, groups)
    assert "blocks.0.conv.weight" in groups[0].param_names
    assert "blocks.0.bn.weight" in groups[1].param_names


def test_unplaced_parameter_raises_naming_it():
    m = SmallCNN()
    names = [n for n, _ in m.named_parameters()]
    with pytest.raises(UnplacedParameterError) as info:
        groups_from_patterns(names, [("stem", r"^stem\."), ("blocks", r"^blocks\.")])
    msg = str(info.value)
    assert "proj.weight" in msg and "layer_groups" in msg
    assert isinstance(info.value, UserError)


def test_pattern_that_matches_nothing_is_refused():
    m = SmallCNN()
    names = [n for n, _ in m.named_parameters()]
    with pytest.raises(UserError, match="typo"):
        groups_from_patterns(names, [("all", r"."), ("typo", r"^nothing_here")])


def test_patterns_through_the_config():
    from tlkit.assemble import assemble
    from tlkit.config import TransferConfig

    tc = TransferConfig(
        source_model="timm:test_resnet", pretrained_weights="none",
        freeze_strategy="top_n_unfrozen", top_n=1,
        layer_groups=[{"name": "low", "pattern": r"^model\.(conv1|bn1|layer1|layer2)"},
                      {"name": "high", "pattern": r"^model\."}],
    )
    asm = assemble(tc, 3)
    assert [g.name for g in asm.groups] == ["low", "high"]
    assert [r.name for r in asm.plan.phases[0].rows] == ["low", "high", "head"]
    assert [r.trainable for r in asm.plan.phases[0].rows] == [False, True, True]
