"""Training length in steps: small data gets at least min_steps optimizer steps (each epoch
several passes, each in its own order), warmup relative to the steps, the plan prints the
steps per phase; and the balanced sampler draws each class equally often."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from tlkit.config import validate
from tlkit.errors import UserError
from tlkit.plan.length import length_of
from tlkit.run import fit_run
from tlkit.train.batches import epoch_batches, weighted_order


def _settings(**kw: object) -> SimpleNamespace:
    base = dict(batch_size=32, gradient_accumulation_steps=1, epochs=10, min_steps=100,
                warmup_steps=0, warmup_ratio=0.06)
    return SimpleNamespace(**{**base, **kw})


def test_80_examples_get_at_least_min_steps_and_warmup_is_a_share_of_them():
    # the case: 80 examples, batch 32, 10 epochs were 30 steps
    n = length_of(80, _settings())
    assert (n.batches_per_pass, n.passes, n.steps_per_epoch) == (3, 4, 12)
    assert n.total_steps == 120 >= 100
    assert n.warmup == round(0.06 * 120)
    # large data: one pass per epoch, as before; warmup_steps wins where it is more
    big = length_of(3200, _settings(warmup_steps=50))
    assert (big.passes, big.total_steps, big.warmup) == (1, 1000, 60)
    assert length_of(3200, _settings(warmup_steps=90)).warmup == 90
    assert length_of(80, _settings(min_steps=0)).total_steps == 30  # off
    # accumulation: steps count optimizer steps, not batches
    acc = length_of(80, _settings(gradient_accumulation_steps=2))
    assert acc.total_steps >= 100 and acc.steps_per_epoch == -(-acc.batches_per_epoch // 2)


def test_passes_of_an_epoch_are_each_a_permutation_in_their_own_order():
    passes = [epoch_batches(40, 8, 0, e) for e in range(3)]
    orders = [[i for b in p for i in b] for p in passes]
    assert all(sorted(o) == list(range(40)) for o in orders)
    assert orders[0] != orders[1] != orders[2]


def test_the_balanced_sampler_draws_each_class_about_equally():
    targets = [0] * 90 + [1] * 10
    weights = [1 / 90 if t == 0 else 1 / 10 for t in targets]
    drawn = Counter(targets[i] for e in range(20) for i in weighted_order(weights, 0, e))
    assert 0.4 < drawn[1] / (drawn[0] + drawn[1]) < 0.6  # 10% of the data, half the draws
    assert weighted_order(weights, 0, 3) == weighted_order(weights, 0, 3)  # seeded


def _raw(tmp_path: Path, **tc: object) -> dict[str, object]:
    return {"transfer_config": {"source_model": "timm:test_efficientnet",
                                "pretrained_weights": "none", "freeze_strategy": "none",
                                "epochs": 2, "batch_size": 16, "cache": {"disk": False}, **tc},
            "data": {"source": "digits", "image_size": 32, "limit": 60}}


def test_a_small_run_takes_min_steps_and_its_plan_says_so(tmp_path: Path):
    steps: list[int] = []

    def count(kind: str, info: dict) -> None:
        if kind == "step":
            steps.append(1)

    fit_run(validate(_raw(tmp_path, min_steps=40)), tmp_path / "run", event=count)
    n_train = json.loads((tmp_path / "run" / "summary.json").read_text())["data"]["sizes"]["train"]
    per_pass = -(-n_train // 16)
    assert len(steps) == 2 * per_pass * -(-40 // (2 * per_pass)) >= 40
    plan = (tmp_path / "run" / "plan.txt").read_text()
    assert f"optimizer steps 0-{len(steps) - 1}" in plan
    assert f"training length: {len(steps)} optimizer steps" in plan


def test_balanced_sampler_needs_single_label_data(tmp_path: Path):
    raw = _raw(tmp_path, sampler="balanced")
    raw["data"] = {"source": "x.csv", "task": "regression"}  # type: ignore[index]
    with pytest.raises(UserError, match="sampler balanced"):
        validate(raw)


def test_a_run_with_the_balanced_sampler_trains(tmp_path: Path):
    summary = fit_run(validate(_raw(tmp_path, sampler="balanced", min_steps=10)), tmp_path / "run")
    assert "f1_macro" in summary["test"]
