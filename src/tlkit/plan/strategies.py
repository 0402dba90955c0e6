"""Freeze strategies as pure functions: which top layer groups train in each phase.

A phase is a range of epochs with a fixed set of trainable groups. Groups are counted from the top
(output side): ``trainable_top = 2`` means the two highest backbone groups train, with the head.
In an ``adapters_only`` phase (LoRA) a "trainable" group trains only its adapter matrices; its
pretrained weights stay frozen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlkit.errors import UserError


@dataclass(frozen=True)
class PhaseSpec:
    start_epoch: int  # first epoch of the phase, counted from 0
    end_epoch: int  # exclusive
    trainable_top: int  # how many top backbone groups train (0 = head only)
    label: str
    adapters_only: bool = False  # LoRA: only the adapter parameters of those groups train


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


def phases_for(
    strategy: str,
    n_groups: int,
    epochs: int,
    top_n: int = 2,
    schedule: list[tuple[int, str]] | None = None,
    lp_epochs: int | None = None,
) -> list[PhaseSpec]:
    if strategy == "all_frozen":
        return [PhaseSpec(0, epochs, 0, "feature extraction: head only")]
    if strategy == "none":
        return [PhaseSpec(0, epochs, n_groups, "full fine-tuning")]
    if strategy == "top_n_unfrozen":
        if top_n > n_groups:
            raise UserError(
                f"top_n {top_n} is more than the backbone's {n_groups} layer groups; "
                f"set transfer_config.top_n to at most {n_groups} (or use freeze_strategy: none)"
            )
        return [PhaseSpec(0, epochs, top_n, f"top {top_n} groups unfrozen")]
    if strategy == "gradual":
        steps = sorted(schedule or [])
        phases: list[PhaseSpec] = []
        if not steps or steps[0][0] > 0:
            first_end = steps[0][0] if steps else epochs
            phases.append(PhaseSpec(0, first_end, 0, "head only"))
        for i, (epoch, selector) in enumerate(steps):
            end = steps[i + 1][0] if i + 1 < len(steps) else epochs
            count = selector_count(selector, n_groups)
            if phases and count < phases[-1].trainable_top:
                raise UserError(
                    f"unfreeze_schedule step at epoch {epoch} ({selector}) would freeze groups "
                    "that an earlier step unfroze; each step must unfreeze at least as much"
                )
            phases.append(PhaseSpec(epoch, end, count, f"unfreeze {selector}"))
        return phases
    if strategy == "lora":
        return [PhaseSpec(0, epochs, n_groups, "LoRA: adapters and head train, base weights frozen",
                          adapters_only=True)]
    if strategy == "lp_ft":
        # Kumar et al. (2022): a probe trained to convergence first, so that fine-tuning starts
        # from a good head and does not distort the features while a random head settles.
        lp = lp_epochs if lp_epochs is not None else max(1, epochs // 2)
        if not 1 <= lp < epochs:
            raise UserError(
                f"lp_epochs {lp} must be at least 1 and below epochs {epochs}, so that both the "
                "linear probe and the fine-tuning get epochs"
            )
        return [PhaseSpec(0, lp, 0, "linear probe: head only, backbone frozen"),
                PhaseSpec(lp, epochs, n_groups,
                          "fine-tune everything at the small rates, from the probed head")]
    raise UserError(
        f"unknown freeze_strategy {strategy!r}; choose all_frozen, top_n_unfrozen, gradual, none, "
        "lora, lp_ft"
    )


def phase_at(phases: list[PhaseSpec], epoch: int) -> int:
    """Index of the phase that covers ``epoch``."""
    for i, p in enumerate(phases):
        if p.start_epoch <= epoch < p.end_epoch:
            return i
    return len(phases) - 1
