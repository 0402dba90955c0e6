"""What a freeze strategy is: a small interface, and the phases it returns as data.

A phase is a range of epochs with a fixed set of trainable groups. Groups are counted from the top
(output side): ``trainable_top = 2`` means the two highest backbone groups train, with the head.
In an ``adapters_only`` phase (LoRA) a "trainable" group trains only its adapter matrices; its
pretrained weights stay frozen.

A strategy reads its settings through ``settings``: the validated ``transfer_config`` while the
config is checked, its ``PlanSettings`` view afterwards (the same attribute names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tlkit.errors import UserError


@dataclass(frozen=True)
class PhaseSpec:
    start_epoch: int  # first epoch of the phase, counted from 0
    end_epoch: int  # exclusive
    trainable_top: int  # how many top backbone groups train (0 = head only)
    label: str
    adapters_only: bool = False  # LoRA: only the adapter parameters of those groups train
    # a linear probe: the head alone, to convergence (the convex solver on cached features)
    converge_head: bool = False


class Strategy:
    """A freeze strategy: the interface every file in ``tlkit.strategies`` implements.

    ``name`` is the value of ``transfer_config.freeze_strategy``; ``keys`` are the
    transfer_config keys that only this strategy reads (the config refuses them under another
    strategy). ``phases`` is the one method a strategy must give; the others default to doing
    nothing."""

    name: str = ""
    summary: str = ""  # one line, for `tlkit --help`, `compare` and the docs
    keys: tuple[str, ...] = ()

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        """The phases, in epoch order, for a backbone of ``n_groups`` layer groups."""
        raise NotImplementedError

    def check(self, settings: Any) -> None:
        """Raise ValueError (a config error naming the fix) when the settings cannot work."""
        return None

    def notes(self, settings: Any, backbone: Any) -> list[str]:
        """What the plan's table does not show (printed below it)."""
        return []

    def prepare(self, backbone: Any, groups: list[Any], settings: Any) -> list[Any]:
        """Change the backbone before the plan is built (LoRA adds its adapters); returns the
        layer groups with every parameter placed."""
        return groups

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        """Turn ``tc`` (another config's transfer_config, as a dict) into this strategy's
        variant for ``compare``: set the keys this strategy needs. ``own`` is the original
        validated transfer_config, ``rates`` its diagnostics section."""
        return None


def selector_count(selector: str, n_groups: int) -> int:
    """How many top groups a schedule selector names."""
    if selector == "all":
        return n_groups
    if selector == "last_block":
        return min(1, n_groups)
    if selector == "last_two_blocks":
        return min(2, n_groups)
    m = re.fullmatch(r"last_(\d+)_blocks", selector)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise UserError(f"unfreeze selector {selector!r}: N must be at least 1")
        if n > n_groups:
            raise UserError(
                f"unfreeze selector {selector!r} asks for {n} blocks but the backbone has "
                f"{n_groups} layer groups; use all, or a smaller N"
            )
        return n
    raise UserError(f"unknown unfreeze selector {selector!r}")


def phase_at(phases: list[Any], epoch: int) -> int:
    """Index of the phase that covers ``epoch``."""
    for i, p in enumerate(phases):
        if p.start_epoch <= epoch < p.end_epoch:
            return i
    return len(phases) - 1
