"""freeze_strategy auto below 20 validation examples: every candidate scored by k-fold
cross-validation over the training and validation examples (the same folds for all), the pick
by the measured rule (tlkit.select.rule), the scores and the rule in the record; and the budget
counting training work only, not the test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_classical import template_images
from tlkit import strategies
from tlkit.config import validate
from tlkit.distributed import setup
from tlkit.run import fit_run
from tlkit.select import auto, candidates, kfold, record, rule
from tlkit.select.trials import Base
from tlkit.strategies import PhaseSpec, Strategy


@pytest.fixture(autouse=True)
def _tiny_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models fit in milliseconds: these tests set auto_budget for them, so the floor a
    default fit counts for (30 s, for real small data) is off here; its own test below."""
    monkeypatch.setattr(auto, "FLOOR_SECONDS", 0.0)


def _raw(source: Any, **tc: Any) -> dict[str, Any]:
    return {"transfer_config": {"source_model": "timm:test_efficientnet",
                                "pretrained_weights": "none", "freeze_strategy": "auto",
                                "epochs": 2, "batch_size": 16, "cache": {"disk": False}, **tc},
            "data": {"source": str(source), "image_size": 32, "val_fraction": 0.1,
                     "test_fraction": 0.3},
            "diagnostics": {"check_preprocessing": "off"}}


def _quiet(kind: str, info: dict[str, Any]) -> None:
    pass


@pytest.mark.slow  # the fit and the pick's fit on 100 images: about 5 s
def test_kfold_picks_the_pixels_where_the_random_features_cannot_separate(tmp_path: Path):
    # a linear function of the pixels is the label; a random network's pooled features carry
    # next to nothing of it (test_classical.template_images): the pixels must win out of fold
    events: list[str] = []
    summary = fit_run(validate(_raw(template_images(tmp_path / "imgs", n=140), auto_budget=1)),
                      tmp_path / "run",
                      event=lambda kind, info: events.append(str(info.get("what", ""))))
    rec = summary["auto"]
    assert summary["data"]["sizes"]["val"] < auto.MIN_TRIAL_VAL
    assert rec["chosen"] == "pixels", rec["reasons"]
    cv = {t["strategy"]: t["cv"] for t in rec["trials"] if t.get("cv")}
    assert set(cv) == {"all_frozen", "pixels"}  # auto_budget 1: no fine-tuning fits
    for c in cv.values():  # the record: mean and standard error of each score, k, seconds
        assert c["k"] == kfold.K and c["examples"] == 98
        assert {"accuracy", "accuracy_se", "brier", "brier_se", "loss", "loss_se",
                "fold_seconds"} <= set(c)
    assert cv["pixels"]["accuracy"] > cv["all_frozen"]["accuracy"] + 0.1
    assert rec["rule"].startswith(rule.RULE)
    assert json.loads((tmp_path / "run" / "auto.json").read_text())["rule"] == rec["rule"]
    # the log says each candidate's cross-validated scores and the rule
    assert any("auto: pixels: 5-fold out-of-fold over 98 examples: accuracy" in e for e in events)
    assert any(f"rule: {rule.RULE}" in e for e in events)
    assert summary["test"]["accuracy"] >= 0.8


class Toy(Strategy):
    """A fine-tuning candidate from the registry (as contrastive is, or any later one): k-fold
    takes it up without naming it."""

    name = "toy_tuner"
    summary = "a toy auto candidate"
    auto_rank = 50

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, 1, "the top group")]


@pytest.mark.slow  # five fold trials of a fine-tuning candidate: about 8 s
def test_a_registered_fine_tuner_whose_folds_fit_gets_k_fold_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    strategies.register(Toy())
    # the registry's last fine-tuner only (the toy), to keep the test short
    monkeypatch.setattr(auto, "fine_tuners", lambda: candidates.fine_tuners()[-1:])
    try:
        cfg = validate(_raw(template_images(tmp_path / "imgs", n=60), auto_budget=1000,
                            epochs=1, min_steps=4))
        choice = auto.choose(cfg, setup("cpu"), _quiet)
    finally:
        strategies.unregister("toy_tuner")
    cv = {t.strategy: t.cv for t in choice.trials if t.cv}
    assert set(cv) == {"all_frozen", "pixels", "toy_tuner"}
    toy = next(t for t in choice.trials if t.strategy == "toy_tuner")
    # it races over the folds: all k of them, or fewer where it fell behind (its note says so)
    folds = cv["toy_tuner"]["folds"]
    assert len(cv["toy_tuner"]["fold_seconds"]) == folds >= 1
    assert folds == kfold.K or "dropped after" in toy.note
    # its scores are over the held-out examples of the folds it ran: all of them at k folds,
    # the same examples the frozen head and the pixels are scored on
    n = cv["all_frozen"]["examples"]
    assert cv["pixels"]["examples"] == n
    assert (cv["toy_tuner"]["examples"] == n) == (folds == kfold.K)
    assert choice.chosen in cv


def _race_board(monkeypatch: pytest.MonkeyPatch, outputs: dict[str, Any],
                fold_seconds: Any) -> tuple[kfold.Board, list[tuple[str, int]], np.ndarray]:
    """A board of 100 two-class examples in 5 folds with the frozen head on every fold, and a
    fake fold trial that returns ``outputs[name](held-out labels)`` and takes ``fold_seconds``
    of a fake clock (a number, one per candidate, or a function of the candidate and the fold);
    the (candidate, fold) trials run, in order."""
    from tlkit.train.head_solver import folds_of

    y = np.tile([0, 1], 50)
    parts = folds_of("single_label", y, kfold.K, 0)
    board = kfold.Board("single_label", y, parts)
    rng = np.random.default_rng(0)
    right = np.where(rng.random(100) < 0.7, 1.0, -1.0) * np.where(y == 1, 1.0, -1.0)
    board.add("all_frozen", np.stack([-right, right], 1) * 0.5, range(kfold.K), [0.1], "")
    now, ran = [0.0], []
    monkeypatch.setattr(kfold.time, "perf_counter", lambda: now[0])

    def fold_outputs(base: Any, name: str, part: Any, held: Any, caches: Any, j: int):
        ran.append((name, j))
        now[0] += fold_seconds(name, j) if callable(fold_seconds) else \
            fold_seconds[name] if isinstance(fold_seconds, dict) else fold_seconds
        return outputs[name](held.targets)

    monkeypatch.setattr(kfold, "fold_outputs", fold_outputs)
    return board, ran, y


class _Held:
    def __init__(self, y: np.ndarray):
        self.targets = y


class _Data:
    def __init__(self, y: np.ndarray):
        self.y = y

    def subset(self, idx: np.ndarray) -> _Held:
        return _Held(self.y[idx])


def test_the_race_drops_a_clear_loser_after_one_fold_and_runs_the_leader_on_every_fold(
        monkeypatch: pytest.MonkeyPatch):
    def sure(t: np.ndarray) -> np.ndarray:  # right on every example, confidently
        s = np.where(t == 1, 1.0, -1.0) * 4
        return np.stack([-s, s], 1)

    board, ran, y = _race_board(monkeypatch, {"good": sure, "bad": lambda t: -sure(t)}, 1.0)
    skipped = kfold._race(None, board, ["all_frozen"], {"bad": 5.0, "good": 5.0},
                          {"bad": 1.0, "good": 1.0}, 1000.0, 0.0, _Data(y), board.parts, {},
                          "brier", _quiet)
    assert not skipped
    assert [j for n, j in ran if n == "bad"] == [0]  # one fold: wrong everywhere, dropped
    assert "bad" in board.dropped and board.notes["bad"].startswith("dropped after 1 of 5 folds")
    assert [j for n, j in ran if n == "good"] == list(range(kfold.K))
    # the final comparison is on every fold, and picks the leader
    assert rule.decide([board.scored(c, range(kfold.K)) for c in ("all_frozen", "good")])[0] \
        == "good"


def test_the_race_gives_the_budget_to_the_leader_and_records_where_each_stopped(
        monkeypatch: pytest.MonkeyPatch):
    def close(t: np.ndarray, scale: float) -> np.ndarray:
        s = np.where(t == 1, 1.0, -1.0) * scale
        s[::3] *= -1  # wrong on a third: neither is dropped against the frozen head
        return np.stack([-s, s], 1)

    outputs = {"a": lambda t: close(t, 0.3), "b": lambda t: close(t, 0.4)}
    # 10 s a fold as estimated, 20 s kept for the pick's training, 120 s: b enters, as all
    # five folds of both fit; from fold 3 on the folds take 20 s (a machine got busy)
    board, ran, y = _race_board(monkeypatch, outputs, lambda name, j: 10.0 if j < 2 else 20.0)
    skipped = kfold._race(None, board, ["all_frozen"], {"a": 20.0, "b": 20.0},
                          {"a": 10.0, "b": 10.0}, 120.0, 0.0, _Data(y), board.parts, {},
                          "brier", _quiet)
    assert not skipped and not board.dropped
    assert ran[:2] == [("a", 0), ("b", 0)]  # round 1 in the candidates' order

    def leader(folds: int) -> tuple[str, str]:
        now = rule.standing([board.scored(c, range(folds)) for c in ("a", "b")], "brier")
        first = min(now, key=now.get)
        return first, ({"a", "b"} - {first}).pop()

    assert ran[2:4] == [(leader(1)[0], 1), (leader(1)[1], 1)]  # round 2: the better first
    assert ran[4:6] == [(leader(2)[0], 2), (leader(2)[1], 2)]
    first, other = leader(3)
    assert ran[6:] == [(first, 3)]  # round 4: the leader's fold fits, the other's no longer
    assert board.notes[other].startswith("stopped after 3 of 5 folds") and "budget" in \
        board.notes[other]
    assert board.notes[first].startswith("stopped after 4 of 5 folds")
    # 100 s: b's five folds would not fit with the rest of a's: a alone races, on every fold
    board, ran, y = _race_board(monkeypatch, outputs, 10.0)
    skipped = kfold._race(None, board, ["all_frozen"], {"a": 20.0, "b": 20.0},
                          {"a": 10.0, "b": 10.0}, 100.0, 0.0, _Data(y), board.parts, {},
                          "brier", _quiet)
    assert ran == [("a", j) for j in range(kfold.K)]
    assert [t.strategy for t in skipped] == ["b"] and "the other folds of it and of each " \
        "candidate in the race" in skipped[0].note
    # the leader's next fold does not fit: the race ends there for the cheaper one behind it
    # too, though its fold would fit (else its extra fold would leave it alone in the final)
    board, ran, y = _race_board(monkeypatch, {"a": lambda t: close(t, 0.3),
                                              "b": lambda t: close(t, 0.2)},  # behind a
                                lambda name, j: 1.0 if name == "b" else 30.0 if j == 0 else 40.0)
    kfold._race(None, board, ["all_frozen"], {"a": 20.0, "b": 20.0}, {"a": 30.0, "b": 1.0},
                175.0, 0.0, _Data(y), board.parts, {}, "brier", _quiet)
    assert ran == [(c, j) for j in range(4) for c in ("a", "b")]
    assert board.notes["a"].startswith("stopped after 4 of 5 folds: fold 5's trial")
    assert board.notes["b"].startswith("stopped after 4 of 5 folds: a, ahead of it")
    # nothing fits: the candidates are skipped with the reason, none ran
    board, ran, y = _race_board(monkeypatch, outputs, 10.0)
    skipped = kfold._race(None, board, ["all_frozen"], {"a": 20.0, "b": 20.0},
                          {"a": 10.0, "b": 10.0}, 25.0, 0.0, _Data(y), board.parts, {},
                          "brier", _quiet)
    assert not ran and [t.strategy for t in skipped] == ["a", "b"]
    assert all(t.note.startswith("skipped:") and "auto_budget" in t.note for t in skipped)


def test_the_rule_picks_the_lower_brier_score_and_a_tie_goes_to_the_cheaper():
    y = np.zeros(10)
    head = rule.Scored("all_frozen", y + 0.5, (np.arange(10) < 8).astype(float), y + 0.4)
    px = rule.Scored("pixels", y + 0.6, (np.arange(10) < 7).astype(float), y + 0.3)
    chosen, why = rule.decide([head, px])
    assert chosen == "pixels" and "lowest mean out-of-fold Brier score" in why
    same = rule.Scored("pixels", y + 0.6, (np.arange(10) < 9).astype(float), y + 0.4)
    assert rule.decide([head, same])[0] == "all_frozen"  # a tie: the cheaper
    # without Brier scores (regression, multi-label): the lower loss
    assert rule.decide([rule.Scored("a", y + 0.5), rule.Scored("b", y + 0.2)])[0] == "b"
    # the rules it was measured against are there to measure again
    assert rule.decide([head, px], "accuracy")[0] == "all_frozen"


def test_the_race_gives_text_its_measured_first_fine_tuner_first():
    from tlkit.select.candidates import RACE_FIRST, race_order

    tuners = ["top_n_unfrozen", "lp_ft", "none", "lora", "contrastive"]
    assert race_order("text", tuners) == ["contrastive", "top_n_unfrozen", "lp_ft", "none",
                                          "lora"]
    assert race_order("image", tuners) == tuners  # images: the order of cost
    assert race_order("text", ["lp_ft", "none"]) == ["lp_ft", "none"]  # not a candidate here
    assert all(n in strategies.auto_candidates() for f in RACE_FIRST.values() for n in f)


def test_each_modality_has_its_measured_rule():
    # text: the Brier score after each candidate's own temperature (contrastive's SetFit head
    # is not calibrated; the final model gets a temperature anyway); images: the plain one
    assert rule.rule_for("text") == "calibrated_brier"
    assert rule.rule_for("image") == rule.RULE == "brier"
    assert rule.rule_for("tabular") == rule.RULE
    assert all(r in rule.RULES and r in rule.SAID for r in rule.RULE_FOR.values())


def test_a_favourite_is_kept_unless_another_beats_its_brier_score_by_the_margin():
    """contrastive_1se: the favourite (contrastive) unless another candidate's Brier score is
    lower by more than one paired standard error; where the favourite was not scored (over
    budget), the cheapest takes its place."""
    base = np.random.default_rng(0).uniform(0.2, 0.6, size=40)
    head = rule.Scored("all_frozen", base, None, base)
    # worse by 0.005 on average, 0.007 a standard error of the paired differences: noise
    fav = rule.Scored("contrastive", base, None, base + np.tile([0.05, -0.04], 20))
    assert rule.decide([head, fav], "contrastive_1se")[0] == "contrastive"
    assert rule.decide([head, fav], "brier")[0] == "all_frozen"
    far = rule.Scored("all_frozen", base, None, base - 0.2)  # better by many standard errors
    chosen, why = rule.decide([far, fav], "contrastive_1se")
    assert chosen == "all_frozen" and "beating the favourite" in why
    tuned = rule.Scored("top_n_unfrozen", base, None, base + 0.1)
    chosen, why = rule.decide([head, tuned], "contrastive_1se")  # no contrastive scored
    assert chosen == "all_frozen" and "the cheapest, all_frozen" in why


def test_calibrated_brier_sees_through_an_overconfident_but_better_candidate():
    """A fine-tuned head that ranks the classes better but is overconfident (its wrong answers
    near probability 1) loses on the plain Brier score to a timid head; after each one's own
    temperature it wins, as its accuracy says."""
    from tlkit.train.evaluate import example_losses

    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)

    def candidate(name: str, accuracy: float, scale: float) -> rule.Scored:
        right = rng.random(n) < accuracy
        sign = np.where(right, 1.0, -1.0) * np.where(y == 1, 1.0, -1.0)
        margin = sign * scale * (0.5 + rng.random(n))
        out = np.stack([-margin / 2, margin / 2], axis=1)
        return rule.scored(name, out, y, "single_label", example_losses(out, y, "single_label"))

    timid, confident = candidate("all_frozen", 0.62, 0.3), candidate("contrastive", 0.70, 25.0)
    assert confident.correct.mean() > timid.correct.mean()
    assert rule.decide([timid, confident], "brier")[0] == "all_frozen"
    chosen, why = rule.decide([timid, confident], "calibrated_brier")
    assert chosen == "contrastive" and "temperature" in why
    # a temperature on the grid divides the logits: the score is the same
    t = rule.TEMPERATURES
    scaled = confident.outputs * (t[40] / t[30])
    a, _ = rule.calibrated_brier(confident.outputs, y)
    b, _ = rule.calibrated_brier(scaled, y)
    np.testing.assert_allclose(a.mean(), b.mean(), rtol=1e-9)


@pytest.mark.slow  # two choices (data, model, out-of-fold solves): about 4 s
def test_the_budget_counts_the_training_and_validation_splits_not_the_test_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the same labelled data with a small and a large test file: the same budget, the same
    # candidates tried
    monkeypatch.setattr(auto, "forward_seconds", lambda base: 0.05)
    monkeypatch.setattr(Base, "load_seconds", property(lambda self: 1.0))
    monkeypatch.setattr(auto, "against_pick", lambda *a, **k: None)
    imgs = template_images(tmp_path / "imgs", n=260)
    import pandas as pd

    files = sorted(str(p) for p in imgs.rglob("*.png"))
    rows = pd.DataFrame({"image": files, "label": [Path(f).parent.name for f in files]}
                        ).sample(frac=1.0, random_state=0)
    rows.iloc[:60].to_csv(tmp_path / "labels.csv", index=False)
    got = []
    for n_test in (4, 200):
        rows.iloc[60:60 + n_test].to_csv(tmp_path / "test.csv", index=False)
        raw = _raw(tmp_path / "labels.csv", auto_budget=40)
        raw["data"].pop("test_fraction")
        raw["data"]["test"] = str(tmp_path / "test.csv")
        choice = auto.choose(validate(raw), setup("cpu"), _quiet)
        got.append((choice.default_seconds, choice.budget_seconds,
                    sorted(t.strategy for t in choice.trials if t.note.startswith("skipped"))))
    assert got[0] == got[1]
    assert got[0][0] == pytest.approx(1.0 + 0.05 * 60)  # loading + 60 training examples


def test_an_auto_json_without_the_cross_validated_fields_is_still_read(tmp_path: Path):
    old = {"chosen": "top_n_unfrozen", "settings": {"top_n": 2}, "budget_seconds": 10.0,
           "spent_seconds": 1.0, "default_seconds": 2.0, "metric": "accuracy",
           "trials": [{"strategy": "all_frozen", "rung": -1, "epochs": 0, "steps": 0,
                       "val_loss": 0.5, "val_metric": 0.8, "seconds": 0.1, "note": ""}],
           "reasons": ["..."], "classical": None, "rates": {}}
    f = tmp_path / "auto.json"
    f.write_text(json.dumps(old))
    choice = record.recorded_choice(f)
    assert choice.chosen == "top_n_unfrozen" and choice.rule is None
    assert choice.trials[0].cv is None
    # a new record round-trips its scores and rule
    choice.rule = "brier: ..."
    choice.trials[0].cv = {"k": 5, "accuracy": 0.8, "accuracy_se": 0.04, "fold_seconds": [0.1]}
    f.write_text(record.choice_json(choice))
    again = record.recorded_choice(f)
    assert again.rule == choice.rule and again.trials[0].cv == choice.trials[0].cv
    assert "rule: brier" in record.format_choice(again)


def _choose_on_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: int,
                     per_example: float) -> tuple[Any, list[str]]:
    """auto's choice with the real 30 s floor, 1 s of loading, ``per_example`` seconds an
    example and no fine-tuning candidate: its record and its log lines."""
    monkeypatch.setattr(auto, "FLOOR_SECONDS", 30.0)
    monkeypatch.setattr(auto, "forward_seconds", lambda base: per_example)
    monkeypatch.setattr(Base, "load_seconds", property(lambda self: 1.0))
    monkeypatch.setattr(auto, "against_pick", lambda *a, **k: None)
    monkeypatch.setattr(auto, "fine_tuners", lambda: [])
    events: list[str] = []
    raw = _raw(template_images(tmp_path / "imgs", n=images), auto_budget=5)
    choice = auto.choose(validate(raw), setup("cpu"),
                         lambda kind, info: events.append(str(info.get("what", ""))))
    return choice, events


@pytest.mark.slow  # one choice on 60 images, no fine-tuning candidate: about 3 s
def test_a_default_fit_of_seconds_counts_as_the_floor(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    # small data: a default fit of 4 s gets the trials 4 x the floor at auto_budget 5, not 4 x 4 s
    choice, events = _choose_on_floor(tmp_path, monkeypatch, 60, 0.05)
    # the k-fold path (fewer than 20 validation examples here) counts the floor per labelled
    # example (30 s per 100) and multiplies it by k: a candidate's measure is k fold trials,
    # where the validation path runs one shortened trial each
    import re

    n = next(int(m.group(1)) for e in events
             if (m := re.search(r"over the (\d+) training and validation examples", e)))
    floor = 30.0 * n / 100
    assert 10 < n < 60 and choice.default_seconds < floor
    assert auto.KFOLD_BUDGET == kfold.K
    assert choice.budget_seconds == pytest.approx(4 * floor * kfold.K)
    assert any(f"counted as {floor:.3g} s (30 s per 100 labelled examples)" in e
               and f"x {auto.KFOLD_BUDGET:g} for the k-fold" in e for e in events)


@pytest.mark.slow  # one choice on 500 images, no fine-tuning candidate: a few seconds
def test_the_validation_path_counts_its_floor_per_labelled_example_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # 20 validation examples or more: the floor is 30 s per 100 labelled examples there too,
    # at least 30 s (a flat 30 s gave digits' 640 labels 120 s, where no fine-tuner fitted)
    monkeypatch.setattr(auto, "pixels_win", lambda *a, **k: None)
    choice, events = _choose_on_floor(tmp_path, monkeypatch, 500, 0.01)
    assert not any("k-fold" in e for e in events)  # the validation path
    n = round(choice.default_seconds / 0.01 - 100)  # 1 s of loading, 0.01 s an example
    floor = 30.0 * n / 100
    assert 300 < n < 400 and floor > 30.0
    assert choice.budget_seconds == pytest.approx(4 * floor)
    assert any(f"counted as {floor:.3g} s (30 s per 100 labelled examples)" in e for e in events)


def test_the_final_pick_keeps_every_folds_evidence_between_the_frozen_head_and_the_pixels():
    """A fine-tuner that ran one fold is compared on that fold's examples, but the frozen head
    against the pixels is decided on every fold: the pixels, better over all 100 examples,
    are not lost to the frozen head's luck on fold 1's 20 (compared there, all three, the
    frozen head would win)."""
    from tlkit.train.head_solver import folds_of

    y = np.tile([0, 1], 50)
    parts = folds_of("single_label", y, kfold.K, 0)
    board = kfold.Board("single_label", y, parts)
    sign = np.where(y == 1, 1.0, -1.0)
    fold1 = np.zeros(100, dtype=bool)
    fold1[parts[0][1]] = True
    # the pixels: right everywhere but on fold 1, wrong on half of it
    px = sign * 2.0
    px[np.flatnonzero(fold1)[::2]] *= -1
    head = sign * 0.3  # right everywhere, timid: better than the pixels on fold 1 only
    board.add("all_frozen", np.stack([-head, head], 1), range(kfold.K), [0.1], "")
    board.add("pixels", np.stack([-px, px], 1), range(kfold.K), [0.1], "")
    every = rule.standing([board.scored(c, range(kfold.K)) for c in ("all_frozen", "pixels")],
                          "brier")
    first = rule.standing([board.scored(c, [0]) for c in ("all_frozen", "pixels")], "brier")
    assert every["pixels"] < every["all_frozen"] and first["all_frozen"] < first["pixels"]
    wrong = -sign[parts[0][1]] * 3.0  # one fold, wrong everywhere: worse than either
    board.fold("top_n_unfrozen", 0, np.stack([-wrong, wrong], 1), 1.0)
    chosen, reasons = kfold.final_pick(board, ["all_frozen", "pixels"], ["top_n_unfrozen"],
                                       "brier")
    assert chosen == "pixels", reasons
    assert rule.decide([board.scored(c, [0]) for c in ("all_frozen", "pixels",
                                                        "top_n_unfrozen")])[0] == "all_frozen"
    assert "1 of 5 folds every finalist ran" in reasons[0]
    assert "over all 100 training and validation examples" in reasons[1]
    # with every fold run by every candidate, it is the rule's pick among them all
    board2 = kfold.Board("single_label", y, parts)
    for name, z in (("all_frozen", head), ("pixels", px), ("none", sign * 3.0)):
        board2.add(name, np.stack([-z, z], 1), range(kfold.K), [0.1], "")
    chosen2, _ = kfold.final_pick(board2, ["all_frozen", "pixels"], ["none"], "brier")
    assert chosen2 == rule.decide([board2.scored(c, range(kfold.K))
                                   for c in ("all_frozen", "pixels", "none")])[0] == "none"


def test_the_favourite_fine_tuner_gives_way_only_to_one_ahead_by_the_margin():
    """Among fine-tuners with the same folds, a slightly better score is luck: the modality's
    measured first fine-tuner stays the finalist unless another beats it by more than two
    paired standard errors; then the rule decides it against the frozen head."""
    from tlkit.train.head_solver import folds_of

    y = np.tile([0, 1], 50)
    parts = folds_of("single_label", y, kfold.K, 0)
    sign = np.where(y == 1, 1.0, -1.0)
    rng = np.random.default_rng(1)

    def board_with(other: np.ndarray) -> kfold.Board:
        board = kfold.Board("single_label", y, parts)
        head = sign * 0.2  # right everywhere, timid: behind both fine-tuners
        board.add("all_frozen", np.stack([-head, head], 1), range(kfold.K), [0.1], "")
        fav = sign * 2.0
        fav[rng.permutation(100)[:15]] *= -1  # wrong on 15 of 100
        for name, z in (("contrastive", fav), ("lp_ft", other)):
            for j in range(2):  # both ran folds 1 and 2
                idx = parts[j][1]
                board.fold(name, j, np.stack([-z[idx], z[idx]], 1), 1.0)
        return board

    close = sign * 2.0
    close[rng.permutation(100)[:12]] *= -1  # a little better than the favourite, by luck
    board = board_with(close)
    per = rule.standing([board.scored(c, range(2)) for c in ("contrastive", "lp_ft")], "brier")
    assert per["lp_ft"] <= per["contrastive"]  # the plain rule would take lp_ft
    chosen, reasons = kfold.final_pick(board, ["all_frozen"], ["contrastive", "lp_ft"],
                                       "brier", favourite="contrastive")
    assert chosen == "contrastive"
    assert any("measured best on this modality, is kept against lp_ft" in r for r in reasons)
    chosen, _ = kfold.final_pick(board, ["all_frozen"], ["contrastive", "lp_ft"],
                                 "brier")  # no favourite (images): the rule's own pick
    assert chosen == rule.decide([board.scored(c, range(2))
                                  for c in ("all_frozen", "contrastive", "lp_ft")])[0]
    sure = sign * 4.0  # right everywhere: ahead of the favourite by far more than the margin
    chosen, reasons = kfold.final_pick(board_with(sure), ["all_frozen"],
                                       ["contrastive", "lp_ft"], "brier", favourite="contrastive")
    assert chosen == "lp_ft" and any("lp_ft beats contrastive" in r for r in reasons)
