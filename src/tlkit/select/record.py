"""The record of freeze_strategy auto's choice: every trial (``Trial``), the pick and why
(``Choice``), as summary.json's ``auto`` and the run directory's ``auto.json`` hold it, which a
resumed run reads instead of choosing again."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tlkit.errors import UserError
from tlkit.select.candidates import PIXELS, candidates

RECORD = "auto.json"  # in the run directory

@dataclass
class Trial:
    strategy: str
    rung: int  # 0, 1, ...; -1: no trial (the frozen head's convex solve, or skipped)
    epochs: int
    steps: int
    val_loss: float | None = None
    val_metric: float | None = None
    seconds: float = 0.0
    note: str = ""
    # k-fold cross-validation (fewer validation examples than the trials need): k, the number
    # of examples, each out-of-fold score's mean and standard error (accuracy, brier, loss;
    # the first two for single-label data), each fold's seconds
    cv: dict[str, Any] | None = None


@dataclass
class Choice:
    chosen: str
    settings: dict[str, Any]  # transfer_config keys of the chosen strategy
    budget_seconds: float
    spent_seconds: float
    default_seconds: float  # the default fit's time, estimated
    metric: str
    trials: list[Trial] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # the classical baseline on the same splits (issue 20): its validation loss and metric, and
    # whether it beat the pick by the margin (auto then says so, and still trains the pick)
    classical: dict[str, Any] | None = None
    # the fine-tuning rates and length auto set (the keys the user's config left unset)
    rates: dict[str, Any] = field(default_factory=dict)
    # the rule that decided (a k-fold rule of rule.py, or the validation trials' rule); None in
    # a record written before it was kept
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choice:
        return cls(**{**d, "trials": [Trial(**t) for t in d.get("trials", [])]})


def score(t: Trial) -> float:
    return t.val_loss if t.val_loss is not None else math.inf


def describe(t: Trial, metric: str) -> str:
    if t.val_loss is None:
        return f"auto: {t.strategy}: {t.note}"
    return (f"auto: trial {t.strategy} (rung {t.rung}, {t.epochs} epoch(s), {t.steps} steps): "
            f"val loss {t.val_loss:.4f}, val {metric} {t.val_metric:.4f}, {t.seconds:.1f} s")


def format_choice(choice: Choice) -> str:
    lines = [f"freeze_strategy auto chose {choice.chosen}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in choice.settings.items()) + ")"
                if choice.settings else "")
             + f": trials {choice.spent_seconds:.1f} s of a {choice.budget_seconds:.1f} s budget",
             f"  {'strategy':<15} {'rung':>4} {'epochs':>6} {'steps':>6} {'val loss':>9} "
             f"{'val ' + choice.metric:>13} {'seconds':>8}  note"]
    for t in choice.trials:
        loss = f"{t.val_loss:.4f}" if t.val_loss is not None else "-"
        met = f"{t.val_metric:.4f}" if t.val_metric is not None else "-"
        lines.append(f"  {t.strategy:<15} {t.rung if t.rung >= 0 else '-':>4} {t.epochs:>6} "
                     f"{t.steps:>6} {loss:>9} {met:>13} {t.seconds:>8.1f}  {t.note}")
    lines += [f"  - {r}" for r in choice.reasons]
    if choice.rule:
        lines.append(f"  rule: {choice.rule}")
    return "\n".join(lines)


def recorded_choice(record: Any) -> Choice:
    """The pick a run recorded, checked: its own file, but a file can be edited or damaged."""
    try:
        choice = Choice.from_dict(json.loads(record.read_text()))
        if choice.chosen not in (*candidates(), PIXELS) or not isinstance(choice.settings, dict):
            raise ValueError(f"chosen {choice.chosen!r} is not one of "
                             f"{', '.join(candidates())}, {PIXELS}")
        return choice
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise UserError(f"{record} cannot be read as freeze_strategy auto's record ({e}); it "
                        "is written by fit: restore it, or delete it to run the trials again "
                        "on --resume") from None


def choice_json(choice: Choice) -> str:
    """``choice`` as the run directory's auto.json (``RECORD``) holds it."""
    return json.dumps(choice.to_dict(), indent=1) + "\n"
