"""The training loop: short and explicit, one function a reader can follow top to bottom.

Each epoch: switch to the plan's phase for that epoch (requires_grad flips, nothing is rebuilt), run
the batches of a seeded order, step AdamW under the schedule, checkpoint every few steps and at the
end of the epoch, evaluate, follow early stopping. Every counter and random state lives in
``TrainState`` and the checkpoint, so a run killed anywhere resumes to the same result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import nn

from tlkit.backbones.base import LayerGroup
from tlkit.tensors import to_device
from tlkit.config import TransferConfig
from tlkit.distributed import SINGLE, Dist
from tlkit.errors import UserError
from tlkit.metrics import compute_metrics, monitor_metric
from tlkit.model import TransferModel
from tlkit.plan import Plan, phase_at
from tlkit.plan.apply import apply_phase, optimizer_groups
from tlkit.train.checkpoint import rng_state, set_rng_state
from tlkit.train.schedule import lr_factor

Collate = Callable[[list[Any]], tuple[Any, torch.Tensor]]
Event = Callable[[str, dict[str, Any]], None]


@dataclass
class TrainState:
    """Every counter of a run; saved whole in each checkpoint."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches of the current epoch done
    step: int = 0  # optimizer steps done
    loss_sum: float = 0.0  # this epoch's training loss, summed over samples
    loss_count: int = 0
    penalty_sum: float = 0.0  # this epoch's regularizer penalty (L2-SP), summed over samples
    adapt_sum: float = 0.0  # this epoch's domain-adaptation loss, summed over samples
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Adaptation:
    """Unlabelled target data and the loss that aligns its features with the source's
    (``tlkit.adapt.losses``); the loss's own parameters (DANN's domain classifier) train with
    the head's rate and are saved in every checkpoint."""

    loss: nn.Module
    data: Sequence[Any]
    weight: float


def target_indices(n: int, batch_size: int, seed: int, epoch: int, b: int) -> list[int]:
    """The target examples paired with batch ``b`` of an epoch: a pure function of (seed,
    epoch, b), cycling through a shuffled order of the target set."""
    order = epoch_order(n, seed + 104_729, epoch)
    return [order[(b * batch_size + j) % n] for j in range(batch_size)]


@dataclass
class Hooks:
    """Where the run directory plugs into the loop (the loop itself does no I/O)."""

    save_last: Callable[[dict[str, Any]], None]
    save_best: Callable[[TransferModel, TrainState], None]
    load_best: Callable[[TransferModel], None]
    log_epoch: Callable[[dict[str, Any]], None]
    event: Event = lambda kind, info: None


def loss_function(task: str) -> nn.Module:
    if task == "single_label":
        return nn.CrossEntropyLoss()
    if task == "multi_label":
        return nn.BCEWithLogitsLoss()
    return nn.MSELoss()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _output_for_loss(out: torch.Tensor, task: str) -> torch.Tensor:
    out = out.float()
    return out.squeeze(-1) if task == "regression" and out.shape[-1] == 1 else out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training samples in an epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def batches_of(order: Sequence[int], batch_size: int) -> list[list[int]]:
    return [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  lengths: Sequence[int] | None = None, pool: int = 50) -> list[list[int]]:
    """The batches of an epoch, a pure function of (seed, epoch). With ``lengths`` (texts), the
    shuffled order is cut into pools of ``pool`` batches, each pool sorted by length before it
    is cut into batches, and the batches shuffled: per-batch padding then pads little."""
    order = epoch_order(n, seed, epoch)
    if lengths is None:
        return batches_of(order, batch_size)
    size = pool * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, size):
        chunk = sorted(order[start:start + size], key=lambda i: lengths[i])
        batches.extend(batches_of(chunk, batch_size))
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch + 7_919)
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


@torch.inference_mode()
def predict_outputs(
    model: nn.Module, data: Sequence[Any], collate: Collate, batch_size: int,
    device: torch.device, mixed_precision: bool = False, *, dist: Dist = SINGLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (logits or values) and targets of ``data``, in its order. With several
    processes each runs its block of ``data`` and every process gets the whole, gathered."""
    was_training = model.training
    model.eval()
    outs, tgts = [], []
    for idx in batches_of(dist.block(len(data)), batch_size):
        inputs, targets = collate([data[i] for i in idx])
        with autocast(device, mixed_precision):
            out = model(to_device(inputs, device))
        outs.append(out.float().cpu())
        tgts.append(targets)
    model.train(was_training)
    return _joined(outs, tgts, dist)


def _joined(outs: list[torch.Tensor], tgts: list[torch.Tensor], dist: Dist
            ) -> tuple[np.ndarray, np.ndarray]:
    """The batches' outputs and targets as arrays; with several processes, every process's
    block gathered in rank order (the data's order)."""
    if not dist.enabled:
        return torch.cat(outs).numpy(), torch.cat(tgts).numpy()
    mine = (torch.cat(outs).numpy(), torch.cat(tgts).numpy()) if outs else None
    parts = [p for p in dist.gather(mine) if p is not None]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@torch.inference_mode()
def evaluate_cached(model: TransferModel, cached: Any, task: str, batch_size: int,
                    device: torch.device, classes: list[str] | None,
                    mixed_precision: bool = False, *, return_outputs: bool = False,
                    dist: Dist = SINGLE) -> Any:
    """Validation from cached activations: only the part above the cut runs. With
    ``return_outputs``: (metrics, outputs, targets), as ``evaluate_split`` gives them."""
    was_training = model.training
    model.eval()
    outs, tgts = [], []
    for idx in batches_of(dist.block(len(cached)), batch_size):
        inputs, targets = cached.batch(idx, device)
        with autocast(device, mixed_precision):
            out = model.forward_from_cut(inputs, cached.cut)
        outs.append(out.float().cpu())
        tgts.append(targets.cpu())
    model.train(was_training)
    outputs, targets_np = _joined(outs, tgts, dist)
    loss = float(loss_function(task)(_output_for_loss(torch.from_numpy(outputs), task),
                                     torch.from_numpy(targets_np)))
    metrics = {"loss": loss, **compute_metrics(outputs, targets_np, task, classes)}
    return (metrics, outputs, targets_np) if return_outputs else metrics


@overload
def evaluate_split(
    model: nn.Module, data: Sequence[Any], collate: Collate, task: str, batch_size: int,
    device: torch.device, classes: list[str] | None, mixed_precision: bool = False,
    *, return_outputs: Literal[False] = False, dist: Dist = SINGLE,
) -> dict[str, Any]: ...


@overload
def evaluate_split(
    model: nn.Module, data: Sequence[Any], collate: Collate, task: str, batch_size: int,
    device: torch.device, classes: list[str] | None, mixed_precision: bool = False,
    *, return_outputs: Literal[True], dist: Dist = SINGLE,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]: ...


def evaluate_split(
    model: nn.Module, data: Sequence[Any], collate: Collate, task: str, batch_size: int,
    device: torch.device, classes: list[str] | None, mixed_precision: bool = False,
    *, return_outputs: bool = False, dist: Dist = SINGLE,
) -> dict[str, Any] | tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The loss and metrics of ``data``; with ``return_outputs`` also its outputs and targets,
    as (metrics, outputs, targets), for measures beyond the metrics (e.g. per subgroup)."""
    outputs, targets = predict_outputs(model, data, collate, batch_size, device, mixed_precision,
                                       dist=dist)
    loss_fn = loss_function(task)
    t = torch.from_numpy(targets)
    loss = float(loss_fn(_output_for_loss(torch.from_numpy(outputs), task), t))
    metrics = {"loss": loss, **compute_metrics(outputs, targets, task, classes)}
    return (metrics, outputs, targets) if return_outputs else metrics


def _features_of(model: TransferModel, source: Any, target: Any, cut: int | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features of a source and a target batch (from cached activations at
    ``cut`` when given). Image batches run as one batch, as DANN's reference code does, so
    BatchNorm sees both domains together; text batches (padded apart) run one after the other."""
    bb = model.backbone
    run = (lambda x: bb(x)) if cut is None else (lambda x: bb.forward_from(x, cut))
    if isinstance(source, torch.Tensor) and isinstance(target, torch.Tensor):
        f = run(torch.cat([source, target]))
        return f[:len(source)], f[len(source):]
    return run(source), run(target)


def make_optimizer(model: TransferModel, groups: list[LayerGroup], plan: Plan,
                   device: torch.device, extra: nn.Module | None = None,
                   extra_lr: float = 1e-3, extra_wd: float = 0.0) -> torch.optim.Optimizer:
    # Every group is in the optimizer from the start; frozen ones have no gradient and AdamW
    # skips them, so a phase change only flips requires_grad and the moments carry over.
    pg = optimizer_groups(model, groups, plan.phases[-1])
    if extra is not None and any(True for _ in extra.parameters()):
        pg.append({"params": list(extra.parameters()), "lr": extra_lr, "initial_lr": extra_lr,
                   "weight_decay": extra_wd, "group": "adaptation"})
    # the fused kernel (one op for all tensors) on CPU and CUDA, as Trainer uses by default
    kwargs: dict[str, Any] = {"fused": True}
    return torch.optim.AdamW(pg, **kwargs)


def set_phase_rates(optimizer: torch.optim.Optimizer, phase: Any) -> None:
    """Each group's planned rate in this phase (the schedule multiplies it at every step)."""
    rates = {r.name: r.lr for r in phase.rows}
    for g in optimizer.param_groups:
        if g.get("group") in rates:
            g["initial_lr"] = rates[g["group"]]


def fit(
    model: TransferModel,
    groups: list[LayerGroup],
    plan: Plan,
    tc: TransferConfig,
    task: str,
    classes: list[str] | None,
    train_data: Sequence[Any],
    val_data: Sequence[Any],
    collate: Collate,
    hooks: Hooks,
    device: torch.device,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 120.0,
    resume: dict[str, Any] | None = None,
    cache: Any = None,
    lengths: Sequence[int] | None = None,
    regularizer: Callable[[TransferModel], torch.Tensor] | None = None,
    adaptation: Adaptation | None = None,
    dist: Dist = SINGLE,
) -> TrainState:
    if dist.enabled and adaptation is not None:
        raise UserError("domain adaptation trains on one process; run without torchrun / "
                        "accelerate launch, or remove adaptation.target")
    model.to(device)
    align = adaptation.loss.to(device) if adaptation is not None else None
    optimizer = make_optimizer(model, groups, plan, device, align, tc.head_lr, tc.weight_decay)
    state = TrainState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        if align is not None and "adaptation" in resume:
            align.load_state_dict(resume["adaptation"])
        optimizer.load_state_dict(resume["optimizer"])
        state = TrainState(**resume["state"])
        set_rng_state(resume["rng"])  # rank 0's, when it was saved by several processes
        hooks.event("resumed", {"epoch": state.epoch, "batch": state.batch_in_epoch,
                                "step": state.step})
    # Several processes: the same weights everywhere, and each its own dropout masks.
    dist.broadcast_module(model)
    dist.seed_per_process()
    synced = list(model.parameters()) + (list(align.parameters()) if align is not None else [])

    loss_fn = loss_function(task)
    accum = tc.gradient_accumulation_steps
    n_batches = math.ceil(len(train_data) / tc.batch_size)
    steps_per_epoch = math.ceil(n_batches / accum)
    total_steps = steps_per_epoch * tc.epochs
    monitor, mode = monitor_metric(task)

    def snapshot() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "state": asdict(state), "rng": rng_state(), "format": 1,
                "processes": dist.world,  # informative: a resume may use another count
                **({"adaptation": align.state_dict()} if align is not None else {})}

    n_groups = len(groups)

    def cut_of(phase: Any) -> int:
        return next((i for i, r in enumerate(phase.rows[:n_groups]) if r.trainable), n_groups)

    # The lowest cut any phase will cache: the bottom of the network runs once, to there, and
    # the higher cuts of earlier phases are derived from it.
    cuts = [cut_of(p) for p in plan.phases if cut_of(p) > 0]
    base = min(cuts) if cuts else None
    epoch = state.epoch
    last_save = time.perf_counter()
    while epoch < tc.epochs and not state.stopped_early:
        t0 = time.perf_counter()
        phase = plan.phases[phase_at(list(plan.phases), epoch)]
        apply_phase(model, groups, phase, tc.freeze_norm_stats)
        set_phase_rates(optimizer, phase)
        # The frozen bottom of the network is a fixed function: run it once, cache its output.
        cut = cut_of(phase)
        train_cached = val_cached = target_cached = None
        if cache is not None and cut > 0 and (cut == n_groups or model.backbone.can_cut()):
            keep = {cut} if base is None or base > cut else {cut, base}
            cache.keep_only(keep)
            train_cached = cache.get("train", train_data, cut, base)
            val_cached = (cache.get("val", val_data, cut, base) if train_cached is not None
                          else None)
            if adaptation is not None and train_cached is not None:
                target_cached = cache.get("target", adaptation.data, cut, base)
                if target_cached is None:  # over the cap: every split runs the full forward
                    train_cached = val_cached = None
        if state.batch_in_epoch == 0:
            hooks.event("epoch_start", {"epoch": epoch, "phase": phase.index + 1,
                                        "label": phase.label, "batches": n_batches,
                                        "cached": None if train_cached is None else cut})
        model.train()
        batches = epoch_batches(len(train_data), tc.batch_size, tc.seed, epoch, lengths)
        optimizer.zero_grad(set_to_none=True)
        # this step's loss, penalty and adaptation sums and sample count (over the processes at
        # the step, so the state and its checkpoints hold the global ones)
        pending = [0.0, 0.0, 0.0, 0.0]
        for b in range(state.batch_in_epoch, n_batches):
            # With several processes each takes its share of the global batch, and scales its
            # mean loss by that share: the gradients summed over the processes are then the
            # gradient of the global batch's mean, as one process computes it.
            mine = dist.share(batches[b])
            if mine:
                if train_cached is not None:
                    inputs, targets = train_cached.batch(mine, device)
                else:
                    inputs, targets = collate([train_data[i] for i in mine])
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                align_loss = None
                if adaptation is None:
                    with autocast(device, tc.mixed_precision):
                        out = (model(inputs) if train_cached is None
                               else model.forward_from_cut(inputs, cut))
                else:
                    t_idx = target_indices(len(adaptation.data), len(mine), tc.seed, epoch, b)
                    if target_cached is not None:
                        t_inputs, _ = target_cached.batch(t_idx, device)
                    else:
                        t_inputs, _ = collate([adaptation.data[i] for i in t_idx])
                        t_inputs = to_device(t_inputs, device)
                    with autocast(device, tc.mixed_precision):
                        f_s, f_t = _features_of(model, inputs, t_inputs,
                                                None if train_cached is None else cut)
                        out = model.head(f_s)
                    progress = state.step / max(1, total_steps)
                    align_loss = adaptation.weight * align(f_s.float(), f_t.float(), progress)
                loss = loss_fn(_output_for_loss(out, task), targets)
                if not torch.isfinite(loss):
                    raise UserError(
                        f"the training loss became {loss.item()} at epoch {epoch}, batch {b} "
                        f"(optimizer step {state.step}); likely causes: a learning rate too "
                        f"high (head_lr {tc.head_lr}, backbone_lr {tc.backbone_lr}) or bad "
                        "targets. The last good checkpoint is kept; lower the rates and run "
                        "again"
                    )
                # A regularizer (L2-SP) adds its penalty to what is backpropagated; train_loss
                # stays the task loss, comparable across strategies.
                penalty = regularizer(model) if regularizer is not None else None
                if dist.enabled:  # the penalty is the same on each process: counted once
                    total = loss * (len(mine) / len(batches[b]))
                    if penalty is not None:
                        total = total + penalty / dist.world
                else:
                    total = loss if penalty is None else loss + penalty
                if align_loss is not None:
                    total = total + align_loss
                    pending[2] += float(align_loss.detach()) * len(mine)
                (total / accum).backward()
                if penalty is not None:
                    pending[1] += float(penalty.detach()) * len(mine)
                pending[0] += float(loss.detach()) * len(mine)
                pending[3] += len(mine)
            state.batch_in_epoch = b + 1
            if (b + 1) % accum == 0 or b + 1 == n_batches:
                dist.all_reduce_gradients(synced)
                sums = dist.sum(pending)
                state.loss_sum += sums[0]
                state.penalty_sum += sums[1]
                state.adapt_sum += sums[2]
                state.loss_count += int(sums[3])
                pending = [0.0, 0.0, 0.0, 0.0]
                factor = lr_factor(state.step, total_steps, tc.warmup_steps, tc.scheduler)
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * factor
                if tc.max_grad_norm:
                    params = [p for p in model.parameters() if p.grad is not None]
                    torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                hooks.event("step", {"epoch": epoch, "batch": b + 1, "batches": n_batches,
                                     "loss": sums[0] / max(1.0, sums[3])})
                # mid-epoch checkpoints: every N steps when asked, else every couple of minutes
                due = (state.step % checkpoint_every == 0 if checkpoint_every
                       else time.perf_counter() - last_save >= checkpoint_seconds)
                if due and b + 1 < n_batches:
                    last_save = time.perf_counter()
                    state.seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    hooks.save_last(snapshot())

        if val_cached is not None:
            val = evaluate_cached(model, val_cached, task, tc.batch_size, device, classes,
                                  tc.mixed_precision, dist=dist)
        else:
            val = evaluate_split(model, val_data, collate, task, tc.batch_size, device,
                                 classes, tc.mixed_precision, dist=dist)
        state.seconds += time.perf_counter() - t0
        lrs = {g["group"]: g["lr"] for g in optimizer.param_groups}
        row = {"epoch": epoch, "phase": phase.index + 1,
               "train_loss": state.loss_sum / max(1, state.loss_count),
               **({"train_penalty": state.penalty_sum / max(1, state.loss_count)}
                  if regularizer is not None else {}),
               **({"train_adaptation_loss": state.adapt_sum / max(1, state.loss_count)}
                  if adaptation is not None else {}),
               "val_loss": val["loss"],
               **{f"val_{k}": v for k, v in val.items()
                  if k != "loss" and isinstance(v, (int, float))},
               "lr": lrs, "trainable_params": phase.trainable_params,
               "seconds": round(state.seconds, 3)}
        value = val[monitor]
        improved = state.best_value is None or (
            value > state.best_value if mode == "max" else value < state.best_value)
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
            hooks.save_best(model, state)
        else:
            state.bad_epochs += 1
        next_epoch = epoch + 1
        if tc.early_stopping_patience and state.bad_epochs >= tc.early_stopping_patience:
            # Patience runs out within a phase: a phase with a successor ends there (the linear
            # probe of lp_ft has converged, say) and the next phase starts; the last one ends
            # the run.
            later = [p for p in plan.phases if p.start_epoch > epoch]
            if later:
                next_epoch = later[0].start_epoch
                row["phase_ended_early"] = True
            else:
                state.stopped_early = True
        state.history.append(row)
        hooks.log_epoch(row)
        if phase_at(list(plan.phases), next_epoch) != phase.index:
            state.bad_epochs = 0  # each phase gets its own patience
        epoch = next_epoch
        state.epoch, state.batch_in_epoch = epoch, 0
        state.loss_sum, state.loss_count = 0.0, 0
        state.penalty_sum = state.adapt_sum = 0.0
        hooks.save_last(snapshot())
        hooks.event("epoch_end", row)

    hooks.load_best(model)  # the best epoch's weights, not the last
    dist.broadcast_module(model)  # rank 0 alone reads the run directory
    return state
