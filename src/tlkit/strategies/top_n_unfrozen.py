"""Partial fine-tuning: the top ``top_n`` layer groups train with the head, the rest stay
frozen (and are computed once, ``tlkit.cache``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tlkit.errors import UserError
from tlkit.strategies.base import PARTIAL, PhaseSpec, Strategy, StrategySettings


class TopNUnfrozen(Strategy):
    name = "top_n_unfrozen"
    summary = "the top top_n groups train, the lower ones stay frozen"
    auto_rank = 1  # the cheapest fine-tuning candidate: its frozen bottom is cached
    role = PARTIAL

    class Settings(StrategySettings):
        top_n: int = Field(default=2, ge=0, description="trainable top groups for top_n_unfrozen")

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        top_n = settings.top_n
        if top_n > n_groups:
            raise UserError(
                f"top_n {top_n} is more than the backbone's {n_groups} layer groups; "
                f"set transfer_config.top_n to at most {n_groups} (or use freeze_strategy: none)"
            )
        return [PhaseSpec(0, settings.epochs, top_n, f"top {top_n} groups unfrozen")]

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        tc["top_n"] = own.top_n  # as the config has it (its strategy's, or auto's candidate's)


STRATEGY = TopNUnfrozen()
