"""The named points where strategies plug into the training loop, and where the run directory
does (the loop itself does no I/O and has no strategy-specific branches).

A hook is any object with some of these attributes (duck-typed; each is optional):

- ``name``: its key in the checkpoint and in the optimizer's groups.
- ``batch_source(cut, splits) -> {split: CachedSplit} | None``: at the start of each phase, the
  activations of the splits at ``cut`` (the frozen bottom groups) when it can hold them: then
  only the part above the cut runs. The activation cache (``tlkit.cache.CacheHook``).
- ``splits() -> {name: data}``: more data the loop feeds the hook with (adaptation's target).
- ``forward(model, feed, inputs, step) -> (outputs, loss term)``: replaces the model's forward
  and adds a loss term (DANN / MMD / CORAL: features of source and target, their alignment).
- ``extra_loss(model) -> tensor``: a term added to the task loss (L2-SP's penalty). A hook
  with ``shared = True`` computes the same term on every process: it is counted once.
- ``loss_name``: the metrics.jsonl column of its term's epoch mean.
- ``parameters()``: parameters it trains, at the head's rate (DANN's domain classifier).
- ``state_dict()`` / ``load_state_dict(state)``: its state, saved in every checkpoint.
- ``to(device)``.
- ``epoch_start(feed, epoch, phase) -> Solved | None``: before an epoch's first batch, may fit
  the phase whole instead of its SGD epochs (the convex head, ``tlkit.train.head_solver``):
  the loop then records the solve's epoch and goes on at the phase's end.

Continued pretraining (``tlkit.adapt.pretrain_loop``) trains an objective in place of the task,
through four more points, each optional:

- ``optimizer() -> Optimizer``: the hook's own optimizer in place of the plan's (each group with
  ``initial_lr``, which the schedule multiplies, and ``group``, its name in the metrics).
- ``batches(epoch) -> [[index, ...], ...]``: the epoch's batches in place of the seeded shuffle.
- ``batch_loss(model, indices, step) -> tensor``: a batch's loss in place of the supervised
  forward and loss (the loop then builds no inputs).
- ``validate(model) -> (metrics, per-example losses or None) | None``: the epoch's validation in
  place of the supervised one; None: nothing to validate on (no best epoch, no early stopping).
  Without per-example losses only a strict improvement makes a best epoch.

A hook with ``acts(epoch) -> bool`` brings its batches, loss and validation only in the epochs
where it acts, and the loop's own serve the others (contrastive's pair objective acts in its
first phase; the head is then solved on the trained features). Its batches set the run's
length over the epochs where it acts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tlkit.events import Event
from tlkit.model import TransferModel


@dataclass(frozen=True)
class Step:
    """Where a training batch stands, for a hook's ``forward``."""

    epoch: int
    batch: int  # index of the batch in the epoch
    size: int  # examples of the batch on this process
    optimizer_step: int  # optimizer steps done
    progress: float  # optimizer steps done / all steps, in [0, 1]
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class RunIO:
    """Where the run directory plugs into the loop: checkpoints, the best weights, the metrics
    and progress events. Mid-epoch checkpoints come every ``checkpoint_every`` optimizer steps
    when set, else every ``checkpoint_seconds``."""

    save_last: Callable[[dict[str, Any]], None]
    save_best: Callable[[TransferModel, Any], None]
    load_best: Callable[[TransferModel], None]
    log_epoch: Callable[[dict[str, Any]], None]
    event: Event = lambda kind, info: None
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 120.0


@dataclass(frozen=True)
class Solved:
    """A phase fitted whole at its start (``epoch_start``): what its metrics row adds, its
    training loss (summed over examples, and their count), and the epoch the loop goes on at."""

    row: dict[str, Any]
    loss_sum: float
    loss_count: int
    next_epoch: int


NO_IO = RunIO(save_last=lambda p: None, save_best=lambda m, s: None, load_best=lambda m: None,
              log_epoch=lambda r: None)


def with_method(hooks: Any, method: str) -> list[Any]:
    """The hooks that implement ``method``, in order."""
    return [h for h in hooks if callable(getattr(h, method, None))]


def acting(hooks: Any, method: str, epoch: int) -> list[Any]:
    """The hooks that implement ``method`` and act in ``epoch`` (``acts``; one without it
    always does), in order."""
    return [h for h in with_method(hooks, method)
            if not callable(getattr(h, "acts", None)) or h.acts(epoch)]
