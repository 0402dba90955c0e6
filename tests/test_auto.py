"""freeze_strategy auto: trials of the candidate strategies by successive halving inside a
budget, the pick trained, every trial recorded, and a resumed run training the same pick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tlkit.config import validate
from tlkit.errors import UserError
from tlkit.run import fit_run
from tlkit.select import auto, candidates, record




@pytest.fixture
def no_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random-feature backbone loses to raw pixels on digits (auto would rightly pick the
    pixels' model, tests/test_pixels.py): these tests are about the transfer candidates."""
    monkeypatch.setattr(auto, "pixels_win", lambda *a, **k: None)


@pytest.fixture(autouse=True)
def _tiny_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models fit in milliseconds: these tests set auto_budget for them, so the floor a
    default fit counts for (30 s, for real small data) is off here; its own test below."""
    monkeypatch.setattr(auto, "FLOOR_SECONDS", 0.0)


def _raw(**tc: Any) -> dict[str, Any]:
    return {"transfer_config": {"source_model": "timm:test_efficientnet",
                                "pretrained_weights": "none", "freeze_strategy": "auto",
                                "epochs": 4, "head_lr": 1e-2, "cache": {"disk": False}, **tc},
            "data": {"source": "digits", "image_size": 32, "limit": 200}}


@pytest.mark.slow
def test_auto_runs_trials_trains_the_pick_and_records_every_trial(tmp_path: Path, no_pixels):
    events: list[str] = []
    # 300: the budget no longer counts the test split (a loaded machine left 200 too tight)
    summary = fit_run(validate(_raw(auto_budget=300)), tmp_path / "run",
                      event=lambda kind, info: events.append(str(info.get("what", ""))))
    rec = summary["auto"]
    assert rec["chosen"] in candidates.candidates() and summary["strategy"] == rec["chosen"]
    tried = {t["strategy"] for t in rec["trials"] if t["rung"] >= 0}
    assert len(tried) >= 2  # a generous budget: fine-tuning candidates ran trials
    # every trial that ran has its loss; one the budget dropped at a rung (a loaded machine:
    # select/budget.py records it as "skipped at rung N") has none
    ran = [t for t in rec["trials"] if t["rung"] >= 0 and not t["note"].startswith("skipped")]
    assert ran and all(t["val_loss"] is not None for t in ran), rec["trials"]
    # each candidate accounted for, and the classical baseline measured beside them
    assert {t["strategy"] for t in rec["trials"]} == {*candidates.candidates(), "classical"}
    assert rec["classical"]["name"] == "pixels + logistic regression"
    assert rec["classical"]["val_loss"] > 0 and isinstance(rec["classical"]["beats_pick"], bool)
    # the pick has the lowest validation loss among those compared at the last rung
    assert any("chose " + rec["chosen"] in e for e in events)
    # the run directory keeps the user's config (auto) and the pick
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())[
        "transfer_config"]["freeze_strategy"] == "auto"
    assert json.loads((tmp_path / "run" / "auto.json").read_text())["chosen"] == rec["chosen"]
    assert summary["test"]["accuracy"] > 0.1
    from tlkit.report import write_report

    html = write_report(tmp_path / "run").read_text()
    assert "freeze_strategy auto: the trials" in html and f"picked {rec['chosen']}" in html


@pytest.mark.slow
def test_a_small_budget_skips_the_costly_candidates_with_a_reason(tmp_path: Path, no_pixels):
    summary = fit_run(validate(_raw(auto_budget=1)), tmp_path / "run")
    rec = summary["auto"]
    assert rec["chosen"] == "all_frozen"
    skipped = [t for t in rec["trials"] if t["note"].startswith("skipped")]
    assert {t["strategy"] for t in skipped} == set(candidates.candidates()) - {"all_frozen"}
    assert all("budget" in t["note"] for t in skipped)


@pytest.mark.slow
def test_a_resumed_auto_run_trains_the_recorded_pick_without_new_trials(tmp_path, monkeypatch):
    cfg = validate(_raw(auto_budget=200))
    first = fit_run(cfg, tmp_path / "run")

    def no_trials(*a: Any, **k: Any) -> None:
        raise AssertionError("a resumed run chose again")

    monkeypatch.setattr(auto, "choose", no_trials)
    (tmp_path / "run" / "summary.json").unlink()  # as if killed before the end
    again = fit_run(cfg, tmp_path / "run", resume=True)
    assert again["auto"]["chosen"] == first["auto"]["chosen"]


def test_auto_budget_belongs_to_auto():
    raw = _raw(auto_budget=3)
    raw["transfer_config"]["freeze_strategy"] = "none"
    with pytest.raises(UserError, match="auto_budget is only used by freeze_strategy auto"):
        validate(raw)


def test_the_frozen_head_must_beat_the_fine_tuning_trial_by_more_than_the_noise():
    trial = [0.70, 0.60, 0.80, 0.65, 0.75, 0.70, 0.55, 0.85, 0.70, 0.70]
    close = [x - 0.02 + (0.1 if i % 2 else -0.1) for i, x in enumerate(trial)]
    far = [x - 0.4 for x in trial]
    compared = ["all_frozen", "lora"]
    chosen, why = auto._decide("lora", {"all_frozen": 0.68, "lora": 0.70},
                               {"all_frozen": close, "lora": trial}, compared)
    assert chosen == "lora" and "within 2 paired standard errors" in why[0]
    chosen, why = auto._decide("lora", {"all_frozen": 0.30, "lora": 0.70},
                               {"all_frozen": far, "lora": trial}, compared)
    assert chosen == "all_frozen" and "more than 2 paired standard errors" in why[0]
    # lp_ft's trial kept its linear probe (Fashion-MNIST at 64 a class: the frozen head's
    # 0.4705 on every example): the frozen head, which costs nothing more to train
    chosen, why = auto._decide("lp_ft", {"all_frozen": 0.70, "lp_ft": 0.70},
                               {"all_frozen": trial, "lp_ft": list(trial)}, compared)
    assert chosen == "all_frozen" and "did not improve on the frozen head" in why[0]


def test_where_the_pixels_beat_the_frozen_head_a_fine_tuner_can_still_beat_the_pixels(
        monkeypatch: pytest.MonkeyPatch):
    """The pixels' model takes the frozen head's place against the fine-tuning pick (digits
    at 64 labels a class: the pixels 0.950 against full fine-tuning's 0.975): the fine-tuner
    is the pick unless the pixels' validation loss is lower by more than the noise."""
    from tlkit.select.pixels import PixelsWin

    trial = [0.30, 0.20, 0.40, 0.25, 0.35, 0.30, 0.15, 0.45, 0.30, 0.30]

    def run(pixel_losses: list[float]) -> tuple[str, list[str], list[str]]:
        monkeypatch.setattr(auto, "pixels_win", lambda *a, **k: PixelsWin(
            "raw pixels beat the pretrained features", pixel_losses))

        def halving(base, alive, costs, scores, losses, trials, *a, **k):
            losses["lora"], scores["lora"] = trial, float(np.mean(trial))
            trials.append(record.Trial("lora", 0, 1, 1, scores["lora"]))
            return "lora"
        monkeypatch.setattr(auto, "halving", halving)
        trials: list[record.Trial] = []
        losses = {"all_frozen": [x + 0.5 for x in trial]}
        chosen, reasons, rule = auto._by_validation(
            None, {"lora": 10.0}, {"all_frozen": 0.8}, losses, trials, 100.0, 0.0, "accuracy",
            lambda *a: None, 0.01)
        return chosen, reasons, [t.strategy for t in trials]

    # a fine-tuner well below the pixels' validation loss: the fine-tuner, not the pixels
    chosen, reasons, ran = run([x + 0.4 for x in trial])
    assert chosen == "lora" and ran == ["lora"]
    assert reasons[0] == "raw pixels beat the pretrained features"
    assert "the pixels' model 0.700" in reasons[1] and "within 2 paired" in reasons[1]
    # the pixels well below the fine-tuner's: the pixels' model
    chosen, reasons, _ = run([x - 0.14 + (0.01 if i % 2 else -0.01) for i, x in enumerate(trial)])
    assert chosen == "pixels"
    assert "the pixels' model's validation loss" in reasons[1]
    # one fine-tuner's training fits but not its trial as well: it is not picked unmeasured
    monkeypatch.setattr(auto, "halving", lambda *a, **k: None)
    trials = []
    chosen, reasons = auto._pick(None, ["top_n_unfrozen"], {"top_n_unfrozen": 500.0}, {}, {},
                                 trials, 600.0, 0.0, "accuracy", lambda *a: None, 0.01)
    assert chosen == "all_frozen" and "raise auto_budget" in reasons[0]
    assert trials[-1].strategy == "top_n_unfrozen" and trials[-1].note.startswith("skipped")
    chosen, _ = auto._pick(None, ["lora"], {"lora": 500.0}, {}, {}, [], 600.0, 0.0, "accuracy",
                           lambda *a: None, 0.01, baseline="pixels")
    assert chosen == "pixels"
    # no fine-tuner fits the budget: the pixels' model, saying so
    chosen, reasons = auto._pick(None, [], {}, {}, {}, [], 0.0, 0.0, "accuracy",
                                 lambda *a: None, 0.01, baseline="pixels")
    assert chosen == "pixels" and "the pixels' model is the pick" in reasons[0]


def test_a_trial_is_estimated_at_the_length_it_runs_and_not_run_twice_at_that_length(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """contrastive's trial keeps its whole contrastive phase (digits at 64 a class: estimated
    at a quarter, 52 s, it ran 249 s): its budget check counts what it runs, and at the next
    rung, the same length again, its result carries instead of a second run."""
    import time

    from tlkit.select import budget

    # (epochs, min_steps) of each rung's trial, as the strategies lengthen them
    lengths = {"contrastive": {4: (2, 8), 2: (2, 8)}, "lora": {4: (1, 4), 2: (2, 8)},
               "none": {4: (1, 4), 2: (2, 8)}}
    loss = {"contrastive": 0.2, "lora": 0.3, "none": 0.4}
    monkeypatch.setattr(budget, "trial_length", lambda base, c, d: lengths[c][d])
    estimated: list[tuple[str, int]] = []

    def estimate(base, c, per_example, epochs, min_steps):
        estimated.append((c, epochs))
        return None, 10.0 * epochs
    monkeypatch.setattr(budget, "estimate", estimate)
    ran: list[tuple[str, int]] = []

    def run_trial(base, c, epochs, min_steps, rung, losses):
        ran.append((c, rung))
        losses[c] = [loss[c] - 0.01 * rung] * 4
        return record.Trial(c, rung, epochs, min_steps, loss[c] - 0.01 * rung, 0.9, 1.0)
    monkeypatch.setattr(budget, "run_trial", run_trial)

    def halve(room: float) -> tuple[str | None, list[record.Trial], list[str]]:
        ran.clear()
        estimated.clear()
        alive, trials = list(loss), []
        best = budget.halving(None, alive, {c: 20.0 for c in loss}, {}, {}, trials, room,
                              time.perf_counter(), "accuracy", lambda *a: None, 0.01)
        return best, trials, alive

    best, trials, alive = halve(1000.0)
    assert best == "contrastive" and alive == ["contrastive"]
    # contrastive's trials are estimated at their 2 epochs (20 s), the others' at theirs
    assert estimated == [("contrastive", 2), ("lora", 1), ("none", 1), ("lora", 2)]
    # rung 1: lora runs its longer trial, contrastive's (the same length) is not run again
    assert ran == [("contrastive", 0), ("lora", 0), ("none", 0), ("lora", 1)]
    carried = next(t for t in trials if t.strategy == "contrastive" and t.rung == 1)
    assert carried.seconds == 0.0 and carried.val_loss == 0.2 and "carries" in carried.note
    # a budget for the three trials at a quarter (3 x 5 s + 20 s) but not at the length
    # contrastive's runs (20 + 10 + 10 + 20 s): the candidate whose trial and training cost
    # most is skipped
    best, trials, _ = halve(45.0)
    assert ran == [("lora", 0), ("none", 0)] and best == "lora"
    assert [t.strategy for t in trials if "skipped at rung 0" in t.note] == ["contrastive"]


def _small(**tc: Any) -> Any:
    raw = _raw(**tc)
    raw["data"]["limit"] = 40
    return validate(raw)


@pytest.mark.slow
def test_a_validation_split_too_small_for_trials_chooses_by_k_fold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # 40 examples: a validation split of 4, too few to tell trials apart: every candidate whose
    # fold trials fit is scored out of fold over the 40 (tests/test_auto_kfold.py has more);
    # one fine-tuning candidate and a budget it surely fits, to keep the test short and steady
    from tlkit.distributed import setup

    monkeypatch.setattr(auto, "fine_tuners", lambda: ["top_n_unfrozen"])
    cfg = _small(auto_budget=1000, epochs=2)
    choice = auto.choose(cfg, setup("cpu"), lambda kind, info: None)
    scored = {t.strategy for t in choice.trials if t.cv}
    assert scored == {"all_frozen", "pixels", "top_n_unfrozen"} and choice.chosen in scored
    assert all(t.rung == -1 for t in choice.trials)  # no validation trial ran
    assert "cross-validation over the 40 training and validation examples" in choice.reasons[0]
    # the pick trains as its folds did: auto's rates where the config leaves them unset, what
    # the config sets kept
    picked = auto.chosen_config(cfg, choice).transfer_config
    assert picked.epochs == 2
    if choice.chosen != "pixels":
        assert picked.freeze_strategy == choice.chosen
    if choice.rates:
        assert choice.rates["backbone_lr"] == candidates.TUNING["image"]["backbone_lr"]
        assert "head_lr" not in choice.rates and "epochs" not in choice.rates
        assert picked.head_lr == 1e-2


def test_the_head_does_not_depend_on_what_loaded_before_in_the_process():
    """auto's trials load and train before the pick's fit, in the same process: the pick's head
    must start as a fit of its own would (the backbone's loading draws from a copy of the
    generator)."""
    import torch

    from tlkit.assemble import assemble
    from tlkit.heads import build_head

    tc = validate(_raw(freeze_strategy="all_frozen")).transfer_config
    heads = []
    for before in (None, "timm:test_vit"):
        if before is not None:
            from tlkit.backbones import load_backbone

            load_backbone(before, "none", tc.pooling, None)
        torch.manual_seed(7)
        asm = assemble(tc, 10)
        heads.append(torch.cat([p.detach().flatten() for p in asm.model.head.parameters()]))
    torch.manual_seed(7)
    own = build_head(asm.model.backbone.feature_dim, 10, "linear", 256, tc.dropout)
    assert torch.equal(heads[0], heads[1])
    assert torch.equal(heads[0], torch.cat([p.detach().flatten() for p in own.parameters()]))


def test_advise_says_a_fine_tuning_pick_with_autos_rates(monkeypatch: pytest.MonkeyPatch):
    """advise's recommendation reproduces auto's pick when set by hand: the strategy, its own
    keys and the rates auto chose (the keys the config left unset)."""
    from tlkit.select import advise

    raw = _raw()
    raw["transfer_config"]["freeze_strategy"] = "all_frozen"
    cfg = validate(raw)
    pick = record.Choice("top_n_unfrozen", {"top_n": 2}, 10.0, 1.0, 2.0, "accuracy",
                       rates={"backbone_lr": 3e-4, "lr_decay_per_layer": 0.7})
    monkeypatch.setattr(advise, "choose", lambda *a, **k: pick)
    adv = advise.measure(cfg, advise.Advice("all_frozen", {}))
    assert adv.strategy == "top_n_unfrozen"
    assert {"transfer_config.freeze_strategy=top_n_unfrozen", "transfer_config.top_n=2",
            "transfer_config.backbone_lr=0.0003",
            "transfer_config.lr_decay_per_layer=0.7"} <= set(adv.overrides())
    assert "backbone_lr 0.0003 x 0.7^(L - l)" in adv.length


def test_lp_ft_is_a_candidate_of_a_one_epoch_config_too() -> None:
    # epochs: 1 leaves lp_ft no epoch to fine-tune in; its candidate takes two (a probe, then
    # tuning) instead of refusing the whole of auto (advise stopped on it)
    cfg = validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                        "pretrained_weights": "none", "freeze_strategy": "auto",
                                        "epochs": 1},
                    "data": {"source": "digits"}})
    lp = candidates.candidate_config(cfg, "lp_ft").transfer_config
    assert lp.freeze_strategy == "lp_ft" and lp.epochs == 2
    assert candidates.candidate_config(cfg, "none").transfer_config.epochs == 1
