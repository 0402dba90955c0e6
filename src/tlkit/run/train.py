"""Step 2 of a fit: the loop, with the run directory plugged in (checkpoints, the best weights,
metrics.jsonl); rank 0 alone writes."""

from __future__ import annotations

import dataclasses

import torch
from safetensors.torch import load_model as st_load
from safetensors.torch import save_model as st_save

from tlkit.device import mixed_precision_note
from tlkit.files import atomic_write
from tlkit.run.prepare import Prepared
from tlkit.rundir import RunDir
from tlkit.train.checkpoint import save_checkpoint
from tlkit.train.hooks import NO_IO, RunIO
from tlkit.train.loop import TrainState, fit


def run_io(run: RunDir, p: Prepared, checkpoint_every: int | None) -> RunIO:
    if not p.dist.is_main:  # rank 0 writes; fit sends the best weights it loads to the others
        return dataclasses.replace(NO_IO, event=p.event)

    def save_best(model: torch.nn.Module, state: TrainState) -> None:
        atomic_write(run.best, lambda tmp: st_save(model, str(tmp)))

    def load_best(model: torch.nn.Module) -> None:
        if run.best.is_file():
            st_load(model, str(run.best))

    return RunIO(save_last=lambda payload: save_checkpoint(run.last, payload),
                 save_best=save_best, load_best=load_best, log_epoch=run.append_metrics,
                 event=p.event, checkpoint_every=checkpoint_every)


def train(p: Prepared, checkpoint_every: int | None = None) -> TrainState:
    p.event("stage", {"what": "training", "device": str(p.dist.device),
                      "cache": "on" if p.cache is not None else "off",
                      **({"processes": p.dist.world} if p.dist.enabled else {})})
    note = mixed_precision_note(p.dist.device, p.cfg.transfer_config.mixed_precision)
    if note is not None:
        p.event("stage", {"what": note})
    settings = p.cfg.transfer_config.loop_settings
    if p.test_ds is None:  # validation is the only measure: the head must not have seen it
        settings = settings.model_copy(update={"head_refit": False})
    return fit(p.asm, p.train, settings,
               run_io(p.run, p, checkpoint_every), hooks=p.hooks, resume=p.resume, dist=p.dist)
