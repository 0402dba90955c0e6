"""Class weights for long-tailed labels: auto (balanced), or named; macro-F1 stays reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlkit.config import validate
from tlkit.errors import UserError
from tlkit.run import fit_run
from tlkit.inputs import class_weights_of


class _Data:
    task = "single_label"

    def __init__(self, targets: np.ndarray, counts: list[int]) -> None:
        self.targets, self.classes = targets, [f"c{i}" for i in range(len(counts))]

    def __len__(self) -> int:
        return len(self.targets)


def test_auto_weights_are_balanced_and_named_weights_are_checked():
    data = _Data(np.repeat([0, 1, 2], [80, 15, 5]), [80, 15, 5])
    w = class_weights_of("auto", data)
    assert w == pytest.approx([100 / (3 * 80), 100 / (3 * 15), 100 / (3 * 5)])
    assert class_weights_of({"c2": 4.0}, data) == [1.0, 1.0, 4.0]
    assert class_weights_of("none", data) is None
    with pytest.raises(UserError, match="'rare'"):
        class_weights_of({"rare": 2.0}, data)


def test_a_negative_weight_is_refused():
    with pytest.raises(UserError, match="class weights"):
        validate({"transfer_config": {"source_model": "timm:test_efficientnet",
                                      "class_weights": {"a": -1}}, "data": {"source": "digits"}})


@pytest.mark.parametrize("solver", ["convex", "sgd"])
def test_a_heavy_class_weight_makes_the_run_predict_that_class_more(tmp_path: Path, solver: str):
    def predicted_zeros(weights: object) -> int:
        raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                                   "pretrained_weights": "none", "freeze_strategy": "all_frozen",
                                   "epochs": 3, "class_weights": weights, "head_solver": solver,
                                   "head_lr": 1e-2, "cache": {"disk": False}},
               "data": {"source": "digits", "image_size": 32, "limit": 200}}
        out = tmp_path / f"{solver}-{weights if isinstance(weights, str) else 'heavy'}"
        summary = fit_run(validate(raw), out)
        assert "f1_macro" in summary["test"]  # macro-F1 stays in every table
        with np.load(out / "predictions.npz") as z:
            return int((z["test_outputs"].argmax(1) == 0).sum())

    assert predicted_zeros({"0": 20.0}) > predicted_zeros("none")


def test_balanced_weights_find_more_of_the_rare_class():
    from tlkit.train.head_solver import solve

    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat([0, 1], [270, 30]))
    x = rng.normal(size=(300, 5)) + y[:, None] * 0.8  # overlapping classes, 1 rare
    w0, b0, _ = solve("single_label", x[:250], y[:250], x[250:], y[250:], 2)
    counts = np.bincount(y[:250])
    weights = [250 / (2 * c) for c in counts]
    w1, b1, _ = solve("single_label", x[:250], y[:250], x[250:], y[250:], 2, class_weights=weights)
    rare_plain = ((x @ w0.T + b0).argmax(1) == 1).sum()
    rare_weighted = ((x @ w1.T + b1).argmax(1) == 1).sum()
    assert rare_weighted > rare_plain
