"""The training loop: short and explicit, one function a reader can follow top to bottom.

Each epoch: switch to the plan's phase for that epoch (requires_grad flips, nothing is rebuilt),
ask the hooks where the phase's batches come from (cached activations or the inputs), run the
batches of a seeded order, step AdamW under the schedule, checkpoint every few steps and at the
end of the epoch, evaluate, follow early stopping. Every counter and random state lives in
``TrainState`` and the checkpoint, so a run killed anywhere resumes to the same result.

Strategies plug in through the hook points of ``tlkit.train.hooks`` (the cache, L2-SP, domain
adaptation, the convex head); the run directory through ``RunIO``. Continued pretraining
(``tlkit.adapt.pretrain``) runs here too: its hook brings the objective's batches, loss, held-out
check and optimizer in place of the supervised ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tlkit.assemble import Assembled
from tlkit.config import LoopSettings
from tlkit.data.collate import Collate
from tlkit.data.types import Examples
from tlkit.device import autocast
from tlkit.distributed import SINGLE, Dist
from tlkit.errors import UserError
from tlkit.plan import Phase, phase_at
from tlkit.plan.apply import apply_phase, batchnorm_trains, norm_stats_mode
from tlkit.train.batches import epoch_batches
from tlkit.train.checkpoint import rng_state, set_rng_state
from tlkit.train.evaluate import loss_function, output_for_loss
from tlkit.train.feed import Feed
from tlkit.tensors import to_device
from tlkit.train.loader import batch_stream
from tlkit.train.head_solver import ConvexHead
from tlkit.train.hooks import RunIO, Solved, Step, acting, with_method
from tlkit.plan.length import Length, hooked_length, length_of
from tlkit.train.optimizer import make_optimizer, set_phase_rates
from tlkit.train.parallel import Parallel, parallel_for
from tlkit.train.schedule import lr_factor, rewarm_factor
from tlkit.train.selection import judge, noisy_note


@dataclass
class TrainState:
    """Every counter of a run; saved whole in each checkpoint."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches of the current epoch done
    step: int = 0  # optimizer steps done
    loss_sum: float = 0.0  # this epoch's training loss, summed over samples
    loss_count: int = 0
    extra_sums: dict[str, float] = field(default_factory=dict)  # hooks' loss terms, summed
    best_value: float | None = None  # the best validation value so far
    # its epoch's validation loss per example: a later epoch whose loss is within one paired
    # standard error of it is as good
    best_losses: list[float] | None = None
    best_metric: float | None = None  # the kept epoch's task metric (accuracy, macro-F1)
    # the kept epoch's validation loss per example (the best value's, or a later epoch's
    # within its noise): what the weights the run ends with score
    kept_losses: list[float] | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    # the optimizer step at which each group (and the head) first trained, where groups
    # unfrozen later warm up from there (``_Run.rewarm``)
    unfrozen_at: dict[str, int] = field(default_factory=dict)

    @classmethod
    def restored(cls, saved: dict[str, Any]) -> TrainState:
        saved = dict(saved)
        # checkpoints written before the hooks named their sums (penalty_sum, adapt_sum)
        old = {"train_penalty": saved.pop("penalty_sum", 0.0),
               "train_adaptation_loss": saved.pop("adapt_sum", 0.0)}
        saved.setdefault("extra_sums", old)
        return cls(**saved)


@dataclass(frozen=True)
class TrainData:
    train: Examples
    val: Examples
    collate: Collate
    task: str
    classes: list[str] | None
    lengths: Sequence[int] | None = None  # tokens per training text: batches of like length
    class_weights: Sequence[float] | None = None  # single-label: the training loss's weights
    # the balanced sampler: each training example's chance of being drawn (1 / its class count)
    sample_weights: Sequence[float] | None = None
    workers: int = 0  # DataLoader worker processes building the training batches


@dataclass
class _Run:
    """What every part of one fit reads; ``t0`` and ``last_save`` are its two clocks."""

    asm: Assembled
    data: TrainData
    settings: LoopSettings
    io: RunIO
    hooks: Sequence[Any]
    dist: Dist
    optimizer: torch.optim.Optimizer
    length: Length
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    t0: float = 0.0
    last_save: float = 0.0
    parallel: Parallel | None = None  # several processes: the phase's trained part under DDP
    # A group unfrozen after the start warms up over the run's warmup steps from its first
    # step, where the BatchNorm statistics of unfrozen layers stay fixed: its updates are then
    # not renormalised, and its first AdamW steps at the schedule's rate took the training loss
    # of examples/fashion_mnist.yaml from 0.29 to 10.4 at the first unfreezing.
    rewarm: bool = False

    @property
    def n_batches(self) -> int:
        return self.length.batches_per_epoch

    @property
    def total_steps(self) -> int:
        return self.length.total_steps

    def snapshot(self, state: TrainState) -> dict[str, Any]:
        return {"model": self.asm.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "state": asdict(state), "rng": rng_state(), "format": 1,
                "processes": self.dist.world,  # informative: a resume may use another count
                **{h.name: h.state_dict() for h in with_method(self.hooks, "state_dict")}}

    def loss_names(self) -> list[str]:
        return [h.loss_name for h in self.hooks if getattr(h, "loss_name", None)]


def fit(asm: Assembled, data: TrainData, settings: LoopSettings, io: RunIO, *,
        hooks: Sequence[Any] = (), resume: dict[str, Any] | None = None,
        dist: Dist = SINGLE) -> TrainState:
    """Train ``asm.model`` by ``asm.plan``; returns the final state with the best epoch's
    weights loaded. ``resume`` is a checkpoint's payload."""
    model, plan, device = asm.model, asm.plan, dist.device
    model.to(device)
    for h in with_method(hooks, "to"):
        h.to(device)
    # the convex head: a phase hook the loop adds itself where the plan and settings call for it
    solver = ConvexHead.of(asm, data, settings, dist, hooks, io.event)
    hooks = [*hooks, *([solver] if solver is not None else [])]
    optimizer = make_optimizer(model, asm.groups, plan, hooks, settings)
    state = TrainState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        for h in with_method(hooks, "load_state_dict"):
            if h.name in resume:
                h.load_state_dict(resume[h.name])
        optimizer.load_state_dict(resume["optimizer"])
        state = TrainState.restored(resume["state"])
        set_rng_state(resume["rng"])  # rank 0's, when it was saved by several processes
        io.event("resumed", {"epoch": state.epoch, "batch": state.batch_in_epoch,
                             "step": state.step})
    # Several processes: the same weights everywhere, and each its own dropout masks.
    dist.broadcast_module(model)
    dist.seed_per_process()
    norm_stats = norm_stats_mode(settings.freeze_norm_stats, plan)
    run = _Run(asm, data, settings, io, hooks, dist, optimizer,
               _length(len(data.train), settings, hooks, asm),
               loss_function(data.task, weight=data.class_weights).to(device),
               last_save=time.perf_counter(),
               rewarm=norm_stats == "all" and any(
                   isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()))
    splits = {"train": data.train, "val": data.val,
              **{k: v for h in with_method(hooks, "splits") for k, v in h.splits().items()}}
    note = noisy_note(settings.model_selection, data.task, len(data.val),
                      len(data.classes) if data.classes else None)
    if note:
        io.event("stage", {"what": note})
    if run.rewarm and settings.freeze_norm_stats == "auto":
        io.event("stage", {"what": "BatchNorm statistics: kept at their pretrained values in "
                                   "every layer, as the head trains alone first, and each "
                                   "group warms up from its unfreezing (freeze_norm_stats "
                                   "auto; true lets unfrozen layers' statistics move)"})
    epoch = state.epoch
    while epoch < settings.epochs and not state.stopped_early:
        run.t0 = time.perf_counter()
        phase = plan.phases[phase_at(list(plan.phases), epoch)]
        _enter_phase(run, state, phase, norm_stats)
        feed = _feed(run, phase, splits)
        if dist.enabled:  # DDP around what this phase trains, wrapped anew when that changes
            run.parallel = parallel_for(run.parallel, model, feed, phase.index, hooks, dist)
        solved = _epoch_start(run, feed, epoch, phase) if state.batch_in_epoch == 0 else None
        if solved is not None:  # a hook fitted the phase whole (the convex head): it is done
            state.loss_sum, state.loss_count = solved.loss_sum, solved.loss_count
            state.step += run.length.steps_of(epoch, solved.next_epoch)
            epoch = _end_epoch(run, state, feed, epoch, phase, solved)
            continue
        if state.batch_in_epoch == 0:
            io.event("epoch_start", {"epoch": epoch, "phase": phase.index + 1,
                                     "label": phase.label, "batches": run.n_batches,
                                     "cached": feed.cut})
        _train_epoch(run, state, feed, epoch)
        epoch = _end_epoch(run, state, feed, epoch, phase)
    io.load_best(model)  # the best epoch's weights, not the last
    dist.broadcast_module(model)  # rank 0 alone reads the run directory
    return state


def _length(n_train: int, settings: LoopSettings, hooks: Sequence[Any], asm: Assembled
            ) -> Length:
    """The run's length; where a hook brings its own batches (continued pretraining,
    contrastive's pairs), one pass of them per epoch where it acts. Where BatchNorm layers
    train on the loop's batches, none holds a single example (``tlkit.plan.length``), except
    under a hook with its own forward (domain alignment: an image batch runs with as many
    target images, so BatchNorm sees two at least; ``tlkit.adapt.alignment.aligns``)."""
    own = acting(hooks, "batches", 0)
    if not own:
        batchnorm = not with_method(hooks, "forward") and batchnorm_trains(
            asm.model, asm.groups, asm.plan, settings.freeze_norm_stats)
        return length_of(n_train, settings, batchnorm)
    return hooked_length(n_train, settings, len(own[0].batches(0)),
                         sum(1 for e in range(settings.epochs) if acting(own, "batches", e)))


def _enter_phase(run: _Run, state: TrainState, phase: Phase, norm_stats: Any) -> None:
    """The phase's trainable groups, BatchNorm modes and rates: requires_grad flips, nothing is
    rebuilt. A phase without rows (continued pretraining's objective) trains what its model
    has set trainable."""
    if phase.rows:
        apply_phase(run.asm.model, run.asm.groups, phase, norm_stats)
    for r in phase.rows:
        if r.trainable:
            state.unfrozen_at.setdefault(r.name, state.step)
    set_phase_rates(run.optimizer, phase)


def _epoch_start(run: _Run, feed: Feed, epoch: int, phase: Phase) -> Solved | None:
    """What the first hook that fits the phase whole (``epoch_start``) made of it, if any."""
    for h in with_method(run.hooks, "epoch_start"):
        solved = h.epoch_start(feed, epoch, phase)
        if solved is not None:
            return solved
    return None


def _feed(run: _Run, phase: Phase, splits: dict[str, Examples]) -> Feed:
    """The phase's batches: from a hook's cached activations at the phase's cut (the frozen
    bottom of the network is a fixed function, computed once), else from the inputs."""
    cut = run.asm.plan.frozen_below(phase)
    for h in with_method(run.hooks, "batch_source"):
        cached = h.batch_source(cut, splits)
        if cached is not None:
            return Feed(splits, run.data.collate, run.dist.device, cut, cached)
    return Feed(splits, run.data.collate, run.dist.device)


def _train_epoch(run: _Run, state: TrainState, feed: Feed, epoch: int) -> None:
    model, s, dist = run.asm.model, run.settings, run.dist
    model.train()
    passes = run.length.passes  # several at small data (min_steps), each in its own order
    own = acting(run.hooks, "batches", epoch)  # a hook's own (continued pretraining, pairs)
    batches = own[0].batches(epoch) if own else [
        batch for p in range(passes)
        for batch in epoch_batches(len(run.data.train), s.batch_size, s.seed, epoch * passes + p,
                                   run.data.lengths, weights=run.data.sample_weights,
                                   smallest=run.length.smallest_batch)]
    run.optimizer.zero_grad(set_to_none=True)
    names = run.loss_names()
    # this step's loss and hook terms (summed over samples) and its sample count, over the
    # processes at the step, so the state and its checkpoints hold the global ones
    pending = [0.0] * (2 + len(names))
    # With several processes each takes its share of the global batch, and scales its mean
    # loss by that share (times the processes): the gradients DDP averages over the processes
    # are then the gradient of the global batch's mean, as one process computes it. An empty
    # share (a last batch smaller than the processes) still joins the average, with a stand-in
    # example weighted 0.
    shares = [dist.share(batch) or batch[:1] for batch in batches]
    # the inputs are built here unless cached, or read by a hook's own loss
    own_loss = acting(run.hooks, "batch_loss", epoch)
    stream = None if "train" in feed.cached or own_loss else batch_stream(
        run.data.train, run.data.collate, shares, state.batch_in_epoch, s.seed, epoch,
        run.data.workers)
    for b in range(state.batch_in_epoch, run.n_batches):
        mine = dist.share(batches[b])
        built = next(stream) if stream is not None else None
        if mine or dist.enabled:
            step = Step(epoch, b, len(mine), state.step, state.step / max(1, run.total_steps),
                        lambda: autocast(dist.device, s.mixed_precision))
            loss, terms = _backward(run, feed, shares[b], len(batches[b]), step, built)
            pending[0] += loss * len(mine)
            pending[1] += len(mine)
            for i, name in enumerate(names):
                pending[2 + i] += terms.get(name, 0.0) * len(mine)
        state.batch_in_epoch = b + 1
        if _ends_step(run, b):
            sums = dist.sum(pending)
            _optimizer_step(run, state, sums, names)
            pending = [0.0] * len(pending)
            run.io.event("step", {"epoch": epoch, "batch": b + 1, "batches": run.n_batches,
                                  "loss": sums[0] / max(1.0, sums[1])})
            # mid-epoch checkpoints: every N steps when asked, else every couple of minutes
            due = (state.step % run.io.checkpoint_every == 0 if run.io.checkpoint_every
                   else time.perf_counter() - run.last_save >= run.io.checkpoint_seconds)
            if due and b + 1 < run.n_batches:
                run.last_save = time.perf_counter()
                state.seconds += time.perf_counter() - run.t0
                run.t0 = time.perf_counter()
                run.io.save_last(run.snapshot(state))


def _backward(run: _Run, feed: Feed, mine: list[int], global_size: int, step: Step,
              built: tuple[Any, torch.Tensor] | None = None) -> tuple[float, dict[str, float]]:
    """Forward, loss and backward of this process's share of a batch (with several processes,
    through DDP; ``step.size`` 0: ``mine`` is a stand-in weighted 0); returns the task loss and
    each hook's term, as floats."""
    model, s, dist = run.asm.model, run.settings, run.dist
    own: dict[int, torch.Tensor] = {}
    objective = acting(run.hooks, "batch_loss", step.epoch)
    if objective:  # continued pretraining: the objective's loss on these examples
        with step.autocast():
            loss = objective[0].batch_loss(model, mine, step)
    else:
        loss = _task_loss(run, feed, mine, step, built, own)
    # Hooks' terms (L2-SP's penalty, the alignment loss) add to what is backpropagated;
    # train_loss stays the task loss, comparable across strategies.
    total = loss * (step.size * dist.world / global_size) if dist.enabled else loss
    terms: dict[str, float] = {}
    for h in run.hooks:
        term = own.get(id(h))
        if term is None and callable(getattr(h, "extra_loss", None)):
            term = h.extra_loss(model)
        if term is None:
            continue
        # a term that is the same on each process (the penalty) is counted once: DDP's average
        # keeps it; any other is summed over the processes
        total = total + (term * dist.world if dist.enabled and not getattr(h, "shared", False)
                         else term)
        terms[h.loss_name] = float(term.detach())
    (total / s.gradient_accumulation_steps).backward()
    return float(loss.detach()), terms


def _task_loss(run: _Run, feed: Feed, mine: list[int], step: Step,
               built: tuple[Any, torch.Tensor] | None, own: dict[int, torch.Tensor]
               ) -> torch.Tensor:
    """The supervised loss of the examples ``mine``; a hook's forward (domain adaptation) puts
    its own term in ``own``."""
    model, s, dist = run.asm.model, run.settings, run.dist
    if built is None:
        inputs, targets = feed.batch("train", mine)
    else:  # collated by the batch stream (tlkit.train.loader)
        inputs, targets = to_device(built[0], dist.device), to_device(built[1], dist.device)
    forward = with_method(run.hooks, "forward")
    if forward:  # a hook that adds a loss of its own to the forward (domain adaptation)
        out, own[id(forward[0])] = forward[0].forward(model, feed, inputs, step)
    else:
        with step.autocast():
            out = (feed.forward(model, inputs) if run.parallel is None else
                   run.parallel(inputs, sync=_ends_step(run, step.batch), stand_in=not step.size))
    loss = run.loss_fn(output_for_loss(out, run.data.task), targets)
    if not torch.isfinite(loss):
        raise UserError(
            f"the training loss became {loss.item()} at epoch {step.epoch}, batch {step.batch} "
            f"(optimizer step {step.optimizer_step}); likely causes: "
            f"a learning rate too high (head_lr {s.head_lr}, backbone_lr {s.backbone_lr}) or "
            "bad targets. The last good checkpoint is kept; lower the rates and run again"
        )
    return loss


def _optimizer_step(run: _Run, state: TrainState, sums: list[float], names: list[str]) -> None:
    s = run.settings
    state.loss_sum += sums[0]
    state.loss_count += int(sums[1])
    for i, name in enumerate(names):
        state.extra_sums[name] = state.extra_sums.get(name, 0.0) + sums[2 + i]
    factor = lr_factor(state.step, run.total_steps, run.length.warmup, s.scheduler)
    for g in run.optimizer.param_groups:
        at = state.unfrozen_at.get(g.get("group", ""), 0) if run.rewarm else 0
        g["lr"] = g["initial_lr"] * factor * rewarm_factor(state.step, at, run.length.warmup)
    if s.max_grad_norm:
        params = [p for p in run.asm.model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1


def _ends_step(run: _Run, b: int) -> bool:
    """Whether micro-batch ``b`` is the last of an optimizer step."""
    return (b + 1) % run.settings.gradient_accumulation_steps == 0 or b + 1 == run.n_batches


def _end_epoch(run: _Run, state: TrainState, feed: Feed, epoch: int, phase: Phase,
               solved: Solved | None = None) -> int:
    """Validation, the epoch's metrics row, the best weights, early stopping and the
    checkpoint; returns the next epoch (the phase's end when a hook ``solved`` it)."""
    s, own = run.settings, acting(run.hooks, "validate", epoch)
    # the metrics and each example's loss; a hook's own check (continued pretraining's held-out
    # objective loss; None: nothing held out) in place of the val split's
    checked: tuple[dict[str, Any], Any] | None = own[0].validate(run.asm.model) if own else \
        feed.evaluate(run.asm.model, "val", run.data.task, run.data.classes, s.batch_size,
                      s.mixed_precision, run.dist)
    state.seconds += time.perf_counter() - run.t0
    count = max(1, state.loss_count)
    val = checked[0] if checked is not None else {}
    row = {"epoch": epoch, "phase": phase.index + 1, "train_loss": state.loss_sum / count,
           **{name: state.extra_sums.get(name, 0.0) / count for name in run.loss_names()},
           **({"val_loss": val["loss"]} if checked is not None else {}),
           **{f"val_{k}": v for k, v in val.items()
              if k != "loss" and isinstance(v, (int, float))},
           "lr": {g["group"]: g["lr"] for g in run.optimizer.param_groups},
           "trainable_params": phase.trainable_params, "seconds": round(state.seconds, 3)}
    if checked is not None:  # the best weights; patience resets on a strict improvement only
        value, metric, new_best, keep = judge(*checked, state, run.data.task, s.model_selection)
        if new_best:
            state.best_value, state.bad_epochs = value, 0
            state.best_losses = None if checked[1] is None else checked[1].tolist()
        else:
            state.bad_epochs += 1
        if keep:
            state.best_epoch, state.best_metric = epoch, metric
            state.kept_losses = None if checked[1] is None else checked[1].tolist()
            run.io.save_best(run.asm.model, state)
    next_epoch = epoch + 1 if solved is None else solved.next_epoch
    if solved is not None:
        row.update(solved.row)
    phases = list(run.asm.plan.phases)
    if s.early_stopping_patience and state.bad_epochs >= s.early_stopping_patience:
        # Patience runs out within a phase: a phase with a successor ends there (the linear
        # probe of lp_ft has converged, say) and the next phase starts; the last one ends the run.
        later = [p for p in phases if p.start_epoch > epoch]
        if later:
            next_epoch = later[0].start_epoch
            row["phase_ended_early"] = True
        else:
            state.stopped_early = True
    state.history.append(row)
    run.io.log_epoch(row)
    if phase_at(phases, next_epoch) != phase.index:
        state.bad_epochs = 0  # each phase gets its own patience
    state.epoch, state.batch_in_epoch = next_epoch, 0
    state.loss_sum, state.loss_count, state.extra_sums = 0.0, 0, {}
    run.io.save_last(run.snapshot(state))
    run.io.event("epoch_end", row)
    return next_epoch

