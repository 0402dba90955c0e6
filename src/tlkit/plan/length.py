"""How long a run trains, in optimizer steps: a pure function of the training-set size and the
settings, shared by the loop, the schedule and the printed plan.

An epoch is one pass over the training split, unless the run would then take fewer than
``min_steps`` optimizer steps in all: at small data (80 examples, batch 32, 10 epochs: 30 steps)
each epoch then makes several passes (each in its own seeded order), so every run gets enough
steps to converge, and the epoch-based parts of a config (unfreeze schedule, lp_epochs,
early-stopping patience, one validation per epoch) keep their meaning. Warmup is
``warmup_steps``, or ``warmup_ratio`` of all steps where that is more.

Where BatchNorm layers train (``tlkit.plan.apply.batchnorm_trains``), no batch may hold a single
example: BatchNorm normalises by the batch's own statistics, which one example cannot give
(PyTorch raises where a layer sees one value per channel). A pass whose last batch would hold
one joins it to the batch before (33 examples at batch 16: batches of 16 and 17), as pretraining
does (``batch_bounds``); a training split of one example is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tlkit.errors import UserError

# the fewest examples a training batch holds where BatchNorm layers train
BATCHNORM_SMALLEST = 2


def batch_bounds(n: int, size: int, smallest: int = 1) -> list[tuple[int, int]]:
    """Each batch's (start, end) over ``n`` examples in batches of ``size``; a last batch of
    fewer than ``smallest`` joins the one before (9 images at batch 8: one batch of 9)."""
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < smallest:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


@dataclass(frozen=True)
class Length:
    n_train: int
    batch_size: int
    batches_per_pass: int  # micro-batches in one pass over the training split
    passes: int  # passes over the training split per epoch
    steps_per_epoch: int  # optimizer steps per epoch
    epochs: int
    warmup: int  # warmup steps
    # what a step's batch is, where a strategy brings its own (contrastive's pair batches)
    unit: str = ""
    # a pass's last batch of fewer examples joins the one before (2: BatchNorm trains)
    smallest_batch: int = 1

    @property
    def batches_per_epoch(self) -> int:
        return self.batches_per_pass * self.passes

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def steps_of(self, start_epoch: int, end_epoch: int) -> int:
        return self.steps_per_epoch * (end_epoch - start_epoch)

    @property
    def joined(self) -> bool:
        """Whether each pass's last batch joins the one before (it was under smallest_batch)."""
        return (self.smallest_batch > 1
                and self.batches_per_pass < math.ceil(self.n_train / self.batch_size))

    def describe(self) -> str:
        if self.unit:
            return (f"training length: {self.total_steps:,} optimizer steps = {self.epochs} "
                    f"epoch{'s' if self.epochs != 1 else ''} x {self.steps_per_epoch:,} steps "
                    f"({self.unit}); warmup {self.warmup:,} steps")
        per = (f"{self.passes} passes over {self.n_train:,} training examples per epoch (min_steps)"
               if self.passes > 1 else f"one pass over {self.n_train:,} training examples per epoch")
        joined = (f"; each pass's last example joins the batch before it (a batch of "
                  f"{self.batch_size + 1}): BatchNorm layers train, and one example gives them no "
                  "batch statistics" if self.joined else "")
        return (f"training length: {self.total_steps:,} optimizer steps = {self.epochs} epochs x "
                f"{self.steps_per_epoch:,} steps ({per}, batch {self.batch_size}{joined}); "
                f"warmup {self.warmup:,} steps")


def length_of(n_train: int, settings: Any, batchnorm: bool = False) -> Length:
    """The run's length for ``n_train`` training examples; ``settings`` has ``batch_size``,
    ``gradient_accumulation_steps``, ``epochs``, ``min_steps``, ``warmup_steps`` and
    ``warmup_ratio`` (a ``LoopSettings`` or the ``TransferConfig``). ``batchnorm``: BatchNorm
    layers train on the batches (``tlkit.plan.apply.batchnorm_trains``), so none may hold a
    single example."""
    smallest = BATCHNORM_SMALLEST if batchnorm else 1
    if 0 < n_train < smallest:
        raise UserError(
            f"the training split holds {n_train} example, and the model's BatchNorm layers "
            "train on each batch's own statistics, which a single example cannot give; give "
            "more training examples (raise data.limit, or lower data.val_fraction / "
            "data.test_fraction), or keep the BatchNorm statistics fixed: "
            "transfer_config.freeze_norm_stats: all, or freeze_strategy: all_frozen")
    per_pass = max(1, len(batch_bounds(n_train, settings.batch_size, smallest)))
    steps_per_pass = math.ceil(per_pass / settings.gradient_accumulation_steps)
    planned = steps_per_pass * settings.epochs
    passes = max(1, math.ceil(settings.min_steps / planned))
    acc = settings.gradient_accumulation_steps

    def steps_per_epoch_of(passes: int) -> int:  # accumulation runs on across passes
        return math.ceil(per_pass * passes / acc)

    while steps_per_epoch_of(passes) * settings.epochs < settings.min_steps:
        passes += 1
    steps_per_epoch = steps_per_epoch_of(passes)
    total = steps_per_epoch * settings.epochs
    warmup = max(settings.warmup_steps, int(round(settings.warmup_ratio * total)))
    return Length(n_train, settings.batch_size, per_pass, passes, steps_per_epoch,
                  settings.epochs, warmup, smallest_batch=smallest)


def hooked_length(n_train: int, settings: Any, batches: int, epochs: int, unit: str = ""
                  ) -> Length:
    """The length where a hook brings its own ``batches`` per epoch (continued pretraining,
    contrastive's pairs) in ``epochs`` epochs: one pass of them an epoch, no min_steps."""
    steps = math.ceil(batches / settings.gradient_accumulation_steps)
    total = steps * epochs
    return Length(n_train, settings.batch_size, batches, 1, steps, epochs,
                  max(settings.warmup_steps, int(round(settings.warmup_ratio * total))), unit)


def length_for(train: Any, tc: Any, batchnorm: bool = False, examples: int | None = None
               ) -> Length:
    """The length the loop will train ``tc`` (a TransferConfig) on the ``train`` split (its
    size and targets): the strategy's own batches where it brings them (``own_batches``),
    else ``length_of`` (``batchnorm``: as there); what the plan and the log print.
    ``examples``: what the loop counts where it is not the split's rows (question
    answering's windows)."""
    from tlkit import strategies

    strategy = (strategies.get(tc.freeze_strategy) if tc.freeze_strategy in strategies.names()
                else None)
    # a task the strategy refuses gets the loop's length here; the refusal, with its reason,
    # comes where the model is built
    own = (strategy.own_batches(train.targets, tc) if strategy is not None
           and strategy.refuses(train.task, getattr(train, "modality", "")) is None else None)
    if own is None:
        return length_of(len(train) if examples is None else examples, tc.loop_settings,
                         batchnorm)
    batches, epochs, unit = own
    return hooked_length(len(train), tc.loop_settings, batches, epochs, unit)
