"""freeze_strategy auto's trials: the inputs every trial shares, built once (``Base``: the data,
the pretrained backbone that no trial trains, the activation cache), and one trial, a short
training of a candidate from that backbone (``run_trial``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tlkit.config import Config
from tlkit.data import num_outputs_of
from tlkit.distributed import Dist
from tlkit.events import Event
from tlkit.inputs import Inputs, build_inputs, check_length, load_data, with_model
from tlkit.metrics import monitor_metric
from tlkit.plan.length import length_of
from tlkit.select.candidates import candidate_config, frozen_head, tuning_rates
from tlkit.select.record import Trial
from tlkit.train.hooks import NO_IO, RunIO
from tlkit.train.loop import TrainData, fit


@dataclass
class Base:
    """What every trial shares: ``inputs`` built once for the frozen head (the data, the
    pretrained backbone, never trained, and the cache), the training data, and auto's rates for
    the fine-tuning candidates. ``cfg`` is the user's config (freeze_strategy auto)."""

    cfg: Config
    inputs: Inputs
    data: TrainData
    dist: Dist
    rates: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return self.inputs.modality

    @property
    def splits(self) -> Any:  # the run's splits (the classical baseline reads their inputs)
        return self.inputs.splits

    @property
    def cache(self) -> Any:
        return self.inputs.cache

    @property
    def n_out(self) -> int:
        return num_outputs_of(self.inputs.splits.train)

    @property
    def load_seconds(self) -> float:  # loading the backbone
        return self.inputs.load_seconds


def base_for(cfg: Config, dist: Dist, event: Event) -> Base:
    """The data of ``cfg`` (auto's), its length checked, then the frozen head's inputs."""
    tc = cfg.transfer_config
    event("stage", {"what": f"freeze_strategy auto: loading data {cfg.data.source} and "
                            f"{tc.source_model} for the trials"})
    data, splits = load_data(cfg)
    check_length(tc, length_of(len(splits.train), tc.loop_settings))
    inputs = build_inputs(candidate_config(cfg, frozen_head()), splits, data.modality, dist)
    return Base(cfg, inputs, inputs.training_data(), dist, tuning_rates(cfg, data.modality))


def memory_io() -> RunIO:
    """A trial's run directory: none; its best epoch's weights kept in memory (the loop loads
    them back at the end), nothing written."""
    best: dict[str, Any] = {}

    def save_best(model: torch.nn.Module, state: Any) -> None:
        best["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def load_best(model: torch.nn.Module) -> None:
        if "weights" in best:
            model.load_state_dict(best["weights"])

    return RunIO(save_last=NO_IO.save_last, save_best=save_best, load_best=load_best,
                 log_epoch=NO_IO.log_epoch)


def run_trial(base: Base, strategy: str, epochs: int | None, min_steps: int | None,
              rung: int, losses: dict[str, list[float]]) -> Trial:
    """``strategy`` trained for ``epochs`` (None: its full schedule) from the base's backbone;
    its validation loss per example at its best epoch goes in ``losses``."""
    cfg = candidate_config(base.cfg, strategy, epochs, min_steps, trial=True, rates=base.rates)
    tc = cfg.transfer_config
    inputs = with_model(base.inputs, cfg)
    t0 = time.perf_counter()
    state = fit(inputs.asm, base.data, tc.loop_settings, memory_io(), hooks=inputs.hooks,
                dist=base.dist)
    seconds = time.perf_counter() - t0
    row = next(r for r in state.history if r["epoch"] == state.best_epoch)
    if state.kept_losses is not None:  # the kept epoch's, as its row's val_loss
        losses[strategy] = state.kept_losses
    metric = monitor_metric(base.data.task)[0]
    length = length_of(len(base.data.train), tc.loop_settings)
    return Trial(strategy, rung, tc.epochs, length.total_steps, float(row["val_loss"]),
                 float(row.get(f"val_{metric}", math.nan)), round(seconds, 2))
