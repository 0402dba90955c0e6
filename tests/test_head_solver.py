"""A linear probe on frozen features is solved to convergence: the same head scikit-learn's
logistic regression finds, in place of a few SGD steps that stop short of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tlkit.config import validate
from tlkit.run import fit_run
from tlkit.train.head_solver import C_AFTER_TRAINING, C_GRID, held_out_logits, solve


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)) * rng.uniform(0.5, 5, size=12) + rng.normal(size=12)
    y = (x[:, 0] / 3 + x[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    y += (x[:, 2] > 1).astype(np.int64)
    return x, y


def test_the_head_is_logistic_regression_at_the_chosen_strength():
    x, y = _data(300, 0)
    w, b, sol = solve("single_label", x[:200], y[:200], x[200:], y[200:], 3)
    assert sol.chosen_on == "validation" and sol.c in C_GRID
    mean, std = x[:200].mean(0), x[:200].std(0) + 1e-6
    ref = LogisticRegression(C=sol.c, max_iter=2000).fit((x[:200] - mean) / std, y[:200])
    ours = np.exp(x[200:] @ w.T + b)
    ours /= ours.sum(1, keepdims=True)
    assert np.abs(ours - ref.predict_proba((x[200:] - mean) / std)).max() < 1e-6
    # the strength chosen has the lowest validation loss of the grid
    assert sol.scores[sol.c] == min(sol.scores.values())


def test_a_small_validation_split_chooses_by_cross_validation_and_unseen_classes_lose():
    x, y = _data(60, 1)
    w, b, sol = solve("single_label", x[:50], y[:50], x[50:], y[50:], 4)  # class 3 never seen
    assert "cross-validation" in sol.chosen_on
    assert ((x @ w.T + b).argmax(1) != 3).all()


def test_after_a_trained_backbone_few_validation_examples_give_setfits_head_not_a_choice():
    """Cross-validation over the training examples a backbone has fitted would pick the weakest
    penalty; with too few validation examples the head is scikit-learn's default on the
    features as given (SetFit's head), and the run says so."""
    x, y = _data(60, 1)
    w, b, sol = solve("single_label", x[:50], y[:50], x[50:], y[50:], 3, refit=True,
                      trained=True)
    assert sol.c == C_AFTER_TRAINING and not sol.standardized and not sol.scores
    assert sol.chosen_on.startswith("no choice: the backbone trained on these training labels")
    ref = LogisticRegression(C=C_AFTER_TRAINING, max_iter=2000).fit(x, y)  # on every label
    ours = np.exp(x @ w.T + b)
    ours /= ours.sum(1, keepdims=True)
    assert np.abs(ours - ref.predict_proba(x)).max() < 1e-5
    # its stand-in validation outputs (for the temperature) are fitted the same way
    held = held_out_logits("single_label", x[:50], y[:50], x[50:], sol.c, 3, standardized=False)
    ref = LogisticRegression(C=C_AFTER_TRAINING, max_iter=2000).fit(x[:50], y[:50])
    assert np.abs(held - ref.decision_function(x[50:])).max() < 1e-4
    # enough validation examples (which the backbone never trained on): chosen on them
    x, y = _data(300, 2)
    *_, sol = solve("single_label", x[:200], y[:200], x[200:], y[200:], 3, trained=True)
    assert sol.chosen_on == "validation" and sol.standardized and sol.c in C_GRID


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_multi_label_and_regression_heads_have_the_output_shape(task: str):
    x, y = _data(120, 2)
    target = (np.stack([y == 1, y == 2, y >= 0], 1).astype(np.float32) if task == "multi_label"
              else x[:, :1].astype(np.float32).ravel() * 2)
    n_out = 3 if task == "multi_label" else 1
    w, b, _ = solve(task, x[:100], target[:100], x[100:], target[100:], n_out)
    assert w.shape == (n_out, 12) and b.shape == (n_out,)
    if task == "regression":
        assert np.abs(x[100:] @ w.T + b - target[100:, None]).max() < 0.5


def test_all_frozen_converges_where_sgd_epochs_stop_short(tmp_path: Path):
    def fit(solver: str) -> list[dict]:
        raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                                   "pretrained_weights": "none", "freeze_strategy": "all_frozen",
                                   "epochs": 3, "head_solver": solver, "cache": {"disk": False}},
               "data": {"source": "digits", "image_size": 32, "limit": 150}}
        fit_run(validate(raw), tmp_path / solver)
        text = (tmp_path / solver / "metrics.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    convex, sgd = fit("convex"), fit("sgd")
    assert len(convex) == 1 and convex[0]["head_solver"]["c"] in C_GRID
    assert len(sgd) == 3 and "head_solver" not in sgd[0]
    assert convex[0]["train_loss"] < sgd[-1]["train_loss"]


def test_refit_fits_on_every_label_as_logistic_regression_cv_would():
    x, y = _data(300, 3)
    w, b, sol = solve("single_label", x[:200], y[:200], x[200:], y[200:], 3, refit=True)
    assert sol.val_in_fit and "training and validation together" in sol.chosen_on
    mean, std = x.mean(0), x.std(0) + 1e-6
    ref = LogisticRegression(C=sol.c, max_iter=2000).fit((x - mean) / std, y)
    ours = np.exp(x @ w.T + b)
    ours /= ours.sum(1, keepdims=True)
    assert np.abs(ours - ref.predict_proba((x - mean) / std)).max() < 1e-6
    # too small a validation split: the strength by cross-validation over both splits
    _, _, small = solve("single_label", x[:50], y[:50], x[50:60], y[50:60], 3, refit=True)
    assert "cross-validation on the training and validation splits" in small.chosen_on


def test_an_all_frozen_run_uses_its_validation_labels_unless_validation_is_its_only_measure(
        tmp_path: Path):
    def run(name: str, **data: object) -> dict:
        raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                                   "pretrained_weights": "none", "cache": {"disk": False}},
               "data": {"source": "digits", "image_size": 32, "limit": 150, **data}}
        return fit_run(validate(raw), tmp_path / name)

    with_test = run("test")
    assert with_test["val_in_fit"] is True
    # calibration's temperature is fitted on held-out outputs (the head fitted on train alone)
    assert with_test["calibration"]["temperature"] > 0
    no_test = run("no-test", test_fraction=0)
    assert "val_in_fit" not in no_test  # validation is what it reports: kept out of the fit


def test_twenty_validation_examples_are_too_few_to_choose_the_strength_on():
    # 200 labels at the default validation share: the 20 held out no longer decide the strength
    # alone (their loss picked C 1e-3 on some Rotten Tomatoes draws, 5 points below a plain
    # logistic regression); every label votes through cross-validation
    x, y = _data(200, 4)
    _, _, sol = solve("single_label", x[:180], y[:180], x[180:], y[180:], 3, refit=True)
    assert "5-fold cross-validation on the training and validation splits" in sol.chosen_on
    _, _, big = solve("single_label", x[:150], y[:150], x[150:], y[150:], 3, refit=True)
    assert big.chosen_on.startswith("validation")


class _Aligning:
    """A hook whose forward trains the features (domain adaptation's shape)."""

    def forward(self, *a: object) -> None: ...


@pytest.mark.parametrize("strategy,solver,hooks,built", [
    ("all_frozen", "convex", [], True), ("lp_ft", "convex", [], True),
    ("all_frozen", "sgd", [], False), ("top_n_unfrozen", "convex", [], False),
    ("all_frozen", "convex", [_Aligning()], False)])
def test_the_loop_adds_the_convex_head_hook_where_the_plan_and_settings_call_for_it(
        strategy: str, solver: str, hooks: list, built: bool) -> None:
    from tlkit.assemble import assemble
    from tlkit.distributed import SINGLE
    from tlkit.train.head_solver import ConvexHead

    keys = {"lp_ft": {"lp_epochs": 1}, "top_n_unfrozen": {"top_n": 1}}.get(strategy, {})
    tc = validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                       "pretrained_weights": "none", "freeze_strategy": strategy,
                                       "head_solver": solver, "epochs": 2, **keys},
                   "data": {"source": "digits"}}).transfer_config
    hook = ConvexHead.of(assemble(tc, 10), None, tc.loop_settings, SINGLE, hooks,
                         lambda kind, info: None)
    assert (hook is not None) == built
