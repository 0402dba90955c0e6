"""The plan as data: for every phase, every group's size, trainable flag, learning rate and weight
decay. Built by a pure function of (group sizes, config); printed by ``tlkit plan``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tlkit import strategies
from tlkit.errors import UserError
from tlkit.plan.length import Length
from tlkit.plan.rates import discriminative_lrs
from tlkit.strategies import PhaseSpec

HEAD = "head"


@dataclass(frozen=True)
class GroupSize:
    name: str
    n_params: int  # number of scalar parameters
    n_decay: int  # of which take weight decay (not norms, biases or listed exceptions)
    n_adapter: int = 0  # of which are adapter (LoRA) parameters added to the pretrained ones


@dataclass(frozen=True)
class GroupRow:
    name: str
    n_params: int
    trainable: bool
    lr: float
    weight_decay: float  # applied to the group's decaying tensors; norms and biases get 0
    n_no_decay: int
    n_adapter: int = 0
    adapters_only: bool = False  # trainable means: its adapter parameters train, nothing else

    @property
    def n_trainable(self) -> int:
        if not self.trainable:
            return 0
        return self.n_adapter if self.adapters_only else self.n_params


@dataclass(frozen=True)
class Phase:
    index: int
    start_epoch: int
    end_epoch: int
    label: str
    rows: tuple[GroupRow, ...]  # backbone groups input -> output, then the head
    converge_head: bool = False  # a linear probe: fitted to convergence where it can be

    @property
    def trainable_params(self) -> int:
        return sum(r.n_trainable for r in self.rows)


@dataclass(frozen=True)
class Plan:
    backbone: str
    strategy: str
    phases: tuple[Phase, ...]
    total_params: int
    notes: tuple[str, ...] = ()  # strategy settings the table does not show (printed below it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def frozen_below(self, phase: Phase) -> int:
        """How many bottom backbone groups are frozen in ``phase``: its cut. Below the cut the
        network is a fixed function (``tlkit.cache`` computes it once)."""
        n_groups = len(phase.rows) - 1  # the last row is the head
        return next((i for i, r in enumerate(phase.rows[:n_groups]) if r.trainable), n_groups)


def build_plan(
    backbone_name: str,
    groups: list[GroupSize],
    head: GroupSize,
    settings: Any,
    backbone_weight_decay: float | None = None,
    notes: tuple[str, ...] = (),
) -> Plan:
    """The plan of ``settings`` (a ``PlanSettings``: the strategy, its keys, the rates) for a
    backbone of these ``groups``. ``backbone_weight_decay`` (default ``weight_decay``) applies
    to the backbone groups, the head keeps ``weight_decay``: L2-SP replaces the backbone's decay
    toward zero with its pull toward the pretrained weights."""
    n = len(groups)
    lrs = discriminative_lrs(n, settings.backbone_lr, settings.lr_decay_per_layer)
    weight_decay, head_lr = settings.weight_decay, settings.head_lr
    bwd = weight_decay if backbone_weight_decay is None else backbone_weight_decay
    specs: list[PhaseSpec] = strategies.get(settings.freeze_strategy).phases(n, settings)
    phases = []
    for i, spec in enumerate(specs):
        if spec.adapters_only and not any(g.n_adapter for g in groups):
            raise UserError(
                f"phase {i + 1} ({spec.label}) trains adapters, but the backbone has none; "
                "check lora.target_modules"
            )
        rows = [
            GroupRow(g.name, g.n_params,
                     l > n - spec.trainable_top and (g.n_adapter > 0 or not spec.adapters_only),
                     lrs[l - 1] if spec.lr is None else spec.lr, bwd, g.n_params - g.n_decay,
                     g.n_adapter, spec.adapters_only)
            for l, g in enumerate(groups, start=1)
        ]
        rows.append(GroupRow(HEAD, head.n_params, spec.head_trains, head_lr, weight_decay,
                             head.n_params - head.n_decay))
        phases.append(Phase(i, spec.start_epoch, spec.end_epoch, spec.label, tuple(rows),
                            spec.converge_head))
    total = sum(g.n_params for g in groups) + head.n_params
    return Plan(backbone_name, settings.freeze_strategy, tuple(phases), total, tuple(notes))


def _fmt_count(n: int) -> str:
    return f"{n:,}"


def _phase_steps(length: Length, phase: Phase) -> tuple[int, int]:
    """The first and last optimizer step of ``phase`` (counted from 0)."""
    first = length.steps_of(0, phase.start_epoch)
    return first, first + length.steps_of(phase.start_epoch, phase.end_epoch) - 1


def plan_record(plan: Plan, length: Length | None = None) -> dict[str, Any]:
    """The plan table as data, as a run directory's plan.json holds it (a reader needs neither
    torch nor plan.txt's text): ``Plan.to_dict`` (phases indexed from 0, epochs from 0 with
    ``end_epoch`` exclusive, each phase's rows input -> output with the head last) and, with the
    run's ``length``, each phase's ``optimizer_steps`` [first, last]."""
    record = {"format": 1, **plan.to_dict()}
    if length is not None:
        for phase, out in zip(plan.phases, record["phases"], strict=True):
            out["optimizer_steps"] = list(_phase_steps(length, phase))
    return record


def format_plan(plan: Plan, length: Length | None = None) -> str:
    """The plan as text; with the run's ``length`` (known once the data is), each phase's
    optimizer steps too."""
    lines = [f"backbone {plan.backbone}  strategy {plan.strategy}  "
             f"parameters {_fmt_count(plan.total_params)}"]
    width = max(len(r.name) for p in plan.phases for r in p.rows)
    width = max(width, len("group"))
    # With adapters a group is partly trainable: a column shows how much of each group trains.
    adapters = any(r.adapters_only for p in plan.phases for r in p.rows)
    tcol = f"  {'trainable':>12}" if adapters else ""
    for p in plan.phases:
        epochs = (f"epoch {p.start_epoch}" if p.end_epoch - p.start_epoch == 1
                  else f"epochs {p.start_epoch}-{p.end_epoch - 1}")
        if length is not None:
            first, last = _phase_steps(length, p)
            epochs += f", optimizer steps {first}-{last}"
        lines.append("")
        lines.append(f"phase {p.index + 1} ({epochs}): {p.label}  "
                     f"trainable {_fmt_count(p.trainable_params)} / {_fmt_count(plan.total_params)}")
        lines.append(f"  {'group':<{width}}  {'params':>12}{tcol}  {'state':<9}  {'lr':>10}  "
                     f"{'wd':>6}  {'no-wd params':>12}")
        if length is not None and p.converge_head:
            lines.append("  a linear head on frozen features: one convex solve on the cached "
                         "features in place of these steps (head_solver convex)")
        for r in reversed(p.rows):  # top of the stack first, as the concept draws it
            state = ("lora" if r.adapters_only else "trainable") if r.trainable else "frozen"
            lr = f"{r.lr:.3g}" if r.trainable else f"({r.lr:.3g})"
            tval = f"  {_fmt_count(r.n_trainable):>12}" if adapters else ""
            lines.append(f"  {r.name:<{width}}  {_fmt_count(r.n_params):>12}{tval}  {state:<9}  "
                         f"{lr:>10}  {r.weight_decay:>6.3g}  {_fmt_count(r.n_no_decay):>12}")
        ttot = f"  {_fmt_count(p.trainable_params):>12}" if adapters else ""
        lines.append(f"  {'total':<{width}}  {_fmt_count(sum(r.n_params for r in p.rows)):>12}"
                     f"{ttot}")
    lines.append("")
    lines.append("lr = backbone_lr * lr_decay_per_layer^(L - l) for group l of L (1 = lowest); "
                 "a frozen group's rate, in brackets, applies once it unfreezes. "
                 "Norms and biases take no weight decay.")
    if adapters:
        lines.append("state lora: the group's pretrained weights are frozen and its LoRA "
                     "matrices (the trainable column) train; params include them.")
    lines.extend(plan.notes)
    if length is not None:
        lines.append(length.describe())
    return "\n".join(lines)
