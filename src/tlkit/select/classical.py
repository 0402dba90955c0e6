"""The classical baseline (TF-IDF or raw pixels + logistic regression,
``tlkit.diagnose.classical``) on the splits a fit of the config cuts (``fit_on_splits``: for
``fit --baseline`` and ``compare``), and against freeze_strategy auto's pick on validation
(``against_pick``): not a candidate (a run's model is a network tlkit serves), but where it beats
the pick by the margin a trial must, the choice says so plainly."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkit.config import Config
from tlkit.data import num_outputs_of
from tlkit.diagnose.classical import ClassicalResult, fit_classical
from tlkit.events import Event
from tlkit.inputs import class_weights_of, limited, load_data
from tlkit.metrics import compute_metrics
from tlkit.select.candidates import MARGIN
from tlkit.select.record import Trial
from tlkit.select.trials import Base
from tlkit.train.evaluate import example_losses
from tlkit.train.selection import noise_of


def fit_on_splits(cfg: Config, test_limit: int | None = None,
                  event: Any = lambda k, i: None) -> tuple[ClassicalResult, Any]:
    """The classical baseline on the splits a fit of ``cfg`` cuts (the test split cut to
    ``test_limit`` as that fit's), and those splits."""
    _, splits = load_data(cfg)
    splits = limited(splits, test_limit, cfg.data.seed)
    event("stage", {"what": f"baseline: classical, on {len(splits.train):,} training examples"})
    result = fit_classical(splits.train, splits.val, splits.test, num_outputs_of(splits.train),
                           cfg.transfer_config.seed, cfg.diagnostics.classical_image_size,
                           class_weights_of(cfg.transfer_config.class_weights, splits.train))
    return result, splits


def against_pick(base: Base, cfg: Config, chosen: str, scores: dict[str, float],
                 losses: dict[str, list[float]], metric: str, event: Event,
                 trials: list[Trial], reasons: list[str]) -> dict[str, Any] | None:
    """The classical baseline, fitted on the training split, against the pick ``chosen`` on
    validation: its record (and a reason, where it beats the pick by ``MARGIN`` paired
    standard errors)."""
    val = base.splits.val
    if len(val) == 0:
        return None
    event("stage", {"what": "freeze_strategy auto: the classical baseline on the same splits"})
    r = fit_classical(base.splits.train, val, None, base.n_out, cfg.transfer_config.seed,
                      cfg.diagnostics.classical_image_size)
    mine = example_losses(r.val_outputs, val.targets, val.task)
    shown = compute_metrics(r.val_outputs, val.targets, val.task).get(metric)
    trial = Trial("classical", -1, 0, 0, float(mine.mean()),
                  None if shown is None else float(shown), round(r.seconds, 2),
                  note=f"not a transfer candidate: {r.name}, C {r.c:g} by cross-validation "
                       "on the training split")
    trials.append(trial)
    out: dict[str, Any] = {"name": r.name, "val_loss": float(mine.mean()),
                           f"val_{metric}": trial.val_metric, "seconds": round(r.seconds, 2),
                           "beats_pick": False}
    if chosen not in losses or len(mine) < 2:
        return out
    theirs = np.asarray(losses[chosen])
    gain = float((theirs - mine).mean())
    se = noise_of(mine, losses[chosen], "loss")
    if gain > MARGIN * se:
        out["beats_pick"] = True
        out["said"] = (f"the classical baseline ({r.name}) has a lower validation loss than "
                       f"{chosen} ({mine.mean():.4f} against {scores.get(chosen, theirs.mean()):.4f}, "
                       f"by more than {MARGIN:g} paired standard errors): transfer is not paying "
                       f"for itself here. This run trains {chosen}, the best transfer candidate; "
                       "`tlkit fit --baseline` gives the verdict on the test split")
        reasons.append(out["said"])
    return out
