"""Transfer plans: discriminative rates and the phases of a strategy as a table of every group
(pure), and where a plan touches the model (apply). The strategies themselves are in
``tlkit.strategies``."""

from tlkit.plan.rates import discriminative_lrs
from tlkit.plan.table import (HEAD, GroupRow, GroupSize, Phase, Plan, build_plan, format_plan,
                              plan_record)
from tlkit.strategies import PhaseSpec, phase_at, selector_count

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
    "plan_record",
    "selector_count",
]
