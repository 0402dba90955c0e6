"""Choosing a domain adaptation without target labels (tlkit.adapt.label_free, adaptation
method auto)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from tlkit.adapt.label_free import (SOURCE_MARGIN, Candidate, choose, information_maximisation,
                                    ranked, source_margin)
from tlkit.config import validate
from tlkit.errors import UserError


def test_information_maximisation_rewards_confident_and_diverse_predictions() -> None:
    confident = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    assert information_maximisation(confident) == pytest.approx(1.0, abs=1e-6)
    assert information_maximisation(np.full((8, 4), 0.25)) == pytest.approx(0.0, abs=1e-6)
    collapsed = np.eye(4)[[0] * 8]  # confident, but every prediction the same class
    assert information_maximisation(collapsed) == pytest.approx(0.0, abs=1e-6)
    unsure = 0.5 * confident + 0.5 * np.full((8, 4), 0.25)
    assert 0 < information_maximisation(unsure) < 1


def test_a_candidate_that_gives_up_source_accuracy_is_not_picked_whatever_its_score() -> None:
    none = Candidate("none", "none", 0.0, target_im=0.5, source_val_accuracy=0.90)
    good = Candidate("mmd weight 1", "mmd", 1.0, target_im=0.7, source_val_accuracy=0.89)
    broken = Candidate("dann weight 1000", "dann", 1000.0, target_im=0.9,
                       source_val_accuracy=0.40)
    pick, why = choose([none, good, broken])
    assert pick is good and "dann weight 1000" in why
    order, _ = ranked([broken, none, good])
    assert [c.name for c in order] == ["mmd weight 1", "none", "dann weight 1000"]
    # nothing better on the target: source-only stays
    worse = Candidate("coral weight 1", "coral", 1.0, target_im=0.3, source_val_accuracy=0.9)
    assert choose([none, worse])[0] is none


def test_the_source_guard_is_as_wide_as_the_validation_split_is_noisy() -> None:
    # 40 validation images: one image is 2.5 points, two standard errors about 14
    assert source_margin(0.72, 40) == pytest.approx(2 * (0.72 * 0.28 / 40) ** 0.5)
    assert source_margin(0.95, 100_000) == SOURCE_MARGIN  # a large split: the floor holds
    none = Candidate("none", "none", 0.0, target_im=0.30, source_val_accuracy=0.72)
    mmd = Candidate("mmd weight 1", "mmd", 1.0, target_im=0.60, source_val_accuracy=0.66)
    broken = Candidate("dann weight 1000", "dann", 1000.0, target_im=0.90,
                       source_val_accuracy=0.20)
    # 6 points lower on 40 images is within the noise; on 4,000 it is not
    assert choose([none, mmd, broken], n_val=40)[0] is mmd
    pick, why = choose([none, mmd, broken], n_val=4000)
    assert pick is none and "mmd weight 1" in why and "4,000 examples" in why
    assert choose([none, mmd, broken], n_val=40)[1].count("dann weight 1000") == 1


def test_auto_is_refused_where_it_cannot_choose() -> None:
    raw = {"transfer_config": {"source_model": "mobilenetv2", "freeze_strategy": "auto"},
           "data": {"source": "digits"},
           "adaptation": {"method": "auto", "target": {"source": "digits"}}}
    with pytest.raises(UserError, match="freeze_strategy auto would run its own trials"):
        validate(raw)
    raw["transfer_config"]["freeze_strategy"] = "none"
    raw["adaptation"] = {"method": "auto"}
    with pytest.raises(UserError, match="needs unlabelled target data"):
        validate(raw)


RAW = {
    "transfer_config": {"source_model": "timm:test_efficientnet", "pretrained_weights": "none",
                        "freeze_strategy": "none", "head_lr": 1e-2, "backbone_lr": 3e-3,
                        "epochs": 3, "batch_size": 16, "early_stopping_patience": None,
                        "min_steps": 0, "device": "cpu"},
    "data": {"source": "digits", "image_size": 32, "limit": 200},
    "adaptation": {"method": "none", "target": {"source": "digits", "image_size": 32},
                   "target_limit": 96},
    "diagnostics": {"sample": 60, "check_preprocessing": "off", "calibration": False},
}


def _candidate(summary: dict, name: str, method: str, weight: float) -> Candidate:
    a = summary["adaptation"]
    return Candidate(name, method, weight, a["target_im"], summary["val"]["accuracy"],
                     a["target_test"]["accuracy"])


@pytest.mark.slow
def test_the_label_free_score_ranks_a_broken_adaptation_below_source_only(
        tmp_path: Path) -> None:
    from tlkit.run import fit_run

    none = fit_run(validate(RAW), tmp_path / "none")
    # source-only's run measures what AdaBN would make of its model: the AdaBN run's figures
    raw = copy.deepcopy(RAW)
    raw["adaptation"]["method"] = "adabn"
    adabn = fit_run(validate(raw), tmp_path / "adabn")["adaptation"]
    assert none["adaptation"]["adabn"]["target_im"] == pytest.approx(adabn["target_im"],
                                                                     abs=1e-4)
    assert none["adaptation"]["adabn"]["target_test"] == pytest.approx(adabn["target_test"])
    raw = copy.deepcopy(RAW)
    raw["adaptation"].update(method="dann", weight=1000)
    broken = fit_run(validate(raw), tmp_path / "broken")
    a, b = _candidate(none, "none", "none", 0.0), _candidate(broken, "dann", "dann", 1000.0)
    # the broken run is worse on the target, and the score says so without its labels
    assert b.target_accuracy is not None and a.target_accuracy is not None
    assert b.target_accuracy < a.target_accuracy
    order, _ = ranked([b, a])
    assert order[0] is a


@pytest.mark.slow
def test_adaptation_auto_trains_each_candidate_and_keeps_the_pick(tmp_path: Path) -> None:
    from tlkit.run import fit_run

    raw = copy.deepcopy(RAW)
    raw["transfer_config"]["epochs"] = 1
    # auto_budget null: every candidate's full schedule (the budgeted choice:
    # tests/test_adaptation_budget.py)
    raw["adaptation"].update(method="auto", auto_weights=[1.0], auto_budget=None)
    s = fit_run(validate(raw), tmp_path / "run")
    record = s["adaptation"]["auto"]
    names = [t["name"] for t in record["trials"]]
    assert names == ["none", "adabn", "dann weight 1", "mmd weight 1", "coral weight 1"]
    assert record["chosen"] in names and s["adaptation"]["method"] == record["method"]
    assert "oracle" in record  # the target has labels: reported beside the pick
    chosen = next(t for t in record["trials"] if t["name"] == record["chosen"])
    # the pick retrained with the same seed is the model its trial scored
    assert s["adaptation"]["target_im"] == pytest.approx(chosen["target_im"], abs=1e-4)
    on_disk = json.loads((tmp_path / "run" / "adaptation_auto.json").read_text())
    assert on_disk["chosen"] == record["chosen"]


def test_mixed_precision_on_a_cpu_needs_native_bf16() -> None:
    from tlkit.device import cpu_has_bf16

    assert not cpu_has_bf16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_has_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_bf16("Features\t: fp asimd bf16 i8mm\n")


@pytest.mark.slow
def test_compare_ranks_the_adaptations_and_keeps_their_runs(tmp_path: Path) -> None:
    from tlkit.run import fit_run
    from tlkit.select.compare import compare, format_leaderboard

    raw = copy.deepcopy(RAW)
    raw["transfer_config"]["epochs"] = 1
    raw["adaptation"].update(method="auto", auto_weights=[1.0])
    out = tmp_path / "cmp"
    result = compare(validate(raw), out, ["none"], fit_run)
    board = result["adaptation"]
    assert [t["name"] for t in board["trials"]] == [
        "none", "adabn", "dann weight 1", "mmd weight 1", "coral weight 1"]
    assert board["strategy"] == "none" and board["chosen"] in {t["name"] for t in
                                                               board["trials"]}
    # the strategy rows trained source-only; each trained candidate's run is kept
    row = json.loads((out / "none" / "summary.json").read_text())
    assert row["adaptation"]["method"] == "none"
    kept = out / "adaptation" / "mmd-weight-1" / "summary.json"
    assert kept.is_file()
    text = format_leaderboard(result)
    assert "adaptations on the unlabelled target" in text and board["chosen"] in text
    # resumed: the finished trials are read back, not trained again
    stamp = kept.stat().st_mtime_ns
    again = compare(validate(raw), out, ["none"], fit_run, resume=True)
    assert kept.stat().st_mtime_ns == stamp and again["adaptation"] == board


@pytest.mark.slow
def test_advise_adds_the_adaptation_the_label_free_score_picks(tmp_path: Path) -> None:
    from tlkit.run import fit_run
    from tlkit.select.advise import Advice, measure_adaptation

    raw = copy.deepcopy(RAW)
    raw["transfer_config"]["epochs"] = 1
    raw["adaptation"].update(method="auto", auto_weights=[1.0])
    adv = measure_adaptation(validate(raw), Advice("top_n_unfrozen", {"top_n": 1}), fit_run)
    assert adv.adaptation is not None and adv.adaptation["strategy"] == "top_n_unfrozen"
    assert f"adaptation.method={adv.adaptation['method']}" in adv.overrides()
    assert adv.reasons[-1].startswith(f"adaptation {adv.adaptation['chosen']}:")


def test_a_config_with_adaptation_auto_can_be_compared_and_advised() -> None:
    from tlkit.config import AUTO, derive
    from tlkit.select.adapt_auto import source_only
    from tlkit.select.variants import variant

    raw = copy.deepcopy(RAW)
    raw["adaptation"]["method"] = "auto"
    cfg = validate(raw)
    # freeze_strategy auto's trials and compare's auto row train source-only: valid configs
    assert derive(source_only(cfg), "advise", transfer_config={"freeze_strategy": AUTO}
                  ).adaptation.method == "none"
    assert variant(source_only(cfg), AUTO).adaptation.method == "none"
    assert source_only(cfg).adaptation.target == cfg.adaptation.target
