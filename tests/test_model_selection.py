"""Model selection: the best epoch follows the validation loss by default (the task's metric as an
option), ties go to the later epoch, and a validation split too small to choose on says so."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
import torch

from tlkit.config import TransferConfig, validate
from tlkit.errors import UserError
from tlkit.train.selection import (
    at_least_as_good,
    improves,
    monitored,
    noisy_because,
    noisy_note,
    selection_summary,
)


def test_the_loss_is_followed_by_default_and_the_metric_on_request() -> None:
    tc = TransferConfig(source_model="timm:test_efficientnet", pretrained_weights="none")
    assert tc.model_selection == "val_loss"
    assert tc.loop_settings.model_selection == "val_loss"
    for task in ("single_label", "multi_label", "regression"):
        assert monitored(task, "val_loss") == ("loss", "min")
    assert monitored("single_label", "val_metric") == ("accuracy", "max")
    assert monitored("multi_label", "val_metric") == ("f1_macro", "max")
    assert monitored("regression", "val_metric") == ("loss", "min")


def test_an_unknown_choice_is_refused_with_the_allowed_ones() -> None:
    raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                               "model_selection": "accuracy"},
           "data": {"source": "digits"}}
    with pytest.raises(UserError, match="model_selection.*val_loss.*val_metric"):
        validate(raw)


def _choose(values: list[float], mode: str) -> tuple[int, list[int]]:
    """The best epoch of a sequence of validation values, and the bad-epoch count after each,
    as the loop computes them."""
    best: float | None = None
    best_epoch, bad, bads = -1, 0, []
    for epoch, v in enumerate(values):
        bad = 0 if improves(v, best, mode) else bad + 1
        if at_least_as_good(v, best, mode):
            best, best_epoch = v, epoch
        bads.append(bad)
    return best_epoch, bads


def test_ties_go_to_the_later_epoch_and_do_not_reset_patience() -> None:
    # accuracy that saturates at the first epoch: the last of the equal epochs is kept
    assert _choose([0.9, 0.9, 0.9], "max") == (2, [0, 1, 2])
    assert _choose([0.5, 0.9, 0.8, 0.9], "max") == (3, [0, 0, 1, 2])
    # a loss: lower is better, an equal loss later wins too
    assert _choose([1.0, 0.8, 0.8, 0.9], "min") == (2, [0, 0, 1, 2])
    assert _choose([1.0, 0.7, 0.9], "min") == (1, [0, 0, 1])
    assert at_least_as_good(0.3, None, "min") and improves(0.3, None, "max")


def test_a_tiny_validation_split_is_called_noisy() -> None:
    assert noisy_because(49, 2) is not None and noisy_because(50, 2) is None
    assert noisy_because(80, 20) is not None  # 4 a class
    assert noisy_because(100, 20) is None
    assert noisy_because(60, None) is None  # regression: no classes
    s = selection_summary("val_loss", "single_label", 30, 10)
    assert s["on"] == "val_loss" and s["metric"] == "val_loss" and s["val_examples"] == 30
    assert s["noisy"] is True and "30 validation examples" in s["why"]
    assert selection_summary("val_metric", "single_label", 500, 10) == {
        "on": "val_metric", "metric": "val_accuracy", "val_examples": 500, "noisy": False}
    note = noisy_note("val_loss", "single_label", 30, 10)
    assert note is not None and "noisy" in note and "30 validation examples" in note
    assert noisy_note("val_loss", "single_label", 500, 10) is None


# ------------------------------------------------------------------------------------------------
# The acceptance case, through the loop


def _separable(n: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    """Dark images of class 0 and bright ones of class 1: the head tells them apart after one
    epoch, and its margin (so the validation loss) keeps growing after that."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, 32, 32, generator=g) * 0.2 + (0.8 if i % 2 else -1.0), i % 2)
            for i in range(n)]


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def _fit(on: str, epochs: int = 4) -> tuple[Any, dict[int, dict[str, torch.Tensor]],
                                            dict[str, torch.Tensor], list[str]]:
    from tlkit.assemble import assemble
    from tlkit.train.hooks import NO_IO
    from tlkit.train.loop import TrainData, fit

    tc = TransferConfig(source_model="timm:test_efficientnet", pretrained_weights="none",
                        freeze_strategy="all_frozen", epochs=epochs, batch_size=16,
                        head_lr=3e-2, scheduler="constant", early_stopping_patience=None,
                        model_selection=on, device="cpu")
    torch.manual_seed(0)
    asm = assemble(tc, 2)
    saved: dict[int, dict[str, torch.Tensor]] = {}  # the weights save_best got, by epoch
    stages: list[str] = []

    def save_best(model: torch.nn.Module, state: Any) -> None:
        saved[state.best_epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    def load_best(model: torch.nn.Module) -> None:
        model.load_state_dict(saved[max(saved)])

    io = dataclasses.replace(NO_IO, save_best=save_best, load_best=load_best,
                             event=lambda k, i: stages.append(i["what"]) if k == "stage" else None)
    data = TrainData(_separable(64, 0), _separable(32, 1), _collate, "single_label", ["a", "b"])
    state = fit(asm, data, tc.loop_settings, io)
    return state, saved, asm.model.state_dict(), stages


def test_accuracy_saturated_at_the_first_epoch_the_falling_loss_picks_a_later_one() -> None:
    state, saved, restored, stages = _fit("val_loss")
    acc = [r["val_accuracy"] for r in state.history]
    loss = [r["val_loss"] for r in state.history]
    assert acc == [1.0] * len(acc), acc  # the case: accuracy saturates at the first epoch
    assert all(b < a for a, b in itertools.pairwise(loss)), loss  # while the loss keeps falling
    assert state.best_epoch == len(loss) - 1
    # the weights restored are the best (last) epoch's, not the first's
    assert all(torch.equal(restored[k], saved[state.best_epoch][k]) for k in restored)
    assert not all(torch.equal(restored[k], saved[0][k]) for k in restored)
    # 32 validation examples: the run says the choice is noisy
    assert any("noisy" in s and "32 validation examples" in s for s in stages), stages


def test_on_the_metric_a_tie_still_goes_to_the_later_epoch() -> None:
    state, _, _, _ = _fit("val_metric", epochs=3)
    assert [r["val_accuracy"] for r in state.history] == [1.0] * 3
    assert state.best_epoch == 2
    # the kept epoch's losses per example are its own (auto's paired comparisons read them),
    # not the first epoch's, which holds the best value's for the noise
    kept = state.history[state.best_epoch]["val_loss"]
    assert sum(state.kept_losses) / len(state.kept_losses) == pytest.approx(kept, rel=1e-5)
    assert kept != pytest.approx(sum(state.best_losses) / len(state.best_losses), rel=1e-3)


def test_within_the_loss_noise_the_metric_decides():
    """A later epoch whose validation loss the split cannot tell from the best one is kept when
    its accuracy is at least as good, not when it is worse."""
    import numpy as np

    from tlkit.train.selection import noise_of, within_noise

    rng = np.random.default_rng(0)
    best = rng.exponential(0.5, 400)
    later = best + rng.normal(0.02, 0.3, 400)  # 0.02 higher on average, noise 0.3 each
    noise = noise_of(later, best.tolist(), "loss")
    assert noise > 0.01
    assert within_noise(float(later.mean()), float(best.mean()), noise, "min")
    assert not within_noise(float(best.mean()) + 3 * noise, float(best.mean()), noise, "min")
    assert noise_of(later, best.tolist(), "accuracy") == 0.0
