"""``adaptation.method: auto`` inside ``adaptation.auto_budget``: short trials by successive
halving (tlkit.select.adapt_auto.run_budgeted), the label-free pick trained once."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_label_free import RAW as LABEL_FREE_RAW

from tlkit.config import Config, validate
from tlkit.select.adapt_auto import choose_adaptation, format_record, order

# test_label_free's tiny CNN on digits, with method auto, 8 epochs of 10 steps
RAW: dict[str, Any] = copy.deepcopy(LABEL_FREE_RAW)
RAW["transfer_config"]["epochs"] = 8
RAW["adaptation"].update(method="auto", auto_weights=[0.1, 1.0])


class Scripted:
    """A stand-in for fit_run: each trial's summary from a script (IM per method and weight,
    growing with the schedule's length), with the seconds a real trial would report, which
    the clock (``now``, patched in for auto's) advances by; records every config it gets."""

    def __init__(self, im: dict[str, float], step_seconds: dict[str, float],
                 fixed: float = 2.0) -> None:
        self.im, self.step_seconds, self.fixed = im, step_seconds, fixed
        self.configs: list[Config] = []
        self.clock = 0.0

    def now(self) -> float:
        return self.clock

    def __call__(self, cfg: Config, out: Path, resume: bool = False,
                 test_limit: int | None = None) -> dict[str, Any]:
        from tlkit.plan.length import length_of

        self.configs.append(cfg)
        ad, tc = cfg.adaptation, cfg.transfer_config
        steps = length_of(160, tc.loop_settings).total_steps
        name = "none" if ad.method == "none" else f"{ad.method} weight {ad.weight:g}"
        grow = min(1.0, steps / 80)  # longer trials score higher, in the same order
        train = steps * self.step_seconds["none" if ad.method == "none" else "aligning"]
        self.clock += train + self.fixed
        summary: dict[str, Any] = {
            "data": {"sizes": {"train": 160, "val": 40}}, "val": {"accuracy": 0.8},
            "train_seconds": train, "total_seconds": train + self.fixed,
            "adaptation": {"target_im": grow * self.im[name],
                           "target_test": {"accuracy": self.im[name]}}}
        if ad.method == "none":
            summary["adaptation"]["adabn"] = {"target_im": grow * self.im["adabn"],
                                              "target_test": {"accuracy": self.im["adabn"]}}
        return summary


IM = {"none": 0.2, "adabn": 0.4, "dann weight 1": 0.5, "mmd weight 1": 0.7,
      "coral weight 1": 0.3, "dann weight 0.1": 0.25, "mmd weight 0.1": 0.35,
      "coral weight 0.1": 0.3}


def _choose(raw: dict[str, Any], fit: Scripted, monkeypatch: pytest.MonkeyPatch
            ) -> dict[str, Any]:
    import tlkit.select.adapt_auto as adapt_auto

    monkeypatch.setattr(adapt_auto.time, "perf_counter", fit.now)
    return choose_adaptation(validate(raw), fit, lambda k, i: None)


def test_short_trials_halve_toward_the_candidate_the_label_free_score_prefers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a source-only step of 0.1 s, an aligning one of 0.2; a fit of 2 + 80 x 0.1 s counts as 30
    fit = Scripted(IM, {"none": 0.1, "aligning": 0.2})
    raw = copy.deepcopy(RAW)
    raw["adaptation"]["auto_budget"] = 4.0
    record = _choose(raw, fit, monkeypatch)
    assert record["chosen"] == "mmd weight 1" and record["method"] == "mmd"
    assert record["weight"] == 1.0
    # 8 epochs of 10 steps; the trials run an eighth, a quarter, then half of them
    assert sorted({c.transfer_config.epochs for c in fit.configs}) == [1, 2, 4]
    rungs = sorted({t["rung"] for t in record["trials"]})
    assert rungs == [0, 1, 2]
    assert [{t["steps"] for t in record["trials"] if t["rung"] == r} for r in rungs] == [
        {10}, {20}, {40}]
    # each rung keeps the better half of the aligning candidates, source-only always trains
    at = {r: [t["name"] for t in record["trials"] if t["rung"] == r and "target_im" in t]
          for r in rungs}
    assert len(at[0]) == 8 and "none" in at[1] and "adabn" in at[2]
    assert [n for n in at[1] if n not in ("none", "adabn")] == [
        "dann weight 1", "mmd weight 1", "mmd weight 0.1"]
    assert [n for n in at[2] if n not in ("none", "adabn")] == ["dann weight 1", "mmd weight 1"]
    # the trials leave out what does not bear on the choice
    assert all(not c.diagnostics.calibration for c in fit.configs)
    assert record["budget_seconds"] == pytest.approx(4 * 30.0)
    assert record["source_only_seconds"] == pytest.approx(10.0)
    assert record["trial_seconds"] == pytest.approx(fit.clock)
    # the trials and the costliest full training after them fit the budget
    assert fit.clock + 2 + 80 * 0.2 <= record["budget_seconds"]
    assert "rung 2" in record["why"] and "auto_budget" in record["why"]
    text = format_record(record)
    assert "mmd weight 1" in text and "budget" in text


def test_the_budget_leaves_out_the_last_candidates_in_the_order_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a source-only step of 1 s, an aligning one of 1.5: a fit of 82 s, a budget of 2 x that
    fit = Scripted(IM, {"none": 1.0, "aligning": 1.5})
    raw = copy.deepcopy(RAW)
    raw["adaptation"]["auto_budget"] = 2.0
    record = _choose(raw, fit, monkeypatch)
    skipped = [t for t in record["trials"] if "note" in t]
    tried = [t["name"] for t in record["trials"] if "target_im" in t and t["rung"] == 0]
    assert skipped and all("raise adaptation.auto_budget" in t["note"] for t in skipped)
    # the order kept: the larger weight first, then DANN, MMD, CORAL
    names = [n for n, _, _ in order([(f"{m} weight {w:g}", m, w) for m in ("coral", "mmd",
                                                                           "dann")
                                     for w in (0.1, 1.0)])]
    assert names[:3] == ["dann weight 1", "mmd weight 1", "coral weight 1"]
    kept = [n for n in names if n in tried]
    assert kept == names[:len(kept)] and len(kept) < len(names)
    assert {t["name"] for t in skipped} == set(names[len(kept):])
    assert record["budget_seconds"] == pytest.approx(2 * (2.0 + 80 * 1.0))
    # no second rung: its trials and the training after them would not fit
    assert {t["rung"] for t in record["trials"]} == {0}
    assert fit.clock + 2 + 80 * 1.5 <= record["budget_seconds"]


def test_auto_budget_null_trains_every_candidate_in_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fit = Scripted(IM, {"none": 0.5, "aligning": 1.0})
    raw = copy.deepcopy(RAW)
    raw["adaptation"]["auto_budget"] = None
    record = _choose(raw, fit, monkeypatch)
    assert all(c.transfer_config.epochs == 8 for c in fit.configs)
    assert len(fit.configs) == 7 and record["chosen"] == "mmd weight 1"
    assert "budget_seconds" not in record


def test_auto_budget_is_checked_and_said_unused_without_auto() -> None:
    from tlkit.errors import UserError

    raw = copy.deepcopy(RAW)
    raw["adaptation"]["auto_budget"] = 0.5
    with pytest.raises(UserError, match="auto_budget"):
        validate(raw)


def _shifted_digits(folder: Path) -> Path:
    """Digits images under a contrast and brightness shift (a quarter of the contrast, grey
    background) as PNGs and a CSV: a shift BatchNorm statistics re-estimated on the target
    (AdaBN) undo, where the source-only model does not."""
    from PIL import Image

    from tlkit.data.packaged import load_packaged

    data = load_packaged("digits")
    folder.mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for k, i in enumerate(rng.permutation(len(data.targets))[:160]):
        img = np.asarray(data.inputs[i], dtype=np.float32)
        img = 255.0 * img / max(1.0, float(img.max()))
        out = 150 + 0.25 * img
        f = folder / f"{k:04d}.png"
        Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(f)
        rows.append({"image": str(f), "label": data.classes[int(data.targets[i])]})
    path = folder / "images.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.slow
def test_the_budgeted_auto_picks_adabn_where_it_is_known_to_win(tmp_path: Path) -> None:
    from tlkit.run import fit_run

    raw = copy.deepcopy(RAW)
    raw["adaptation"]["target"] = {"source": str(_shifted_digits(tmp_path / "target")),
                                   "image_column": "image", "label_column": "label",
                                   "image_size": 32}
    raw["adaptation"]["auto_weights"] = [1.0]
    s = fit_run(validate(raw), tmp_path / "run")
    record = s["adaptation"]["auto"]
    assert record["chosen"] == "adabn", format_record(record)
    # AdaBN is known to win here: the trained model, source-only against AdaBN on the target
    final = s["adaptation"]
    assert final["method"] == "adabn"
    trials = {(t["name"], t["rung"]): t for t in record["trials"] if "target_im" in t}
    last = max(r for _, r in trials)
    assert (trials[("adabn", last)]["target_accuracy"]
            > trials[("none", last)]["target_accuracy"] + 0.1)
    assert record["trial_seconds"] <= record["budget_seconds"]
    on_disk = json.loads((tmp_path / "run" / "adaptation_auto.json").read_text())
    assert on_disk["chosen"] == "adabn"
