"""freeze_strategy auto's budget: what the default fit costs (``forward_seconds``), what each
candidate's training would cost (``estimate``: the part of the network each phase runs, a
backward pass counted as two forwards), and successive halving over the candidates whose
training fits (``halving``; Jamieson & Talwalkar, 2016; Li et al., 2017)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from tlkit import strategies
from tlkit.assemble import Assembled
from tlkit.device import autocast
from tlkit.errors import UserError
from tlkit.events import Event
from tlkit.inputs import with_model
from tlkit.plan.length import Length, length_of
from tlkit.select.candidates import candidate_config
from tlkit.select.record import Trial, describe, score
from tlkit.select.trials import Base, run_trial
from tlkit.train.feed import Feed

RUNGS = (4, 2)  # the trials' schedules: a quarter, then half of the full one
BACKWARD = 2.0  # a backward pass costs about two forwards
# the least the default fit counts for in the budget (small data: auto.py's docstring)
FLOOR_SECONDS = 30.0


def forward_seconds(base: Base, n: int = 48) -> float:
    """Seconds of one no-grad forward per training example (after a warm-up batch), through
    the base's own model (the frozen head's, which no trial trains: each copies its backbone)."""
    model, device = base.inputs.asm.model.to(base.dist.device).eval(), base.dist.device
    feed = Feed({"train": base.data.train}, base.data.collate, device)
    idx = list(range(min(n, len(base.data.train))))
    mp = base.cfg.transfer_config.mixed_precision
    with torch.no_grad(), autocast(device, mp):
        feed.forward(model, feed.batch("train", idx[:4])[0])
        t0 = time.perf_counter()
        for i in range(0, len(idx), 16):
            feed.forward(model, feed.batch("train", idx[i:i + 16])[0])
    return (time.perf_counter() - t0) / max(1, len(idx))


def estimate(base: Base, strategy: str, per_example: float, n_train: int | None = None,
             n_val: int | None = None, epochs: int | None = None, min_steps: int | None = None
             ) -> tuple[str | None, float]:
    """(why the candidate cannot run here, or None; the seconds of its full training on
    ``n_train`` training and ``n_val`` validation examples, the run's splits by default, or of
    a trial of ``epochs`` and ``min_steps`` as the strategy lengthens it)."""
    cfg = candidate_config(base.cfg, strategy, epochs, min_steps, rates=base.rates)
    try:
        asm = with_model(base.inputs, cfg, hooks=False).asm
    except UserError as e:  # LoRA on a backbone without its target modules, say
        return str(e), 0.0
    tc = cfg.transfer_config
    why = strategies.get(tc.freeze_strategy).refuses(base.data.task, base.modality,
                                                     base.inputs.augment)
    if why is not None:  # contrastive on multi-label data, say
        return why, 0.0
    n_train = len(base.data.train) if n_train is None else n_train
    length = length_of(n_train, tc.loop_settings)
    own = strategies.get(tc.freeze_strategy)
    # a strategy's own batches (contrastive's pairs), for the same share of the labels
    labels = np.asarray(base.splits.train.targets)[:n_train]
    hooked = {ph.index: own.epoch_examples(ph.index, labels, tc.plan_settings)
              for ph in asm.plan.phases}
    return None, cost(asm, length, per_example, len(base.data.val) if n_val is None else n_val,
                      hooked)


def cost(asm: Assembled, length: Length, per_example: float, n_val: int,
         hooked: dict[int, int | None] | None = None) -> float:
    """Estimated seconds of training ``asm``'s plan: per phase, each epoch's examples (the
    loop's batches, or ``hooked[phase]``: a strategy's own) through the part above the phase's
    cut, forward and backward, and a validation pass."""
    n_groups = len(asm.groups)
    total = 0.0
    for ph in asm.plan.phases:
        cut = asm.plan.frozen_below(ph)
        if ph.converge_head and cut == n_groups:
            continue  # the convex solve on cached features
        share = max(n_groups - cut, 1) / max(n_groups, 1)
        epochs = ph.end_epoch - ph.start_epoch
        examples = (hooked or {}).get(ph.index) or length.batches_per_epoch * length.batch_size
        total += epochs * share * per_example * (examples * (1 + BACKWARD) + n_val)
    return total


def epochs_of(base: Base, strategy: str) -> int:
    return candidate_config(base.cfg, strategy, rates=base.rates).transfer_config.epochs


def trial_length(base: Base, strategy: str, divisor: int) -> tuple[int, int]:
    """A rung's trial of ``strategy``: (epochs, min_steps) asked for (a ``divisor``-th of the
    full schedule's), as the strategy lengthens them (contrastive's trial keeps its whole
    contrastive phase and a head epoch after it)."""
    tc = base.cfg.transfer_config
    asked = max(1, round(epochs_of(base, strategy) / divisor)), max(1, tc.min_steps // divisor)
    own = candidate_config(base.cfg, strategy, *asked, rates=base.rates).transfer_config
    return own.epochs, own.min_steps


def halving(base: Base, alive: list[str], costs: dict[str, float], scores: dict[str, float],
            losses: dict[str, list[float]], trials: list[Trial], budget: float, t0: float,
            metric: str, event: Event, per_example: float) -> str | None:
    """Successive halving over the fine-tuning candidates in ``alive`` (changed in place: what
    is left when no trial could run): every candidate trains a quarter of the epochs and of
    ``min_steps``, the better half by validation loss twice as long. A trial is estimated at
    the length it runs (a strategy may lengthen it: ``trial_length``), and one whose length is
    its rung-before's is not run again: that result carries. The best by validation loss, or
    None when no trial ran."""
    ran_any: str | None = None
    before: dict[str, tuple[tuple[int, int], Trial]] = {}  # each candidate's last trial
    for rung, divisor in enumerate(RUNGS):
        if len(alive) < 2 and (rung > 0 or not alive):
            break  # one candidate left: its trial would not change the pick among fine-tuners
        spent = time.perf_counter() - t0
        length = {c: trial_length(base, c, divisor) for c in alive}
        fresh = [c for c in alive if c not in before or before[c][0] != length[c]]
        trial_s = {c: estimate(base, c, per_example, epochs=length[c][0],
                               min_steps=length[c][1])[1] for c in fresh}
        # the rung's trials and the costliest survivor's full training must fit what is left
        while alive and spent + sum(trial_s.get(c, 0.0) for c in alive) + max(
                costs[c] for c in alive) > budget:
            if len(alive) == 1 and rung == 0:
                return None  # its training fits (checked before), its trial as well does not
            drop = max(alive, key=lambda c: costs[c] + trial_s.get(c, 0.0))
            alive.remove(drop)
            trials.append(Trial(drop, rung, 0, 0, note=f"skipped at rung {rung}: the budget "
                                                        f"left ({budget - spent:.0f} s) is short"))
        ran: list[Trial] = []
        for name in alive:
            if name not in trial_s:  # the same length as its trial at the rung before
                old = before[name][1]
                ran.append(Trial(name, rung, old.epochs, old.steps, old.val_loss,
                                 old.val_metric, 0.0,
                                 note=f"the length of its rung {old.rung} trial: that "
                                      "result carries, not run again"))
            else:
                ran.append(run_trial(base, name, *length[name], rung, losses))
                ran[-1].note = f"estimated {trial_s[name]:.1f} s"
                before[name] = length[name], ran[-1]
            event("stage", {"what": describe(ran[-1], metric)})
        trials.extend(ran)
        for t in ran:
            scores[t.strategy] = score(t)
        ranked = sorted(alive, key=lambda c: scores[c])
        ran_any = ranked[0] if ranked else ran_any
        alive[:] = ranked[:max(1, math.ceil(len(ranked) / 2))]
    return ran_any
