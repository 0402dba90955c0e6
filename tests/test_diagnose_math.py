"""The diagnostic measurements on seeded synthetic data whose answer is known: transferability
scores rank informative features above noise, divergences grow with the shift, CKA has its
invariances, temperature scaling repairs over-confidence, and the verdict reads intervals right."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import ortho_group

from tlkit.diagnose.calibration import calibration_report, ece, fit_temperature, reliability
from tlkit.diagnose.divergence import mmd, proxy_a_distance
from tlkit.diagnose.similarity import linear_cka
from tlkit.diagnose.transferability import SCORES, all_scores, hscore, leep, logme, nce
from tlkit.diagnose.verdict import paired_bootstrap, seed_interval, transfer_verdict, verdict


def _class_features(labels: np.ndarray, d: int, strength: float, rng: np.random.Generator
                    ) -> np.ndarray:
    """Gaussian features whose class means lie ``strength`` apart along random directions."""
    centres = rng.standard_normal((labels.max() + 1, d))
    return strength * centres[labels] + rng.standard_normal((len(labels), d))


# --- transferability -----------------------------------------------------------------------

@pytest.mark.parametrize("n,d", [(300, 32), (60, 200)])  # n > d and n < d
def test_logme_and_hscore_prefer_class_separating_features(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)
    good = _class_features(labels, d, 2.0, rng)
    noise = rng.standard_normal((n, d))
    assert logme(good, labels) > logme(noise, labels)
    assert hscore(good, labels) > hscore(noise, labels)
    assert np.isfinite(logme(noise, labels))


def test_logme_ignores_dead_feature_units() -> None:
    # Zero columns add the prior's own eigenvalue to the evidence and cancel out; padding 20
    # features with 300 dead ones also moves LogME from its n >= d path to its n < d path.
    rng = np.random.default_rng(14)
    labels = rng.integers(0, 3, 60)
    feats = _class_features(labels, 20, 1.0, rng)
    padded = np.hstack([feats, np.zeros((60, 300))])
    assert logme(padded, labels) == pytest.approx(logme(feats, labels), rel=1e-6)


def test_logme_orders_features_by_label_noise() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 400)
    centres = 2.0 * rng.standard_normal((5, 24))
    scores = []
    for flipped in (0.0, 0.3, 0.6):
        # features made from labels of which a fraction was replaced by random ones
        seen = np.where(rng.random(400) < flipped, rng.integers(0, 5, 400), labels)
        feats = centres[seen] + rng.standard_normal((400, 24))
        scores.append(logme(feats, labels))
    assert scores[0] > scores[1] > scores[2]


def test_leep_on_a_hand_computed_example() -> None:
    # theta(x1) = (0.8, 0.2) with y1 = 0; theta(x2) = (0.6, 0.4) with y2 = 1.
    # Joint P(y, z) = mean over x of theta(x)_z 1[y]: P(0,0)=0.4, P(0,1)=0.1, P(1,0)=0.3,
    # P(1,1)=0.2; P(z=0)=0.7, P(z=1)=0.3, so P(0|0)=4/7, P(0|1)=1/3, P(1|0)=3/7, P(1|1)=2/3.
    # EEP(y1|x1) = 0.8*4/7 + 0.2*1/3 = 11/21; EEP(y2|x2) = 0.6*3/7 + 0.4*2/3 = 11/21.
    # LEEP = mean log = log(11/21).
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    assert leep(probs, np.array([0, 1])) == pytest.approx(math.log(11 / 21), rel=1e-12)


def test_nce_on_a_hand_computed_example() -> None:
    # z = (0, 0, 1, 1), y = (0, 1, 1, 1): H(Y|Z=0) = log 2 (one of each), H(Y|Z=1) = 0,
    # each Z value has probability 1/2, so NCE = -H(Y|Z) = -log(2) / 2.
    z, y = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert nce(z, y) == pytest.approx(-math.log(2) / 2, rel=1e-12)
    # when the source label determines the target label (any relabelling), NCE is 0
    assert nce(np.array([3, 3, 7, 7]), np.array([1, 1, 0, 0])) == pytest.approx(0.0, abs=1e-12)


def test_leep_is_higher_when_source_outputs_inform_the_target() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 500)
    # the source has 6 classes; target class c mostly lights up source classes 2c and 2c+1
    logits = rng.standard_normal((500, 6))
    logits[np.arange(500), 2 * labels + rng.integers(0, 2, 500)] += 3.0
    informative = softmax(logits, axis=1)
    uninformative = softmax(rng.standard_normal((500, 6)), axis=1)
    assert leep(informative, labels) > leep(uninformative, labels)
    assert leep(informative, labels) <= 0.0
    assert nce(informative.argmax(1), labels) > nce(uninformative.argmax(1), labels)


def test_all_scores_leaves_source_scores_out_without_source_outputs() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 90)
    feats = _class_features(labels, 8, 1.0, rng)
    without = all_scores(feats, labels)
    assert tuple(without) == SCORES
    assert without["leep"] is None and without["nce"] is None
    probs = softmax(rng.standard_normal((90, 5)), axis=1)
    with_probs = all_scores(feats, labels, probs)
    assert with_probs["leep"] == pytest.approx(leep(probs, labels))
    assert with_probs["logme"] == pytest.approx(without["logme"])


def test_leep_refuses_logits() -> None:
    with pytest.raises(ValueError, match="probability"):
        leep(np.array([[2.0, -1.0], [0.5, 3.0]]), np.array([0, 1]))


# --- divergence ----------------------------------------------------------------------------

def test_proxy_a_distance_near_zero_for_one_distribution_and_two_for_separated() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((200, 6))
    same = proxy_a_distance(a, rng.standard_normal((300, 6)))
    assert same["n"] == 200  # the larger side is subsampled to balance the classes
    assert same["pad"] < 0.4
    far = proxy_a_distance(a, rng.standard_normal((200, 6)) + 4.0)
    assert far["pad"] > 1.9 and far["domain_error"] < 0.03


def test_mmd_is_small_for_one_distribution_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((250, 8))
    same = mmd(a, rng.standard_normal((250, 8)))
    small = mmd(a, rng.standard_normal((250, 8)) + 0.5)
    large = mmd(a, rng.standard_normal((250, 8)) + 2.0)
    assert abs(same) < 0.02
    assert small > 0.1
    assert large > small


# --- similarity ----------------------------------------------------------------------------

def test_linear_cka_invariances_and_unrelated_inputs() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((200, 10)) @ rng.standard_normal((10, 10))
    q = ortho_group.rvs(10, random_state=7)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x) == pytest.approx(1.0)
    assert linear_cka(x, rng.standard_normal((200, 10))) < 0.1
    # wide inputs (n < d1 * d2 / n) take the Gram-matrix path and agree with the invariance
    wide = rng.standard_normal((20, 300))
    assert linear_cka(wide, wide @ ortho_group.rvs(300, random_state=8)) == pytest.approx(1.0)


# --- calibration ---------------------------------------------------------------------------

def test_ece_small_when_calibrated_and_large_when_over_confident() -> None:
    rng = np.random.default_rng(9)
    conf = rng.uniform(0.5, 1.0, 4000)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(rng.random(4000) < conf, 0, 1)  # class 0 is right with probability conf
    assert ece(probs, labels) < 0.03
    # 99% confident, right 60% of the time
    over = np.tile([0.99, 0.01], (4000, 1))
    wrong = np.where(rng.random(4000) < 0.6, 0, 1)
    assert ece(over, wrong) == pytest.approx(0.39, abs=0.03)


def test_reliability_table_counts_and_bins() -> None:
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.45, 0.55], [1.0, 0.0]])
    table = reliability(probs, np.array([0, 1, 1, 0]), bins=10)
    assert sum(table["count"]) == 4
    assert table["count"][9] == 2 and table["count"][5] == 2  # 0.55 falls in (0.5, 0.6]
    assert table["accuracy"][5] == pytest.approx(0.5)
    assert table["confidence"][0] is None  # empty bin


def test_temperature_scaling_repairs_over_confident_logits() -> None:
    rng = np.random.default_rng(10)
    true_logits = 1.5 * rng.standard_normal((3000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits, axis=1)])
    logits = 4.0 * true_logits  # the model is four times too sure of itself
    assert fit_temperature(logits[:1500], labels[:1500]) == pytest.approx(4.0, rel=0.15)
    report = calibration_report(logits[:1500], labels[:1500], logits[1500:], labels[1500:])
    assert report["temperature"] > 1.0
    assert report["ece_after"] < report["ece_before"] / 2
    assert report["nll_after"] < report["nll_before"]
    assert sum(report["reliability_after"]["count"]) == 1500


# --- verdict -------------------------------------------------------------------------------

def test_paired_bootstrap_covers_the_true_difference() -> None:
    rng = np.random.default_rng(11)
    a = rng.random(3000) < 0.80
    b = rng.random(3000) < 0.70
    res = paired_bootstrap(a, b, resamples=2000, seed=0)
    assert res["low"] < 0.10 < res["high"]
    assert res["low"] > 0  # a 10-point difference over 3,000 examples is not noise
    assert res["margin"] == pytest.approx(a.mean() - b.mean())
    assert paired_bootstrap(a, b, resamples=2000, seed=0) == res  # seeded


def test_paired_bootstrap_includes_zero_without_a_difference() -> None:
    rng = np.random.default_rng(12)
    a = rng.random(500) < 0.7
    res = paired_bootstrap(a, rng.random(500) < 0.7)
    assert res["low"] < 0 < res["high"]


def test_seed_interval_matches_welch_and_needs_two_seeds() -> None:
    res = seed_interval([0.80, 0.82, 0.84], [0.70, 0.71, 0.72])
    # Welch: se^2 = 0.0004/3 + 0.0001/3; df = (se^2)^2 / ((0.0004/3)^2/2 + (0.0001/3)^2/2)
    se = math.sqrt(0.0005 / 3)
    df = (0.0005 / 3) ** 2 / (((0.0004 / 3) ** 2 + (0.0001 / 3) ** 2) / 2)
    assert res["margin"] == pytest.approx(0.11)
    assert res["df"] == pytest.approx(df)
    from scipy.stats import t
    assert res["high"] - res["margin"] == pytest.approx(t.ppf(0.975, df) * se)
    with pytest.raises(ValueError, match="2 seeds"):
        seed_interval([0.8], [0.7, 0.72])


def test_verdict_reads_the_interval() -> None:
    assert verdict(0.01, 0.05, 0.03) == "positive transfer"
    assert verdict(-0.05, -0.01, -0.03) == "negative transfer"
    assert verdict(-0.01, 0.05, 0.02) == "no measurable effect"
    with pytest.raises(ValueError):
        verdict(0.05, 0.01, 0.03)


def test_transfer_verdict_text_and_wider_interval() -> None:
    rng = np.random.default_rng(13)
    n = 1281
    transfer = rng.random(n) < 0.85
    scratch = rng.random(n) < 0.70
    one = transfer_verdict(transfer, [scratch])
    assert one["verdict"] == "positive transfer"
    assert one["seeds"] is None
    assert one["text"].startswith("positive transfer: +")
    assert "95% CI" in one["text"]
    assert "paired bootstrap over 1,281 test examples, 1 scratch seed)" in one["text"]
    assert 0.10 < one["margin"] < 0.20 and one["low"] < one["margin"] < one["high"]

    # transfer seeds that scatter widely: the seed interval is wider and covers 0
    scratch_seeds = [rng.random(n) < 0.70 for _ in range(3)]
    spread = transfer_verdict(transfer, scratch_seeds, transfer_seed_accs=[0.55, 0.85, 0.95])
    assert spread["seeds"] is not None
    assert spread["method"].startswith("t-interval over 3 transfer seeds and 3 scratch seeds")
    assert spread["verdict"] == "no measurable effect"

    worse = transfer_verdict(scratch, [transfer])
    assert worse["verdict"] == "negative transfer"
    assert worse["text"].startswith("negative transfer: -")
