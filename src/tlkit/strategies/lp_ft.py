"""Linear probe, then fine-tune (Kumar et al., 2022): the head trains alone to convergence first,
so that fine-tuning starts from a good head and does not distort the features while a random
head settles; then every group trains at its small rate."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tlkit.errors import UserError
from tlkit.strategies.base import PhaseSpec, Strategy, StrategySettings


def lp_epochs_of(settings: Any) -> int:
    """Epochs of the linear-probe phase: ``lp_epochs``, or half the epochs (at least 1)."""
    return settings.lp_epochs if settings.lp_epochs is not None else max(1, settings.epochs // 2)


class LinearProbeThenFineTune(Strategy):
    name = "lp_ft"
    summary = "linear probe, then fine-tune everything from the probed head"
    auto_rank = 2

    class Settings(StrategySettings):
        # epochs of the linear probe (phase 1, head only) before fine-tuning everything;
        # null: half the epochs.
        lp_epochs: int | None = Field(default=None, ge=1)

    def check(self, settings: Any) -> None:
        lp = lp_epochs_of(settings)
        if lp >= settings.epochs:
            raise ValueError(
                f"lp_epochs {lp} leaves no epoch for fine-tuning (epochs {settings.epochs}); "
                f"set lp_epochs below epochs, for example lp_epochs: "
                f"{max(1, settings.epochs // 2)}"
            )

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        epochs = settings.epochs
        lp = lp_epochs_of(settings)
        if not 1 <= lp < epochs:
            raise UserError(
                f"lp_epochs {lp} must be at least 1 and below epochs {epochs}, so that both the "
                "linear probe and the fine-tuning get epochs"
            )
        return [PhaseSpec(0, lp, 0, "linear probe: head only, backbone frozen",
                          converge_head=True),
                PhaseSpec(lp, epochs, n_groups,
                          "fine-tune everything at the small rates, from the probed head")]

    def notes(self, settings: Any, backbone: Any) -> list[str]:
        return ["lp_ft (Kumar et al., 2022): phase 2 fine-tunes from the head phase 1 trained; "
                "each group keeps its rate in both phases (the backbone's are the small ones)."]

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        tc["lp_epochs"] = own.lp_epochs if own.freeze_strategy == self.name else None

    def fit_settings(self, tc: dict[str, Any]) -> None:
        # a probe epoch, then at least one of tuning (auto's length may be 1 epoch)
        tc["epochs"] = max(tc["epochs"], 2)
        if tc.get("lp_epochs") and tc["lp_epochs"] >= tc["epochs"]:
            tc["lp_epochs"] = None


STRATEGY = LinearProbeThenFineTune()
