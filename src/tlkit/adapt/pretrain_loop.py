"""Continued pretraining on the training loop: the objective (``tlkit.adapt.pretrain``: masked LM,
SimCSE, TSDAE; ``tlkit.adapt.simclr``) as the loop's hook, in place of the supervised task.

The hook brings what differs from fine-tuning (``tlkit.train.hooks``): each epoch's batches (a
seeded shuffle, a last batch too small for the objective merged into the one before), the
objective's loss on a batch, the held-out check after each epoch (the objective's loss on the
held-out examples with fixed masks and dropout), and AdamW over what the objective trains (weight
decay on matrices only). The loop does the rest as for a fit: the linear warmup and decay, the
gradient clipping, a checkpoint every few steps and at each epoch's end (with the hook's state:
its losses and the best epoch's weights), the resume, and the best epoch and early stopping on
the held-out loss. The best weights stay in memory (and in the checkpoint), not in a run
directory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.assemble import Assembled
from tlkit.config import Config, LoopSettings
from tlkit.distributed import Dist
from tlkit.plan import Phase, Plan
from tlkit.plan.length import batch_bounds
from tlkit.train.checkpoint import save_checkpoint
from tlkit.train.hooks import RunIO, Step
from tlkit.train.loop import TrainData, TrainState, fit

CHECKPOINT_SECONDS = 120.0
LOG_EVERY = 50  # optimizer steps between progress lines (each the mean loss of the last ones)


class PretrainHook:
    """The objective in the loop: its batches, loss, held-out check and optimizer, and the
    record of the run's course (each step's loss, each epoch's mean and held-out loss, the
    best epoch's weights), saved in every checkpoint."""

    name = "pretraining"

    def __init__(self, obj: Any, examples: list[Any], held: list[Any], batch_size: int,
                 seed: int, lr: float, weight_decay: float, log: Callable[[str], None]) -> None:
        self.obj, self.examples, self.held, self.seed, self.log = obj, examples, held, seed, log
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.bounds = batch_bounds(len(examples), batch_size, obj.min_batch)
        self.running: list[float] = []  # this epoch's loss at each step
        self.losses: list[float] = []  # each epoch's mean loss
        self.held_out: list[float] = []  # each epoch's held-out loss
        self.best: dict[str, torch.Tensor] | None = None  # the best epoch's weights
        self.steps = 0  # optimizer steps done (one a batch)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; weight decay on matrices only."""
        params = [p for p in self.obj.model.parameters() if p.requires_grad]
        return torch.optim.AdamW([
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay,
             "initial_lr": self.lr, "group": "weights"},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0,
             "initial_lr": self.lr, "group": "biases and norms"}], lr=self.lr)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches: a pure function of (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        order = torch.randperm(len(self.examples), generator=g).tolist()
        return [order[lo:hi] for lo, hi in self.bounds]

    def batch_loss(self, model: Any, indices: list[int], step: Step) -> torch.Tensor:
        loss: torch.Tensor = self.obj.loss([self.examples[i] for i in indices])
        self.running.append(float(loss.detach()))
        self.steps = step.optimizer_step + 1
        return loss

    def validate(self, model: Any) -> tuple[dict[str, float], None] | None:
        """The epoch's mean loss, recorded; the held-out loss (fixed masks and dropout, the
        global random state untouched), or None where nothing is held out."""
        self.losses.append(float(np.mean(self.running)) if self.running else 0.0)
        self.running = []
        if not self.held:
            return None
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed + 1_000_003)
            value = float(np.mean([self.obj.evaluate(self.held[a:b]) for a, b in
                                   batch_bounds(len(self.held), self.batch_size,
                                                self.obj.min_batch)]))
        self.held_out.append(value)
        return {"loss": value}, None

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running, "losses": self.losses, "held_out": self.held_out,
                "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running, self.losses = list(state["running"]), list(state["losses"])
        self.held_out, self.best = list(state["held_out"]), state["best"]

    def io(self, last: Path, total: int, checkpoint_every: int | None) -> RunIO:
        """Checkpoints to ``last``, the best weights in memory, progress to the log."""

        def keep(model: Any, state: Any) -> None:
            self.best = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})

        def restore(model: Any) -> None:
            if self.best is not None:  # the best epoch on the held-out examples, not the last
                model.load_state_dict(self.best)

        def epoch_line(row: dict[str, Any]) -> None:
            if "val_loss" in row:
                self.log(f"pretrain: epoch {row['epoch']}  loss {self.losses[-1]:.4f}  "
                         f"held-out loss {row['val_loss']:.4f}")

        def event(kind: str, info: dict[str, Any]) -> None:
            if kind == "step" and (self.steps % LOG_EVERY == 0 or self.steps == total):
                self.log(f"pretrain: step {self.steps}/{total}  {self.obj.kind} loss "
                         f"{np.mean(self.running[-LOG_EVERY:]):.3f}")

        return RunIO(save_last=lambda payload: save_checkpoint(last, payload), save_best=keep,
                     load_best=restore, log_epoch=epoch_line, event=event,
                     checkpoint_every=checkpoint_every, checkpoint_seconds=CHECKPOINT_SECONDS)

    def record(self, state: TrainState) -> dict[str, Any]:
        """What pretrain.json says of the run's course."""
        return {"epochs_run": state.epoch, "steps": state.step,
                "stopped_early": state.stopped_early, "best_epoch": state.best_epoch,
                "loss_per_epoch": [round(x, 4) for x in self.losses],
                "held_out_loss_per_epoch": [round(x, 4) for x in self.held_out],
                "seconds": round(state.seconds, 1)}


def run_on_loop(hook: PretrainHook, cfg: Config, device: torch.device, last: Path,
                checkpoint_every: int | None, resume: dict[str, Any] | None) -> TrainState:
    """The pretraining's epochs on the loop, from ``resume`` (a checkpoint's payload) or the
    start; returns the loop's state, with the best epoch's weights loaded."""
    pc, tc = cfg.adaptation.pretrain, cfg.transfer_config
    model = hook.obj.model
    # one phase, without layer-group rows: what trains is what the objective set trainable
    phase = Phase(0, 0, pc.epochs, f"continued pretraining ({hook.obj.kind})", ())
    plan = Plan(tc.source_model, "continued pretraining", (phase,),
                sum(p.numel() for p in model.parameters()))
    data = TrainData(hook.examples, hook.held, _read_by_the_hook, "self_supervised", None)
    settings = LoopSettings(
        epochs=pc.epochs, batch_size=pc.batch_size, mixed_precision=tc.mixed_precision,
        early_stopping_patience=pc.patience, model_selection="val_loss", head_solver="sgd",
        head_refit=False, gradient_accumulation_steps=1, max_grad_norm=1.0,
        warmup_steps=pc.warmup_steps, warmup_ratio=0.0, min_steps=0, sampler="shuffle",
        scheduler="linear", seed=tc.seed, freeze_norm_stats=True, head_lr=hook.lr,
        backbone_lr=hook.lr, weight_decay=pc.weight_decay)
    total = len(hook.bounds) * pc.epochs
    return fit(Assembled(model, [], plan), data, settings,
               hook.io(last, total, checkpoint_every), hooks=[hook], resume=resume,
               dist=Dist(0, 1, 0, device))


def _read_by_the_hook(items: list[Any]) -> tuple[Any, torch.Tensor]:
    """The loop's collate, never called: the hook's loss reads its examples itself."""
    raise AssertionError("continued pretraining reads its batches through its hook")
