"""Ordered layer groups, found automatically or given as regexes.

Every parameter of the backbone lands in exactly one group, ordered from input to output. A parameter
that no rule places is an error that names it: a silently mis-grouped parameter would get the wrong
learning rate or stay frozen without anyone noticing (timm's own layer-decay helper puts such a
parameter in the top group).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

from torch import nn

from tlkit.backbones.base import LayerGroup
from tlkit.errors import UserError


class UnplacedParameterError(UserError):
    pass


MATCH_PREV_GROUP = 99999.0  # timm's marker for "same group as the one before"


def _check_complete(groups: list[LayerGroup], names: Sequence[str], how: str) -> list[LayerGroup]:
    placed = list(chain.from_iterable(g.param_names for g in groups))
    missing = [n for n in names if n not in set(placed)]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise UnplacedParameterError(
            f"layer groups ({how}) leave parameter(s) {', '.join(missing[:3])}{more} in no group; "
            "fix: add a pattern that matches them under transfer_config.layer_groups"
        )
    dup = {n for n in placed if placed.count(n) > 1}
    if dup:
        raise UnplacedParameterError(f"parameter(s) {sorted(dup)[:3]} fall in two layer groups")
    return [g for g in groups if g.param_names]


def groups_from_patterns(
    names: Sequence[str], patterns: Sequence[tuple[str, str]]
) -> list[LayerGroup]:
    """User-given groups: each parameter goes to the first pattern (``re.search``) it matches."""
    buckets: dict[str, list[str]] = {name: [] for name, _ in patterns}
    compiled = [(name, re.compile(p)) for name, p in patterns]
    for n in names:
        for gname, rx in compiled:
            if rx.search(n):
                buckets[gname].append(n)
                break
    groups = [LayerGroup(g, tuple(buckets[g])) for g, _ in patterns]
    empty = [g.name for g in groups if not g.param_names]
    if empty:
        raise UserError(
            f"layer group(s) {empty} match no parameter; fix the pattern(s) in "
            "transfer_config.layer_groups (parameter names look like "
            f"{', '.join(list(names)[:3])})"
        )
    return _check_complete(groups, names, "transfer_config.layer_groups")


def groups_from_timm_matcher(
    names: Sequence[str], matcher: dict[str, Any], strip_prefix: str = ""
) -> list[LayerGroup]:
    """Group with a timm ``group_matcher`` spec, as timm orders them, but refuse what it leaves
    unmatched instead of sending it to the top group. The patterns see each name without
    ``strip_prefix``; groups and errors carry the full names."""
    compiled: list[tuple[re.Pattern[str], tuple[int], tuple[int, ...] | None, str]] = []
    for position, (gname, spec) in enumerate(matcher.items()):
        specs = [(spec, None)] if isinstance(spec, str) else spec
        for rx, suffix in specs:
            compiled.append((re.compile(rx), (position,), suffix, gname))

    def key(name: str) -> tuple[tuple[float, ...], str]:
        name = name.removeprefix(strip_prefix) if strip_prefix else name
        for rx, prefix, suffix, gname in compiled:
            m = rx.match(name)
            if m:
                parts = (prefix, m.groups(), suffix)
                ordinal = tuple(float(x) for x in chain.from_iterable(p for p in parts if p))
                label = gname + "".join(f".{g}" for g in m.groups() if g is not None)
                if suffix and not m.groups():
                    label = m.group(0).strip(".")
                return ordinal, label
        return (math.inf,), ""

    keyed = [(key(n), n) for n in names]
    unmatched = [n for (k, _), n in keyed if k[0] == math.inf]
    if unmatched:
        more = f" (and {len(unmatched) - 3} more)" if len(unmatched) > 3 else ""
        raise UnplacedParameterError(
            f"the model's group matcher leaves {', '.join(unmatched[:3])}{more} in no group; "
            "fix: give transfer_config.layer_groups patterns that cover every parameter"
        )
    # timm's MATCH_PREV_GROUP: a (99999,) suffix joins the group before it (a ViT's final norm
    # goes with its last block, an EfficientNet's conv_head with its last stage), so that
    # "last_block" unfreezes a block and not a lone norm layer.
    ordinals = sorted({o for (o, _), _ in keyed})
    merged_into: dict[tuple[float, ...], tuple[float, ...]] = {}
    for i, o in enumerate(ordinals):
        if i > 0 and o[-1] == MATCH_PREV_GROUP:
            prev = ordinals[i - 1]
            merged_into[o] = merged_into.get(prev, prev)
    order: dict[tuple[float, ...], tuple[list[str], list[str]]] = {}
    for (ordinal, label), n in keyed:
        ordinal = merged_into.get(ordinal, ordinal)
        labels, members = order.setdefault(ordinal, ([], []))
        members.append(n)
        if label not in labels:
            labels.append(label)
    groups = []
    seen: dict[str, int] = {}
    for ordinal in sorted(order):
        labels, members = order[ordinal]
        label = "+".join(labels)
        if label in seen:  # two ordinals that print alike: keep names unique
            seen[label] += 1
            label = f"{label}#{seen[label]}"
        else:
            seen[label] = 0
        groups.append(LayerGroup(label, tuple(members)))
    return _check_complete(groups, names, "the model's group matcher")


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _is_stack(m: nn.Module) -> bool:
    """A container of repeated stages: its children are the natural groups. A Sequential of
    plain layers (conv, norm, activation) is one stage, not a stack: splitting it would put a
    convolution and its own BatchNorm in different groups."""
    kids = [c for c in m.children() if _has_params(c)]
    return (isinstance(m, (nn.Sequential, nn.ModuleList)) and len(kids) >= 2
            and all(len(list(c.children())) > 0 for c in kids))


def groups_by_generic_rule(module: nn.Module) -> list[LayerGroup]:
    """Any nn.Module: walk its children in registration order (the order of ``__init__``, which
    for nearly every model is the order of ``forward``). A stack (Sequential / ModuleList of
    several stages) contributes one group per stage, descending into a child that is the only
    one with parameters (``encoder`` -> ``encoder.layer``); consecutive small leaf modules
    (conv1, bn1) merge into one group; parameters set directly on a module come first."""
    names = [n for n, _ in module.named_parameters()]
    groups: list[LayerGroup] = []
    direct = [n for n, _ in module.named_parameters(recurse=False)]
    if direct:
        groups.append(LayerGroup("root", tuple(direct)))

    def params_of(prefix: str, m: nn.Module) -> tuple[str, ...]:
        return tuple(f"{prefix}.{n}" if prefix else n for n, _ in m.named_parameters())

    def walk(prefix: str, m: nn.Module) -> None:
        pending: list[tuple[str, nn.Module]] = []

        def flush() -> None:
            if pending:
                label = "+".join(p for p, _ in pending)
                params = tuple(chain.from_iterable(params_of(p, c) for p, c in pending))
                groups.append(LayerGroup(label, params, tuple(p for p, _ in pending)))
                pending.clear()

        stacks = {
            name for name, child in m.named_children()
            if _has_params(child) and _single_param_child_chain(name, child) is not None
        }
        for name, child in m.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if not _has_params(child):
                continue
            inner = _single_param_child_chain(path, child)
            # One stack (features, encoder.layer) gives a group per stage; several side by
            # side (ResNet's layer1..layer4) are the stages themselves, one group each.
            if inner is not None and len(stacks) == 1:
                flush()
                ipath, stack = inner
                own = [f"{ipath}.{n}" for n, _ in stack.named_parameters(recurse=False)]
                if own:
                    groups.append(LayerGroup(f"{ipath}.params", tuple(own)))
                for sname, stage in stack.named_children():
                    if _has_params(stage):
                        spath = f"{ipath}.{sname}"
                        groups.append(LayerGroup(spath, params_of(spath, stage), (spath,)))
            elif len(list(child.children())) == 0:
                pending.append((path, child))  # a leaf layer: merge with its neighbours
            else:
                flush()
                groups.append(LayerGroup(path, params_of(path, child), (path,)))
        flush()

    # Step through wrappers (a backbone holding one model) to the module whose children are
    # the network's stages; otherwise the whole model would land in one group.
    root, root_path = module, ""
    while not direct and not _is_stack(root):
        kids = [(n, c) for n, c in root.named_children() if _has_params(c)]
        if (len(kids) != 1 or len(list(kids[0][1].children())) == 0
                or any(True for _ in kids[0][1].parameters(recurse=False))):
            break
        root_path = f"{root_path}.{kids[0][0]}" if root_path else kids[0][0]
        root = kids[0][1]
    walk(root_path, root)
    return _check_complete(groups, names, "the generic rule")


def _single_param_child_chain(path: str, m: nn.Module) -> tuple[str, nn.Module] | None:
    """Follow a module down while it has exactly one child with parameters and no direct
    parameters of its own; return the first stack met, or None."""
    cur, cur_path = m, path
    for _ in range(4):
        if _is_stack(cur):
            return cur_path, cur
        if any(True for _ in cur.parameters(recurse=False)):
            return None
        kids = [(n, c) for n, c in cur.named_children() if _has_params(c)]
        if len(kids) != 1:
            return None
        cur_path, cur = f"{cur_path}.{kids[0][0]}", kids[0][1]
    return None


def group_names(groups: Iterable[LayerGroup]) -> list[str]:
    return [g.name for g in groups]
