"""Strategies are plug-ins: one file and one registry line each. A toy strategy registered at
run time is accepted by the config, planned, trained and listed like a built-in one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tlkit import strategies
from tlkit.assemble import assemble
from tlkit.cli import build_parser, main
from tlkit.compare import variant
from tlkit.config import TransferConfig, validate
from tlkit.errors import UserError
from tlkit.strategies import PhaseSpec, Strategy


class BottomHalfFrozen(Strategy):
    """The toy: the top half of the groups trains from the start."""

    name = "top_half"
    summary = "the top half of the groups trains"

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, n_groups // 2, "top half unfrozen")]

    def check(self, settings: Any) -> None:
        if settings.epochs > 50:
            raise ValueError("top_half is a toy: at most 50 epochs")


@pytest.fixture
def toy():
    strategies.register(BottomHalfFrozen())
    yield
    strategies.unregister("top_half")


def _tc(**kw: Any) -> TransferConfig:
    return TransferConfig(source_model="timm:test_efficientnet", pretrained_weights="none", **kw)


def test_the_builtin_strategies_come_from_one_registry():
    assert strategies.names() == ("all_frozen", "top_n_unfrozen", "gradual", "none", "lora",
                                  "lp_ft")
    help_text = build_parser().format_help()
    for name in strategies.names():
        assert name in help_text  # the command line's help lists each, with its summary
        assert strategies.get(name).summary in help_text


def test_an_unregistered_strategy_is_refused_with_the_list():
    with pytest.raises(UserError, match="'top_half' is not one of 'all_frozen'"):
        validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                      "freeze_strategy": "top_half"},
                  "data": {"source": "digits"}})


def test_a_registered_toy_strategy_is_planned_checked_and_compared(toy):
    asm = assemble(_tc(freeze_strategy="top_half", epochs=2), 3)
    n = len(asm.groups)
    flags = [r.trainable for r in asm.plan.phases[0].rows[:n]]
    assert flags == [False] * (n - n // 2) + [True] * (n // 2)
    assert asm.plan.strategy == "top_half"
    # its own check runs as part of the config's validation
    with pytest.raises(UserError, match="at most 50 epochs"):
        validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                      "freeze_strategy": "top_half", "epochs": 60},
                  "data": {"source": "digits"}})
    # compare builds its variant like any other strategy's
    cfg = validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                        "freeze_strategy": "gradual", "epochs": 3,
                                        "unfreeze_schedule": [{"epoch": 1, "unfreeze": "all"}]},
                    "data": {"source": "digits"}})
    assert variant(cfg, "top_half").transfer_config.freeze_strategy == "top_half"
    assert variant(cfg, "top_half").transfer_config.unfreeze_schedule == []


def test_a_toy_strategy_prints_its_plan(toy, tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n  source_model: timm:test_efficientnet\n"
                   "  pretrained_weights: none\n  freeze_strategy: top_half\n  epochs: 2\n"
                   "data:\n  source: digits\n")
    assert main(["plan", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "strategy top_half" in out and "top half unfrozen" in out


def test_a_strategy_name_is_registered_once(toy):
    with pytest.raises(ValueError, match="taken"):
        strategies.register(BottomHalfFrozen())
    with pytest.raises(ValueError, match="built in"):
        strategies.unregister("gradual")
