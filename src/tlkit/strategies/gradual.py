"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018): the head trains alone first, then the
``unfreeze_schedule`` unfreezes groups from the top down at the epochs it names. Each step must
unfreeze at least as much as the one before; a phase change flips requires_grad and nothing is
rebuilt (``tlkit.plan.apply``)."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlkit.errors import UserError
from tlkit.strategies.base import PhaseSpec, Strategy, StrategySettings, selector_count

SELECTOR_RE = re.compile(r"^(last_block|last_two_blocks|last_(\d+)_blocks|all)$")


class UnfreezeStep(BaseModel):
    """From the start of ``epoch`` (counted from 0), the selected top groups train too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    epoch: int = Field(ge=0)
    unfreeze: str

    @field_validator("unfreeze")
    @classmethod
    def _selector(cls, v: str) -> str:
        if not SELECTOR_RE.match(v):
            raise ValueError(
                f"unknown selector {v!r}; use last_block, last_two_blocks, last_N_blocks "
                "(for example last_3_blocks) or all"
            )
        return v


def default_schedule(epochs: int) -> list[dict[str, Any]]:
    """Unfreeze from the top, one step per epoch after the first, everything by the middle."""
    if epochs <= 1:
        return [{"epoch": 0, "unfreeze": "all"}]
    steps = [(1, "last_block"), (2, "last_two_blocks"), (max(3, math.ceil(epochs / 2)), "all")]
    kept = [s for s in steps if s[0] < epochs]
    kept[-1] = (kept[-1][0], "all")
    return [{"epoch": e, "unfreeze": u} for e, u in kept]


class Gradual(Strategy):
    name = "gradual"
    summary = "gradual unfreezing: the head first, then groups from the top down on a schedule"

    class Settings(StrategySettings):
        unfreeze_schedule: list[UnfreezeStep] = Field(default_factory=list)

    def check(self, settings: Any) -> None:
        schedule = settings.unfreeze_schedule
        if not schedule:
            raise ValueError(
                "freeze_strategy gradual needs an unfreeze_schedule, for example "
                "[{epoch: 1, unfreeze: last_block}, {epoch: 2, unfreeze: all}]"
            )
        epochs = [s.epoch for s in schedule]
        if epochs != sorted(set(epochs)):
            raise ValueError("unfreeze_schedule epochs must increase strictly")
        if epochs[-1] >= settings.epochs:
            raise ValueError(
                f"unfreeze_schedule has a step at epoch {epochs[-1]} but training stops after "
                f"{settings.epochs} epochs (epochs count from 0); raise epochs or move the step"
            )

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        epochs = settings.epochs
        steps = sorted((s.epoch, s.unfreeze) for s in settings.unfreeze_schedule)
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

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        tc["unfreeze_schedule"] = ([s.model_dump() for s in own.unfreeze_schedule]
                                   if own.freeze_strategy == self.name
                                   else default_schedule(own.epochs))


STRATEGY = Gradual()
