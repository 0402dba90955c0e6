"""``freeze_strategy: auto``: the strategy and its rates chosen inside a time budget.

The candidates are the strategies that suit a user's small or medium labelled set (those with
an ``auto_rank``, in its order): a converged linear head on frozen features (``all_frozen``), the
top groups retrained (``top_n_unfrozen``), linear probe then fine-tuning (``lp_ft``), full
fine-tuning (``none``) and LoRA. A fine-tuning
candidate trains at auto's fine-tuning rates and length (``TUNING``, per modality: a head rate
of 1e-2 for the new head, the backbone at 1e-4 (text) or 3e-4 (images) decayed per group, 5
epochs) wherever the user's config leaves those keys unset; what the user set is kept.

Which fine-tuning candidate, by measurement where the validation split can measure: the
candidates whose training fits the budget try a short version of their schedule by successive
halving (Jamieson & Talwalkar, 2016; Li et al., 2017): every candidate trains a quarter of the
epochs and of ``min_steps``, the better half by validation loss trains twice as long, and the
best is the fine-tuning pick. When only one candidate's trials and training fit the budget, it
is the pick without trials; when the validation split is too small to tell trials apart (fewer
than ``MIN_TRIAL_VAL`` examples), the pick is the first candidate, in the order above, whose
training fits the budget: ``top_n_unfrozen`` first, the cheapest (its frozen bottom is computed
once, ``tlkit.cache``). In bench/small_data.py's run 3 (bench/README.md) it beat the frozen head
on both text sets at 100 and 1,000 labels (by 1.7 to 4.3 points) and on Fashion-MNIST at
1,000, and lost to it by 2.9 points on Fashion-MNIST at 100 labels, where no trial could tell.

Raw pixels first, for single-label images: where a logistic regression on the raw pixels
(``tlkit.backbones.pixels``) beats the same convex head on the pretrained features, out of fold
on the training and validation examples by more than two paired standard errors, the pretrained
network is not what the data needs, and the pick is the pixels' model (``source_model:
pixels``), which tlkit serves like any run (pixels.py).

The frozen head against the fine-tuning pick: the frozen head needs no trial (its convex solve
is already converged, on cached features) and is the pick only when no fine-tuning candidate
fits the budget, or when its validation loss beats the fine-tuning pick's trial by more than two
paired standard errors over the validation examples (a trial is a shortened schedule, so it
errs toward the frozen head). ``fit`` then trains the pick with the full schedule. Trials share
the activation cache, so frozen bottoms are computed once.

The budget: the whole fit takes about ``auto_budget`` times what the default fit would (loading
the backbone and one forward pass over every split: all_frozen's cost), so the trials and the
pick's training get ``auto_budget - 1`` times that. The cost of each candidate's trials and final training is
estimated from a measured forward time per example and the part of the network each phase runs
(a backward pass counted as two forwards; budget.py); a candidate that does not fit is skipped,
with the reason. The record of every trial goes in summary.json under ``auto`` and in
``auto.json`` of the run directory, which a resumed run reads instead of choosing again
(record.py).
"""

from __future__ import annotations

import math
import time

import numpy as np

from tlkit import strategies
from tlkit.config import AUTO, Config
from tlkit.distributed import Dist
from tlkit.errors import UserError
from tlkit.events import Event
from tlkit.metrics import monitor_metric
from tlkit.rundir import RunDir
from tlkit.select.budget import estimate, forward_seconds, halving
from tlkit.select.candidates import (MARGIN, PIXELS, candidate_config, fine_tuners,
                                     frozen_head)
from tlkit.select.classical import against_pick
from tlkit.select.pixels import pixels_win
from tlkit.select.record import (RECORD, Choice, Trial, choice_json, format_choice,
                                 recorded_choice, score)
from tlkit.select.trials import Base, base_for, run_trial
from tlkit.train.selection import MIN_VAL_EXAMPLES, noise_of

MIN_TRIAL_VAL = 20  # fewer validation examples: no trials, the first candidate that fits


def chosen_config(cfg: Config, choice: Choice) -> Config:
    return candidate_config(cfg, choice.chosen, rates=choice.rates)


def choose(cfg: Config, dist: Dist, event: Event) -> Choice:
    """The pick inside the budget (the module's docstring); the record of every trial."""
    if dist.enabled:
        raise UserError("freeze_strategy auto runs its trials on one process; run it without "
                        "torchrun / accelerate launch, or name a strategy")
    base = base_for(cfg, dist, event)
    tc = cfg.transfer_config
    metric = monitor_metric(base.data.task)[0]
    per_example = forward_seconds(base)
    default = base.load_seconds + per_example * (len(base.data.train) + len(base.data.val)
                                                 + base.n_test)
    budget = max(0.0, tc.auto_budget - 1) * default
    event("stage", {"what": f"freeze_strategy auto: the default fit (loading, one forward pass "
                            f"over every split) takes about {default:.1f} s; the trials and the "
                            f"pick's training get {budget:.1f} s more (auto_budget "
                            f"{tc.auto_budget:g})"})
    t0 = time.perf_counter()
    trials: list[Trial] = []
    losses: dict[str, list[float]] = {}  # per validation example, at each trial's best epoch
    head = frozen_head()
    frozen = run_trial(base, head, None, None, 0, losses)
    frozen.rung, frozen.note = -1, "the linear head's convex solve on the cached features"
    trials.append(frozen)
    costs: dict[str, float] = {}
    for name in fine_tuners():
        reason, cost = estimate(base, name, per_example)
        if reason is None and cost > budget - (time.perf_counter() - t0):
            reason = (f"its training would take about {cost:.0f} s, over the budget ({budget:.0f}"
                      " s; raise auto_budget to try it)")
        if reason is not None:
            trials.append(Trial(name, -1, 0, 0, note=f"skipped: {reason}"))
        else:
            costs[name] = cost
    alive = list(costs)  # in the candidates' order
    scores: dict[str, float] = {head: score(frozen)}
    pixels = pixels_win(base, event, trials)
    if pixels is not None:
        chosen, reasons = PIXELS, [pixels]
        trials.extend(Trial(c, -1, 0, 0, note="not tried: raw pixels beat the pretrained "
                                                "features") for c in alive)
    else:
        chosen, reasons = _pick(base, alive, costs, scores, losses, trials, budget, t0, metric,
                                event)
    if 0 < len(base.data.val) < MIN_VAL_EXAMPLES and chosen in losses and chosen != head:
        reasons.append(f"the validation split has {len(base.data.val)} examples: the choice "
                       "between close candidates is noisy")
    classical = against_pick(base, cfg, chosen, scores, losses, metric, event, trials, reasons)
    spent = time.perf_counter() - t0
    rates = base.rates if chosen != PIXELS and strategies.trains_backbone(chosen) else {}
    own = candidate_config(cfg, chosen, rates=rates).transfer_config
    settings = {k: getattr(own, k) for owner, k in strategies.owned_keys() if owner == chosen}
    return Choice(chosen, {k: v.model_dump() if hasattr(v, "model_dump") else v
                           for k, v in settings.items() if v is not None},
                  round(budget, 2), round(spent, 2), round(default, 2), metric, trials, reasons,
                  classical, dict(rates))


def _pick(base: Base, alive: list[str], costs: dict[str, float], scores: dict[str, float],
          losses: dict[str, list[float]], trials: list[Trial], budget: float, t0: float,
          metric: str, event: Event) -> tuple[str, list[str]]:
    """The pick among the frozen head and the fine-tuning candidates whose training fits the
    budget (``alive``, in the candidates' order), and why."""
    if not alive:
        return frozen_head(), ["no fine-tuning candidate fits the budget: the frozen head's "
                               "convex solve is the pick"]
    if len(base.data.val) < MIN_TRIAL_VAL:
        pick = alive[0]
        trials.extend(Trial(c, -1, 0, 0, note=f"not tried: {pick} comes first") for c in alive[1:])
        trials.append(Trial(pick, -1, 0, 0, note=f"picked without a trial, estimated "
                                                  f"{costs[pick]:.1f} s of training"))
        return pick, [f"the validation split has {len(base.data.val)} examples, fewer than "
                      f"{MIN_TRIAL_VAL}: too few to tell trials apart, so no trial ran; {pick} "
                      "is the first fine-tuning candidate (in the order "
                      f"{', '.join(fine_tuners())}) whose training fits the budget"]
    best = halving(base, alive, costs, scores, losses, trials, budget, t0, metric, event)
    if best is None:  # one candidate's training fits, but not its trial as well
        pick = alive[0]
        trials.append(Trial(pick, -1, 0, 0, note=f"picked without a trial: its training "
                                                 f"(about {costs[pick]:.0f} s) fits the budget, "
                                                 "its trial as well does not"))
        return pick, [f"{pick} is the only fine-tuning candidate whose training fits the budget"]
    return _decide(best, scores, losses, [t.strategy for t in trials if t.rung >= 0])


def _decide(best: str, scores: dict[str, float], losses: dict[str, list[float]],
            compared: list[str]) -> tuple[str, list[str]]:
    """The fine-tuning pick ``best`` (its trial a shortened schedule), unless the frozen head's
    validation loss is below it by more than ``MARGIN`` paired standard errors."""
    over = f"successive halving over {', '.join(compared)}"
    head = frozen_head()
    if head not in losses or best not in losses:
        return best, [f"{best} has the lowest validation loss of the trials "
                      f"({scores[best]:.4f}); {over}"]
    d = np.asarray(losses[head]) - np.asarray(losses[best])
    se = noise_of(np.asarray(losses[head]), losses[best], "loss") if len(d) > 1 else math.inf
    gain = -float(d.mean())  # the frozen head's gain over the pick
    if gain > MARGIN * se:
        return head, [
            f"the frozen head's validation loss {scores[head]:.4f} is below {best}'s "
            f"trial ({scores[best]:.4f}) by {gain:.4f}, more than {MARGIN:g} paired standard "
            f"errors ({MARGIN:g} x {se:.4f}) over {len(d)} validation examples; {over}"]
    return best, [
        f"{best} has the lowest validation loss of the fine-tuning trials ({scores[best]:.4f}; "
        f"the frozen head {scores[head]:.4f}, a difference of {gain:+.4f} in the frozen "
        f"head's favour, within {MARGIN:g} paired standard errors ({MARGIN:g} x {se:.4f}) over "
        f"{len(d)} validation examples); {over}"]


def resolve_auto(cfg: Config, run: RunDir, resume: bool, dist: Dist, event: Event
                 ) -> tuple[Config, Choice | None]:
    """The config to train: ``cfg`` itself, or with auto, the chosen candidate's (read from the
    run directory's ``auto.json`` when resuming, so a resumed run trains the same pick)."""
    if cfg.transfer_config.freeze_strategy != AUTO:
        return cfg, None
    record = run.path / RECORD
    if resume and record.is_file():
        choice = recorded_choice(record)
        event("stage", {"what": f"freeze_strategy auto: resuming the pick {choice.chosen} "
                                f"({record})"})
    else:
        choice = choose(cfg, dist, event)
        if dist.is_main:
            run.write_text(record, choice_json(choice))
    event("stage", {"what": format_choice(choice)})
    return chosen_config(cfg, choice), choice
