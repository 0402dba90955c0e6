"""Strategies are plug-ins: one file and one registry line each. A toy strategy registered at
run time is accepted by the config, planned, trained and listed like a built-in one, and so is
a key of its own (its ``Settings``); every strategy's keys are refused under another strategy
by one rule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from tlkit import strategies
from tlkit.assemble import assemble
from tlkit.cli import build_parser, main
from tlkit.config import TransferConfig, validate
from tlkit.errors import UserError
from tlkit.select.variants import variant
from tlkit.strategies import PhaseSpec, Strategy, StrategySettings


class BottomHalfFrozen(Strategy):
    """The toy: the top half of the groups (``top_share`` of them) trains from the start."""

    name = "top_half"
    summary = "the top half of the groups trains"

    class Settings(StrategySettings):
        # the share of the layer groups, from the top, that trains
        top_share: float = Field(default=0.5, gt=0, le=1)

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, int(n_groups * settings.top_share),
                          "top half unfrozen")]

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
                                  "lp_ft", "contrastive")
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


def _yaml(tmp_path: Path, *lines: str) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n  source_model: timm:test_efficientnet\n"
                   "  pretrained_weights: none\n  epochs: 2\n"
                   + "".join(f"  {line}\n" for line in lines) + "data:\n  source: digits\n")
    return cfg


def test_a_toy_strategy_s_own_key_is_read_checked_and_refused_elsewhere(toy, tmp_path: Path,
                                                                         capsys):
    # accepted in the YAML under its strategy, read by its phases
    assert main(["plan", str(_yaml(tmp_path, "freeze_strategy: top_half", "top_share: 1.0"))]) == 0
    asm = assemble(validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                                 "pretrained_weights": "none",
                                                 "freeze_strategy": "top_half", "top_share": 1.0},
                             "data": {"source": "digits"}}).transfer_config, 3)
    assert all(r.trainable for r in asm.plan.phases[0].rows)
    # checked like any key: its bound, at its dotted path (exit 2)
    capsys.readouterr()
    assert main(["plan", str(_yaml(tmp_path, "freeze_strategy: top_half", "top_share: 2"))]) == 2
    assert "transfer_config.top_share: Input should be less than or equal to 1" in \
        capsys.readouterr().err
    # refused under another strategy, as every strategy's key is
    assert main(["plan", str(_yaml(tmp_path, "freeze_strategy: none", "top_share: 0.25"))]) == 2
    assert ("top_share is only used by freeze_strategy top_half, not 'none'; remove it or set "
            "freeze_strategy: top_half") in capsys.readouterr().err
    # a variant with another strategy starts from its default
    cfg = validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                        "freeze_strategy": "top_half", "top_share": 0.25},
                    "data": {"source": "digits"}})
    assert cfg.transfer_config.top_share == 0.25
    assert variant(cfg, "none").transfer_config.top_share == 0.5


def test_a_strategy_s_key_goes_with_it():
    strategies.register(BottomHalfFrozen())
    strategies.unregister("top_half")
    with pytest.raises(UserError, match="unknown key 'top_share'"):
        validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                      "top_share": 0.25}, "data": {"source": "digits"}})


def test_a_strategy_cannot_take_a_key_that_is_taken():
    class TakesTopN(BottomHalfFrozen):
        name = "takes_top_n"

        class Settings(StrategySettings):
            top_n: int = 1

    class TakesEpochs(BottomHalfFrozen):
        name = "takes_epochs"

        class Settings(StrategySettings):
            epochs: int = 1

    with pytest.raises(ValueError, match="top_n \\(top_n_unfrozen\\)"):
        strategies.register(TakesTopN())
    with pytest.raises(ValueError, match="epochs are transfer_config keys already"):
        strategies.register(TakesEpochs())
    assert "takes_epochs" not in strategies.names()
    assert "epochs" in TransferConfig.model_fields  # as it was


def test_a_strategy_written_with_a_keys_tuple_is_refused_with_the_way_to_declare_them():
    class OldStyle(BottomHalfFrozen):
        name = "old_style"
        keys = ("share",)  # type: ignore[assignment]

    with pytest.raises(ValueError, match="class Settings\\(StrategySettings\\)"):
        strategies.register(OldStyle())
    assert "old_style" not in strategies.names()


# a value other than the default for each built-in strategy's own keys
OWN_VALUES: dict[str, Any] = {"top_n": 3, "unfreeze_schedule": [{"epoch": 1, "unfreeze": "all"}],
                              "lp_epochs": 1, "lora": {"r": 4}, "contrastive_pairs": 8,
                              "contrastive_loss": "supcon", "contrastive_lr": 1e-5,
                              "contrastive_epochs": 2, "contrastive_batch_size": 8}


@pytest.mark.parametrize("owner,key", strategies.owned_keys())
def test_every_strategy_s_keys_are_refused_under_another_strategy_by_one_rule(owner, key):
    def check(strategy: str) -> None:
        tc = {"source_model": "timm:test_efficientnet", "epochs": 3, "freeze_strategy": strategy}
        if strategy == "gradual":  # what it needs, so that its own check passes
            tc["unfreeze_schedule"] = OWN_VALUES["unfreeze_schedule"]
        validate({"transfer_config": {**tc, key: OWN_VALUES[key]}, "data": {"source": "digits"}})

    check(owner)
    check("auto")  # auto's candidates read the keys the config gives them
    for other in strategies.names():
        if other != owner:
            section = "the lora section" if key == "lora" else key
            with pytest.raises(UserError, match=re.escape(
                    f"transfer_config: {section} is only used by freeze_strategy {owner}, not "
                    f"'{other}'; remove it or set freeze_strategy: {owner}")):
                check(other)
