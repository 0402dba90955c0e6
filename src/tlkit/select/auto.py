"""``freeze_strategy: auto``: the strategy and its rates chosen inside a time budget.

The candidates are the strategies that suit a user's small or medium labelled set (those with an
``auto_rank``, in its order): a converged linear head on frozen features (``all_frozen``), the top
groups retrained (``top_n_unfrozen``), linear probe then fine-tuning (``lp_ft``), full fine-tuning
(``none``) and LoRA. A fine-tuning candidate trains at auto's fine-tuning rates and length
(``TUNING``, per modality: a head rate of 1e-2 for the new head, the backbone at 1e-4 (text) or 3e-4
(images) decayed per group, 5 epochs) wherever the user's config leaves those keys unset; what the
user set is kept.

Below ``MIN_TRIAL_VAL`` (20) validation examples no trial on validation can tell candidates apart,
and auto measures by k-fold cross-validation instead (kfold.py): over the training and validation
examples together, 5 folds, the same folds for every candidate, it scores the frozen head (its
convex solve out of fold on the cached features), the raw pixels (single-label images) and the
fine-tuning candidates of the registry whose full training fits the budget (each fold trains one at
auto's rates and length on the other folds and scores the held-out one). The fine-tuners race over
the folds: they run fold 1 (on text ``contrastive`` first), each whose five folds fit the budget
with the rest of every entrant's, one behind the best by more than two paired standard errors drops
out, and the leaders get the next folds first while the budget lasts; the finalists are compared on
the folds they all ran (on text ``contrastive`` gives way only to a fine-tuner ahead of it by more
than two paired standard errors). This path's budget is ``KFOLD_BUDGET`` (k, 5) times the validation
path's, with a floor of 30 s per 100 labelled examples in place of 30 s. The pick is by the rule
``rule.RULE``: the lowest mean out-of-fold Brier score, a tie to the cheaper candidate (the loss,
for data without one). The rule was chosen by measurement, not to protect a default:
bench/auto_rule.py drew 72 label sets (80, 100 and 160 labels, 12 draws each) from digits and
Fashion-MNIST with the frozen head and the pixels as candidates; the lowest Brier score lost 0.50
points of test accuracy on average against the per-draw best candidate, the log loss 0.53, the
highest accuracy 0.85 (0.65 with ties broken by Brier), and the old rule (the frozen head unless
another beats its Brier score by two paired standard errors) 0.71 (README, freeze_strategy auto). On
text the rule is ``rule.RULE_FOR``'s ``calibrated_brier`` (the Brier score after each candidate's
own temperature): over 12 draws of two text sets with ``contrastive`` as a candidate it lost 0.35
points, the plain Brier score 1.03.

From 20 validation examples on, which fine-tuning candidate is by successive halving (Jamieson &
Talwalkar, 2016; Li et al., 2017): every candidate whose training fits the budget trains a quarter
of the epochs and of ``min_steps``, the better half by validation loss trains twice as long, and the
best is the fine-tuning pick. Each trial is budgeted at the length the strategy runs it
(``contrastive`` keeps its whole contrastive phase), and one as long as its trial at the rung before
carries that result instead of running again (budget.halving). A candidate whose training fits
the budget but not its trial as well is not picked unmeasured: the frozen head (or the pixels'
model) stays.

Raw pixels first there, for single-label images: where a logistic regression on the raw pixels
(``tlkit.backbones.pixels``) beats the same convex head on the pretrained features, out of fold on
the training and validation examples by more than two paired standard errors, the pixels' model
(``source_model: pixels``, which tlkit serves like any run; pixels.py) takes the frozen head's
place below: a fine-tuned network can still beat both (digits at 64 labels a class, bench/few_shot.py:
the pixels 0.950, full fine-tuning 0.975, ``contrastive`` 0.977).

The frozen head (or the pixels' model) against the fine-tuning pick (from 20 validation examples):
it needs no trial (its convex solve is already converged, on cached features) and is the pick only
when no fine-tuning candidate fits the budget, or when its validation loss beats the fine-tuning
pick's trial by more than two paired standard errors over the validation examples (a trial is a
shortened schedule, so it errs toward the frozen head). ``fit`` then trains the pick with the full
schedule. Trials share the activation cache, so frozen bottoms are computed once.

The budget: the whole fit takes about ``auto_budget`` times what the default fit's training would
(loading the backbone and one forward pass over the training and validation splits: all_frozen's
cost; the test split is left out, so its size never decides whether fine-tuning is tried), so the
trials and the pick's training get ``auto_budget - 1`` times that. A default fit under
``FLOOR_SECONDS`` per 100 labelled examples (at least 30 s on the validation path) counts as that,
so that at the default auto_budget of 5 the trials get at least two minutes, 12.8 at 640 labels:
a relative budget of a few seconds would rule out fine-tuning exactly where a user with a few
hundred labels would wait minutes for it (a frozen network's forward pass is cheap next to
fine-tuning it). The cost of each candidate's trials
and final training is estimated from a measured forward time per example and the part of the network
each phase runs (a backward pass counted as two forwards; budget.py); a candidate that does not fit
is skipped, with the reason. The record of every trial goes in summary.json under ``auto`` and in
``auto.json`` of the run directory, which a resumed run reads instead of choosing again (record.py).
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
from tlkit.select.budget import FLOOR_SECONDS, estimate, forward_seconds, halving
from tlkit.select.candidates import (MARGIN, PIXELS, candidate_config, fine_tuners,
                                     frozen_head)
from tlkit.select.classical import against_pick
from tlkit.select.kfold import K, kfold_pick
from tlkit.select.pixels import pixels_win
from tlkit.select.record import (RECORD, Choice, Trial, choice_json, format_choice,
                                 recorded_choice, score)
from tlkit.select.trials import Base, base_for, run_trial
from tlkit.train.selection import MIN_VAL_EXAMPLES, noise_of

MIN_TRIAL_VAL = 20  # fewer validation examples: k-fold cross-validation instead (kfold.py)
# the k-fold path's budget, times the validation path's: a candidate's measure is K fold
# trials where the validation path runs one
KFOLD_BUDGET = float(K)
# the floor a default fit counts for: FLOOR_SECONDS per FLOOR_PER labelled examples (30 s at
# 100 labels, 4.8 s at 16, 38.4 s at 128, 192 s at 640), on the validation path at least
# FLOOR_SECONDS
FLOOR_PER = 100
VALIDATION_RULE = (f"validation: raw pixels over the pretrained features by more than {MARGIN:g} "
                   "paired standard errors (out-of-fold Brier score), then successive halving "
                   f"on the validation loss, the frozen head over its pick by more than "
                   f"{MARGIN:g} paired standard errors")


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
    # training work only: the test split's size must not decide whether fine-tuning is tried
    default = base.load_seconds + per_example * (len(base.data.train) + len(base.data.val))
    # a default fit of a few seconds (small data) counts as FLOOR_SECONDS: else a budget of
    # seconds would rule out any fine-tuning exactly where a user would wait a minute for it
    head, by_folds = frozen_head(), len(base.data.val) < MIN_TRIAL_VAL
    # k-fold: a candidate's measure is k fold trials, not one shortened trial on validation,
    # and their cost grows with the examples: the floor counts per labelled example there
    factor = KFOLD_BUDGET if by_folds else 1.0
    n = len(base.data.train) + len(base.data.val)
    # the floor counts per labelled example on both paths (a fine-tuner's cost grows with the
    # examples), at least FLOOR_SECONDS on the validation path: else the budget fell tenfold
    # where the validation split reached MIN_TRIAL_VAL, and at 640 labelled images no
    # fine-tuner fitted 120 s (digits at 64 a class: the pixels' 0.953 against 0.977)
    least = FLOOR_SECONDS * n / FLOOR_PER
    least = least if by_folds else max(FLOOR_SECONDS, least)
    budget = max(0.0, tc.auto_budget - 1) * max(default, least) * factor
    per = (f" ({FLOOR_SECONDS:g} s per {FLOOR_PER} labelled examples)"
           if by_folds or least > FLOOR_SECONDS else "")
    floor = f", counted as {least:.3g} s{per}" if default < least else ""
    folds = f", x {factor:g} for the k-fold trials" if factor != 1 else ""
    event("stage", {"what": f"freeze_strategy auto: the default fit (loading, one forward pass "
                            f"over the training and validation splits) takes about "
                            f"{default:.1f} s{floor}; the trials and the pick's training get "
                            f"{budget:.1f} s more (auto_budget {tc.auto_budget:g}{folds})"})
    t0 = time.perf_counter()
    trials: list[Trial] = []
    losses: dict[str, list[float]] = {}  # per validation example, at each trial's best epoch
    scores: dict[str, float] = {}
    if not by_folds:
        frozen = run_trial(base, head, None, None, 0, losses)
        frozen.rung, frozen.note = -1, "the linear head's convex solve on the cached features"
        trials.append(frozen)
        scores[head] = score(frozen)
    costs = _fitting(base, per_example, budget, t0, trials)
    if by_folds:
        chosen, reasons, rule = kfold_pick(base, costs, budget, t0, per_example, trials, event)
    else:
        chosen, reasons, rule = _by_validation(base, costs, scores, losses, trials, budget, t0,
                                               metric, event, per_example)
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
                  classical, dict(rates), rule)


def _fitting(base: Base, per_example: float, budget: float, t0: float, trials: list[Trial]
             ) -> dict[str, float]:
    """The fine-tuning candidates whose full training fits the budget, in order, with its
    estimated seconds; the others recorded as skipped, with the reason."""
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
    return costs


def _by_validation(base: Base, costs: dict[str, float], scores: dict[str, float],
                   losses: dict[str, list[float]], trials: list[Trial], budget: float,
                   t0: float, metric: str, event: Event, per_example: float
                   ) -> tuple[str, list[str], str]:
    """With ``MIN_TRIAL_VAL`` validation examples or more: the raw pixels' test, then
    successive halving on the validation loss and the frozen head against its pick."""
    alive = list(costs)  # in the candidates' order
    pixels = pixels_win(base, event, trials)
    if pixels is None:
        chosen, reasons = _pick(base, alive, costs, scores, losses, trials, budget, t0, metric,
                                event, per_example)
        return chosen, reasons, VALIDATION_RULE
    # the pixels' model in the frozen head's place: the fine-tuners against it on validation
    losses[PIXELS] = pixels.val_losses
    scores[PIXELS] = float(np.mean(pixels.val_losses))
    chosen, reasons = _pick(base, alive, costs, scores, losses, trials, budget, t0, metric, event,
                            per_example, baseline=PIXELS)
    return chosen, [pixels.reason, *reasons], VALIDATION_RULE


BASELINES = {PIXELS: "the pixels' model"}  # else the frozen head
FROZEN_SAID = "the frozen head's convex solve"


def _pick(base: Base, alive: list[str], costs: dict[str, float], scores: dict[str, float],
          losses: dict[str, list[float]], trials: list[Trial], budget: float, t0: float,
          metric: str, event: Event, per_example: float, baseline: str | None = None
          ) -> tuple[str, list[str]]:
    """The pick among the ``baseline`` (the frozen head, or the pixels' model where they beat
    it) and the fine-tuning candidates whose training fits the budget (``alive``, in the
    candidates' order), and why."""
    if not alive:
        head = baseline or frozen_head()
        return head, [f"no fine-tuning candidate fits the budget: "
                      f"{BASELINES.get(head, FROZEN_SAID)} is the pick"]
    best = halving(base, alive, costs, scores, losses, trials, budget, t0, metric, event,
                   per_example)
    if best is None:  # one candidate's training fits, but not its trial as well: unmeasured
        # it stays out: picked blind (20 Newsgroups at 16 a class, draw 2, auto_budget 10),
        # top_n_unfrozen scored 0.634 where the measured frozen head scores 0.655
        head, left = baseline or frozen_head(), alive[0]
        trials.append(Trial(left, -1, 0, 0, note=f"skipped: its training (about "
                                                 f"{costs[left]:.0f} s) fits the budget, its "
                                                 "trial as well does not"))
        return head, [f"no fine-tuning candidate's trial fits the budget ({left}'s training "
                      f"alone would): {BASELINES.get(head, FROZEN_SAID)}, measured, is the "
                      "pick; raise auto_budget to try it"]
    return _decide(best, scores, losses, [t.strategy for t in trials if t.rung >= 0], baseline)


def _decide(best: str, scores: dict[str, float], losses: dict[str, list[float]],
            compared: list[str], baseline: str | None = None) -> tuple[str, list[str]]:
    """The fine-tuning pick ``best`` (its trial a shortened schedule), unless the
    ``baseline``'s validation loss (the frozen head's, or the pixels' model's) is below it by
    more than ``MARGIN`` paired standard errors."""
    over = f"successive halving over {', '.join(compared)}"
    head = baseline or frozen_head()
    said = BASELINES.get(head, "the frozen head")  # its validation loss, not its solve
    if head not in losses or best not in losses:
        return best, [f"{best} has the lowest validation loss of the trials "
                      f"({scores[best]:.4f}); {over}"]
    d = np.asarray(losses[head]) - np.asarray(losses[best])
    if len(d) and np.allclose(d, 0.0, rtol=0.0, atol=1e-7):
        # the trial kept what the baseline is (lp_ft's best epoch its linear probe: fine-tuning
        # did not improve on it): the same losses on every example, so the cheaper baseline
        return head, [f"{best}'s trial kept a model with {said}'s validation loss on every "
                      f"example ({scores[head]:.4f}): its fine-tuning did not improve on "
                      f"{said}, which is the pick; {over}"]
    se = noise_of(np.asarray(losses[head]), losses[best], "loss") if len(d) > 1 else math.inf
    gain = -float(d.mean())  # the baseline's gain over the pick
    if gain > MARGIN * se:
        return head, [
            f"{said}'s validation loss {scores[head]:.4f} is below {best}'s "
            f"trial ({scores[best]:.4f}) by {gain:.4f}, more than {MARGIN:g} paired standard "
            f"errors ({MARGIN:g} x {se:.4f}) over {len(d)} validation examples; {over}"]
    return best, [
        f"{best} has the lowest validation loss of the fine-tuning trials ({scores[best]:.4f}; "
        f"{said} {scores[head]:.4f}, a difference of {gain:+.4f} in its favour, within "
        f"{MARGIN:g} paired standard errors ({MARGIN:g} x {se:.4f}) over {len(d)} validation "
        f"examples); {over}"]


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
