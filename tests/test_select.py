"""What chooses reads the registry, not strategy names: freeze_strategy auto's candidates and
their order (``Strategy.auto_rank``), its frozen head (``trains_backbone``), advise's table
(``role``); and "the config for strategy X" is one function (``tlkit.inputs.config_for``)."""

from __future__ import annotations

from typing import Any

from tlkit import strategies
from tlkit.config import validate
from tlkit.inputs import config_for
from tlkit.select.candidates import candidate_config, candidates, fine_tuners, frozen_head
from tlkit.strategies import PhaseSpec, Strategy
from tlkit.strategies.base import FEATURE_EXTRACTION, FULL, PARTIAL


def _auto(**tc: Any) -> Any:
    return validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                         "pretrained_weights": "none", "freeze_strategy": "auto",
                                         **tc},
                     "data": {"source": "digits"}})


def test_autos_candidates_and_their_order_come_from_the_registry():
    # the built-in ones in their order; a strategy registered with an auto_rank joins them
    # (contrastive, say) in its place
    ranked = {n for n in strategies.names() if strategies.get(n).auto_rank is not None}
    assert set(candidates()) == ranked
    first = ["all_frozen", "top_n_unfrozen", "lp_ft", "none", "lora"]
    assert [c for c in candidates() if c in first] == first
    assert frozen_head() == "all_frozen"
    assert fine_tuners() == [c for c in candidates() if c != "all_frozen"]
    assert [strategies.with_role(r) for r in (FEATURE_EXTRACTION, PARTIAL, FULL)] == [
        "all_frozen", "top_n_unfrozen", "none"]


class LastResort(Strategy):
    name = "last_resort"
    summary = "a toy auto candidate"
    auto_rank = 99

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, n_groups, "everything")]


def test_a_registered_strategy_with_an_auto_rank_is_a_candidate_in_its_place():
    strategies.register(LastResort())
    try:
        assert candidates()[-1] == "last_resort" and "last_resort" in fine_tuners()
    finally:
        strategies.unregister("last_resort")
    assert "last_resort" not in candidates()


def test_the_config_for_a_strategy_keeps_its_own_keys_and_resets_the_others():
    cfg = _auto(epochs=6, lp_epochs=2, lora={"r": 4})
    lp = config_for(cfg, "lp_ft", reason="test").transfer_config
    assert lp.freeze_strategy == "lp_ft" and lp.lp_epochs == 2 and lp.lora is None
    lora = config_for(cfg, "lora", {"head_lr": 0.5}, reason="test").transfer_config
    assert lora.lora is not None and lora.lora.r == 4 and lora.lp_epochs is None
    assert lora.head_lr == 0.5


def test_lp_ft_fits_autos_length_itself():
    # auto gives every candidate the same length; lp_ft needs a probe epoch and a tuning one
    cfg = _auto(epochs=4, lp_epochs=3)
    short = candidate_config(cfg, "lp_ft", epochs=1).transfer_config
    assert short.epochs == 2 and short.lp_epochs is None  # lp_epochs 3 would leave none
    assert candidate_config(cfg, "none", epochs=1).transfer_config.epochs == 1
