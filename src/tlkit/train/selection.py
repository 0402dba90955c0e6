"""Which epoch's weights a run keeps, and when that choice is noise.

The best epoch is the one with the lowest validation loss (``model_selection: val_loss``, the
default) or the best task metric (``val_metric``: accuracy for single-label, macro-F1 for
multi-label; regression follows its loss either way). Accuracy on a small validation split moves
in steps of 1/n and saturates: it ties, or differs by one example, between epochs whose loss
still says which is better. A tie goes to the later epoch (it has trained more for the same
score), and so does a validation loss within one standard error of the lowest (the standard
error of the two epochs' difference, paired over the validation examples): a difference the
split cannot tell is not a reason to keep an earlier epoch, unless the task metric (accuracy,
macro-F1) says the earlier one is better: within the loss's noise the metric decides. Early stopping's patience follows the same value, and only a strict improvement resets
it: a plateau of equal scores still runs out of patience.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkit.metrics import monitor_metric

# Below either, one example more or less right moves the validation accuracy by 2% or more of a
# class's share, and the best epoch it picks is mostly chance.
MIN_VAL_EXAMPLES = 50
MIN_VAL_PER_CLASS = 5


def monitored(task: str, on: str) -> tuple[str, str]:
    """The key of the validation metrics the choice follows, and "min" or "max"."""
    return ("loss", "min") if on == "val_loss" else monitor_metric(task)


def at_least_as_good(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` takes the best epoch's place: better than ``best``, or equal to it
    (ties go to the later epoch)."""
    return best is None or (value >= best if mode == "max" else value <= best)


def noise_of(losses: np.ndarray, best_losses: list[float] | None, monitor: str) -> float:
    """One standard error of the difference between this epoch's validation loss and the best
    epoch's, paired over the examples (0 for a metric, or when either is missing)."""
    if monitor != "loss" or best_losses is None or len(losses) != len(best_losses) \
            or len(losses) < 2:
        return 0.0
    d = losses - np.asarray(best_losses)
    return float(d.std(ddof=1) / np.sqrt(len(d)))


def within_noise(value: float, best: float | None, noise: float, mode: str) -> bool:
    """Whether ``value`` is as good as ``best`` up to ``noise`` (one standard error of their
    difference): such a later epoch takes the best epoch's place, since the difference is not
    one the validation split can tell."""
    if best is None:
        return True
    return value <= best + noise if mode == "min" else value >= best - noise


def improves(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` is strictly better than ``best``: what resets early stopping."""
    return best is None or (value > best if mode == "max" else value < best)


def judge(val: dict[str, Any], losses: np.ndarray | None, kept: Any, task: str, on: str
          ) -> tuple[float, float, bool, bool]:
    """An epoch against the kept one (``kept``: the loop's state, its ``best_value``,
    ``best_losses`` and ``best_metric``): the epoch's monitored value and task metric, whether
    the value strictly improves on the best (what resets patience), and whether the epoch takes
    the kept one's place: a new best value, or a value within the noise (a paired standard
    error) of the best with a task metric at least the kept epoch's. Without each example's
    loss (``losses`` None: an objective's held-out value) there is no noise to measure, and
    only a strict improvement counts."""
    monitor, mode = monitored(task, on)
    value, metric = val[monitor], val[monitor_metric(task)[0]]
    new_best = improves(value, kept.best_value, mode)
    as_good = losses is not None and within_noise(
        value, kept.best_value, noise_of(losses, kept.best_losses, monitor), mode) \
        and at_least_as_good(metric, kept.best_metric, monitor_metric(task)[1])
    return value, metric, new_best, new_best or as_good


def noisy_because(n_val: int, n_classes: int | None) -> str | None:
    """Why a validation split of ``n_val`` examples is too small to choose an epoch on, or
    None when it is not."""
    if n_val < MIN_VAL_EXAMPLES:
        return f"{n_val} validation examples (fewer than {MIN_VAL_EXAMPLES})"
    if n_classes and n_val < MIN_VAL_PER_CLASS * n_classes:
        return (f"{n_val} validation examples for {n_classes} classes (fewer than "
                f"{MIN_VAL_PER_CLASS} a class)")
    return None


def selection_summary(on: str, task: str, n_val: int, n_classes: int | None) -> dict[str, Any]:
    """The run's ``model_selection`` entry of summary.json."""
    metric, _ = monitored(task, on)
    reason = noisy_because(n_val, n_classes)
    return {"on": on, "metric": f"val_{metric}", "val_examples": n_val,
            "noisy": reason is not None, **({"why": reason} if reason else {})}


def noisy_note(on: str, task: str, n_val: int, n_classes: int | None) -> str | None:
    """The line the run prints at the start of training when the choice is noise."""
    reason = noisy_because(n_val, n_classes)
    if reason is None:
        return None
    metric, _ = monitored(task, on)
    return (f"the best epoch is chosen on val_{metric} over {reason}: the choice is noisy; "
            "give more validation data (data.val_fraction) for a choice that means something")
