"""Transfer plans: freeze strategies, discriminative rates, unfreeze schedules (pure), and where
they touch the model (apply)."""

from tlkit.plan.rates import discriminative_lrs
from tlkit.plan.strategies import PhaseSpec, phase_at, phases_for, selector_count
from tlkit.plan.table import HEAD, GroupRow, GroupSize, Phase, Plan, build_plan, format_plan

__all__ = [
    "HEAD",
    "GroupRow",
    "GroupSize",
    "Phase",
    "PhaseSpec",
    "Plan",
    "build_plan",
    "discriminative_lrs",
    "format_plan",
    "phase_at",
    "phases_for",
    "selector_count",
]
