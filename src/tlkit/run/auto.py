"""``freeze_strategy: auto``: the strategy and its rates chosen inside a time budget.

The candidates are the strategies that suit a user's small or medium labelled set: a converged
linear head on frozen features (``all_frozen``), the top groups retrained (``top_n_unfrozen``),
linear probe then fine-tuning (``lp_ft``), full fine-tuning (``none``) and LoRA. A fine-tuning
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
pixels``), which tlkit serves like any run.

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
(a backward pass counted as two forwards); a candidate that does not fit is skipped, with the
reason. The record of every trial goes in summary.json under ``auto`` and in ``auto.json`` of
the run directory, which a resumed run reads instead of choosing again.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from tlkit import strategies
from tlkit.assemble import Assembled, assemble, layer_groups_for
from tlkit.backbones import load_backbone
from tlkit.cache import ActivationCache, CacheHook, cache_for
from tlkit.config import AUTO, Config, derive, without_strategy_keys
from tlkit.data import build_collate, build_dataset, load_source, make_splits, num_outputs_of
from tlkit.data.transforms import resolve_preprocessing
from tlkit.device import autocast
from tlkit.diagnose.classical import fit_classical
from tlkit.distributed import Dist
from tlkit.errors import UserError
from tlkit.events import Event
from tlkit.metrics import compute_metrics, monitor_metric, probabilities
from tlkit.plan.length import Length, length_of
from tlkit.regularization import L2SP
from tlkit.run.prepare import check_length, training_data
from tlkit.rundir import RunDir
from tlkit.train.evaluate import example_losses
from tlkit.train.feed import Feed
from tlkit.train.hooks import NO_IO, RunIO
from tlkit.train.loop import TrainData, fit
from tlkit.train.selection import MIN_VAL_EXAMPLES, noise_of

# the frozen head, then the fine-tuning candidates in the order taken when trials cannot choose
CANDIDATES = ("all_frozen", "top_n_unfrozen", "lp_ft", "none", "lora")
# images: the raw pixels' model (tlkit.backbones.pixels), picked where the pretrained features do
# worse than the pixels themselves under the same convex head
PIXELS = "pixels"
RUNGS = (4, 2)  # the trials' schedules: a quarter, then half of the full one
MARGIN = 2.0  # paired standard errors the frozen head must beat the fine-tuning pick by
BACKWARD = 2.0  # a backward pass costs about two forwards
MIN_TRIAL_VAL = 20  # fewer validation examples: no trials, the first candidate that fits
# Fine-tuning rates and length per modality, where the user's config leaves the key unset: a new
# head learns fast, the pretrained layers slowly and slower toward the input (bench/strategies.py's
# rates for MiniLM and MobileNetV2).
TUNING: dict[str, dict[str, Any]] = {
    "text": {"head_lr": 1e-2, "backbone_lr": 1e-4, "lr_decay_per_layer": 0.8, "batch_size": 16,
             "dropout": 0.1, "epochs": 5},
    "image": {"head_lr": 1e-2, "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7,
              "batch_size": 32, "dropout": 0.2, "epochs": 5},
}


@dataclass
class Trial:
    strategy: str
    rung: int  # 0, 1, ...; -1: no trial (the frozen head's convex solve, or skipped)
    epochs: int
    steps: int
    val_loss: float | None = None
    val_metric: float | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class Choice:
    chosen: str
    settings: dict[str, Any]  # transfer_config keys of the chosen strategy
    budget_seconds: float
    spent_seconds: float
    default_seconds: float  # the default fit's time, estimated
    metric: str
    trials: list[Trial] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # the classical baseline on the same splits (issue 20): its validation loss and metric, and
    # whether it beat the pick by the margin (auto then says so, and still trains the pick)
    classical: dict[str, Any] | None = None
    # the fine-tuning rates and length auto set (the keys the user's config left unset)
    rates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choice:
        return cls(**{**d, "trials": [Trial(**t) for t in d.get("trials", [])]})


@dataclass
class _Base:
    """What every trial shares: the pretrained backbone (never trained), the data and the cache."""

    cfg: Config
    backbone: Any
    n_out: int
    modality: str
    data: TrainData
    cache: ActivationCache | None
    dist: Dist
    n_test: int
    load_seconds: float  # loading the backbone
    splits: Any  # the run's splits (the classical baseline reads their inputs)
    rates: dict[str, Any] = field(default_factory=dict)  # auto's rates for fine-tuning candidates


def tuning_rates(cfg: Config, modality: str) -> dict[str, Any]:
    """auto's fine-tuning rates and length for ``modality``, for the keys the user left unset."""
    given = cfg.transfer_config.model_fields_set
    return {k: v for k, v in TUNING.get(modality, {}).items() if k not in given}


def candidate_config(cfg: Config, strategy: str, epochs: int | None = None,
                     min_steps: int | None = None, trial: bool = False,
                     rates: dict[str, Any] | None = None) -> Config:
    """``cfg`` with ``strategy`` in place of auto: the keys the user gave for it are kept, the
    other strategies' keys go back to their defaults; a fine-tuning candidate takes ``rates``
    (auto's, for the keys the user left unset). A ``trial`` keeps the validation split out of
    the frozen head's fit, so every trial's validation loss is out-of-sample."""
    tc = cfg.transfer_config.model_dump(mode="json")
    own = {k: tc[k] for owner, k in strategies.owned_keys() if owner == strategy}
    tc = without_strategy_keys(tc)
    tc.update(own, freeze_strategy=strategy, auto_budget=5.0)
    if strategy == PIXELS:  # no pretrained network: a logistic regression on the pixels
        tc.update(freeze_strategy="all_frozen", source_model="pixels",
                  pretrained_weights="packaged")
    elif strategy != "all_frozen":
        tc.update(rates or {})
    if epochs is not None:
        tc["epochs"] = max(epochs, 2) if strategy == "lp_ft" else epochs  # a probe, then tuning
        tc["early_stopping_patience"] = None  # a trial is short: it runs its schedule out
    if min_steps is not None:
        tc["min_steps"] = min_steps
    if trial:
        tc["head_refit"] = False
    if strategy == "lp_ft":  # a probe epoch, then at least one of tuning (epochs: 1 too)
        tc["epochs"] = max(tc["epochs"], 2)
        if tc.get("lp_epochs") and tc["lp_epochs"] >= tc["epochs"]:
            tc["lp_epochs"] = None
    if strategy == PIXELS:  # its own 16 x 16, not the resolution set for the network
        return derive(cfg, f"freeze_strategy auto ({strategy})", transfer_config=tc,
                      data={"image_size": None})
    return derive(cfg, f"freeze_strategy auto ({strategy})", transfer_config=tc)


def chosen_config(cfg: Config, choice: Choice) -> Config:
    return candidate_config(cfg, choice.chosen, rates=choice.rates)


def choose(cfg: Config, dist: Dist, event: Event) -> Choice:
    """The pick inside the budget (the module's docstring); the record of every trial."""
    if dist.enabled:
        raise UserError("freeze_strategy auto runs its trials on one process; run it without "
                        "torchrun / accelerate launch, or name a strategy")
    base = _base(cfg, dist, event)
    tc = cfg.transfer_config
    metric = monitor_metric(base.data.task)[0]
    per_example = _forward_seconds(base)
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
    frozen = _run_trial(base, "all_frozen", None, None, 0, losses)
    frozen.rung, frozen.note = -1, "the linear head's convex solve on the cached features"
    trials.append(frozen)
    costs: dict[str, float] = {}
    for name in CANDIDATES[1:]:
        reason, cost = _estimate(base, name, per_example)
        if reason is None and cost > budget - (time.perf_counter() - t0):
            reason = (f"its training would take about {cost:.0f} s, over the budget ({budget:.0f}"
                      " s; raise auto_budget to try it)")
        if reason is not None:
            trials.append(Trial(name, -1, 0, 0, note=f"skipped: {reason}"))
        else:
            costs[name] = cost
    alive = list(costs)  # in CANDIDATES' order
    scores: dict[str, float] = {"all_frozen": _score(frozen)}
    pixels = _pixels_win(base, event, trials)
    if pixels is not None:
        chosen, reasons = PIXELS, [pixels]
        trials.extend(Trial(c, -1, 0, 0, note="not tried: raw pixels beat the pretrained "
                                                "features") for c in alive)
    else:
        chosen, reasons = _pick(base, alive, costs, scores, losses, trials, budget, t0, metric,
                                event)
    if 0 < len(base.data.val) < MIN_VAL_EXAMPLES and chosen in losses and chosen != "all_frozen":
        reasons.append(f"the validation split has {len(base.data.val)} examples: the choice "
                       "between close candidates is noisy")
    classical = _classical(base, cfg, chosen, scores, losses, metric, event, trials, reasons)
    spent = time.perf_counter() - t0
    rates = base.rates if chosen not in ("all_frozen", PIXELS) else {}
    own = candidate_config(cfg, chosen, rates=rates).transfer_config
    settings = {k: getattr(own, k) for owner, k in strategies.owned_keys() if owner == chosen}
    return Choice(chosen, {k: v.model_dump() if hasattr(v, "model_dump") else v
                           for k, v in settings.items() if v is not None},
                  round(budget, 2), round(spent, 2), round(default, 2), metric, trials, reasons,
                  classical, dict(rates))


def _pixels_win(base: _Base, event: Event, trials: list[Trial]) -> str | None:
    """Images, single-label: do raw pixels (``tlkit.backbones.pixels``) beat the pretrained
    network's frozen features under the same convex head? Each example's out-of-fold Brier score
    (a proper score, and bounded: one overconfident mistake cannot swamp the paired test as a
    log loss of 30 can) over the training and validation splits together (the same folds for
    both feature sets, so the scores pair up; the pretrained features are the cached ones the
    frozen head was fitted on).
    Returns why the pixels are the pick when they win by more than ``MARGIN`` paired standard
    errors, else None. A fine-tuned network starts from those features, so where a linear
    model on the pixels beats them clearly, the pretrained network is not what the data needs."""
    if base.modality != "image" or base.data.task != "single_label" or base.cache is None:
        return None
    from tlkit.train.head_solver import features, out_of_fold

    n = base.cache.n_groups
    got = [base.cache.get(name, getattr(base.data, name), n) for name in ("train", "val")]
    if any(g is None for g in got):
        return None
    pairs = [features(g) for g in got if g is not None]
    x_frozen = np.concatenate([x for x, _ in pairs])
    y = np.concatenate([t for _, t in pairs])
    if len(y) < 20:
        return None
    event("stage", {"what": "freeze_strategy auto: raw pixels against the pretrained features "
                            "(out-of-fold, the same folds)"})
    t0 = time.perf_counter()
    x_pixels = np.concatenate([_pixel_features(base, split) for split in
                               (base.splits.train, base.splits.val)])
    seed = base.cfg.transfer_config.seed
    mine, c_px = out_of_fold("single_label", x_pixels, y, base.n_out, seed)
    theirs, c_fr = out_of_fold("single_label", x_frozen, y, base.n_out, seed)
    px, fr = _brier(mine, y), _brier(theirs, y)
    gain = float((fr - px).mean())
    se = noise_of(px, list(fr), "loss")
    won = gain > MARGIN * se
    trials.append(Trial(PIXELS, -1, 0, 0, float(px.mean()),
                        float((mine.argmax(1) == y).mean()), round(time.perf_counter() - t0, 2),
                        note=f"raw pixels + the convex head: out-of-fold Brier score over "
                             f"{len(y)} examples (C {c_px:g}); the pretrained features on the "
                             f"same folds: {fr.mean():.4f}, accuracy "
                             f"{(theirs.argmax(1) == y).mean():.4f} (C {c_fr:g})"))
    if not won:
        return None
    return (f"raw pixels beat the pretrained features under the same convex head: out-of-fold "
            f"Brier score {px.mean():.4f} against {fr.mean():.4f} over {len(y)} examples, by "
            f"more than {MARGIN:g} paired standard errors ({MARGIN:g} x {se:.4f}); transfer is not paying "
            "for itself here, and the pick is the pixels' model (source_model pixels, a "
            "logistic regression on 16 x 16 pixels), served like any other")


def _brier(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's Brier score: the squared distance of its probabilities to its one-hot
    label (0 to 2)."""
    p = probabilities(outputs, "single_label")
    p[np.arange(len(y)), y] -= 1.0
    return (p ** 2).sum(1)


def _pixel_features(base: _Base, split: Any) -> np.ndarray:
    from tlkit.backbones.pixels import PixelsBackbone

    bb = PixelsBackbone()
    # as the pixels' model will see them: its own 16 x 16, not the network's image_size
    prep = resolve_preprocessing(bb.preprocessing, base.cfg.data.model_copy(
        update={"image_size": None}))
    ds, collate = build_dataset(split, prep, "none"), build_collate(prep)
    out = []
    with torch.no_grad():
        for i in range(0, len(ds), 64):
            batch: list[Any] = [ds[j] for j in range(i, min(i + 64, len(ds)))]
            inputs, _ = collate(batch)
            out.append(bb(inputs).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, bb.feature_dim))


def _pick(base: _Base, alive: list[str], costs: dict[str, float], scores: dict[str, float],
          losses: dict[str, list[float]], trials: list[Trial], budget: float, t0: float,
          metric: str, event: Event) -> tuple[str, list[str]]:
    """The pick among the frozen head and the fine-tuning candidates whose training fits the
    budget (``alive``, in CANDIDATES' order), and why."""
    if not alive:
        return "all_frozen", ["no fine-tuning candidate fits the budget: the frozen head's "
                              "convex solve is the pick"]
    if len(base.data.val) < MIN_TRIAL_VAL:
        pick = alive[0]
        trials.extend(Trial(c, -1, 0, 0, note=f"not tried: {pick} comes first") for c in alive[1:])
        trials.append(Trial(pick, -1, 0, 0, note=f"picked without a trial, estimated "
                                                  f"{costs[pick]:.1f} s of training"))
        return pick, [f"the validation split has {len(base.data.val)} examples, fewer than "
                      f"{MIN_TRIAL_VAL}: too few to tell trials apart, so no trial ran; {pick} "
                      "is the first fine-tuning candidate (in the order top_n_unfrozen, lp_ft, "
                      "none, lora) whose training fits the budget"]
    best = _halving(base, alive, costs, scores, losses, trials, budget, t0, metric, event)
    if best is None:  # one candidate's training fits, but not its trial as well
        pick = alive[0]
        trials.append(Trial(pick, -1, 0, 0, note=f"picked without a trial: its training "
                                                 f"(about {costs[pick]:.0f} s) fits the budget, "
                                                 "its trial as well does not"))
        return pick, [f"{pick} is the only fine-tuning candidate whose training fits the budget"]
    return _decide(best, scores, losses, [t.strategy for t in trials if t.rung >= 0])


def _halving(base: _Base, alive: list[str], costs: dict[str, float], scores: dict[str, float],
             losses: dict[str, list[float]], trials: list[Trial], budget: float, t0: float,
             metric: str, event: Event) -> str | None:
    """Successive halving over the fine-tuning candidates in ``alive`` (changed in place: what
    is left when no trial could run); the best by validation loss, or None when no trial ran."""
    tc = base.cfg.transfer_config
    ran_any: str | None = None
    for rung, divisor in enumerate(RUNGS):
        if len(alive) < 2 and (rung > 0 or not alive):
            break  # one candidate left: its trial would not change the pick among fine-tuners
        spent = time.perf_counter() - t0
        # the rung's trials and the costliest survivor's full training must fit what is left
        while alive and spent + sum(costs[c] / divisor for c in alive) + max(
                costs[c] for c in alive) > budget:
            if len(alive) == 1 and rung == 0:
                return None  # its training fits (checked before), its trial as well does not
            drop = max(alive, key=lambda c: costs[c])
            alive.remove(drop)
            trials.append(Trial(drop, rung, 0, 0, note=f"skipped at rung {rung}: the budget "
                                                        f"left ({budget - spent:.0f} s) is short"))
        ran: list[Trial] = []
        for name in alive:
            epochs = max(1, round(_epochs(base, name) / divisor))
            ran.append(_run_trial(base, name, epochs, max(1, tc.min_steps // divisor), rung,
                                  losses))
            ran[-1].note = f"estimated {costs[name] / divisor:.1f} s"
            event("stage", {"what": _describe(ran[-1], metric)})
        trials.extend(ran)
        for t in ran:
            scores[t.strategy] = _score(t)
        ranked = sorted(alive, key=lambda c: scores[c])
        ran_any = ranked[0] if ranked else ran_any
        alive[:] = ranked[:max(1, math.ceil(len(ranked) / 2))]
    return ran_any


def _epochs(base: _Base, strategy: str) -> int:
    return candidate_config(base.cfg, strategy, rates=base.rates).transfer_config.epochs


def _classical(base: _Base, cfg: Config, chosen: str, scores: dict[str, float],
               losses: dict[str, list[float]], metric: str, event: Event,
               trials: list[Trial], reasons: list[str]) -> dict[str, Any] | None:
    """The classical baseline (TF-IDF or raw pixels + logistic regression, fitted on the
    training split) against the pick, on validation: it is not a candidate (a run's model is a
    network tlkit serves), but where it beats the pick by the same margin a trial must, the
    choice says so plainly."""
    val = base.splits.val
    if len(val) == 0:
        return None
    event("stage", {"what": "freeze_strategy auto: the classical baseline on the same splits"})
    r = fit_classical(base.splits.train, val, None, base.n_out, cfg.transfer_config.seed,
                      cfg.diagnostics.classical_image_size)
    mine = example_losses(r.val_outputs, val.targets, val.task)
    shown = compute_metrics(r.val_outputs, val.targets, val.task).get(metric)
    trial = Trial("classical", -1, 0, 0, float(mine.mean()),
                  None if shown is None else float(shown), round(r.seconds, 2),
                  note=f"not a transfer candidate: {r.name}, C {r.c:g} by cross-validation "
                       "on the training split")
    trials.append(trial)
    out: dict[str, Any] = {"name": r.name, "val_loss": float(mine.mean()),
                           f"val_{metric}": trial.val_metric, "seconds": round(r.seconds, 2),
                           "beats_pick": False}
    if chosen not in losses or len(mine) < 2:
        return out
    theirs = np.asarray(losses[chosen])
    gain = float((theirs - mine).mean())
    se = noise_of(mine, losses[chosen], "loss")
    if gain > MARGIN * se:
        out["beats_pick"] = True
        out["said"] = (f"the classical baseline ({r.name}) has a lower validation loss than "
                       f"{chosen} ({mine.mean():.4f} against {scores.get(chosen, theirs.mean()):.4f}, "
                       f"by more than {MARGIN:g} paired standard errors): transfer is not paying "
                       f"for itself here. This run trains {chosen}, the best transfer candidate; "
                       "`tlkit fit --baseline` gives the verdict on the test split")
        reasons.append(out["said"])
    return out


def _decide(best: str, scores: dict[str, float], losses: dict[str, list[float]],
            compared: list[str]) -> tuple[str, list[str]]:
    """The fine-tuning pick ``best`` (its trial a shortened schedule), unless the frozen head's
    validation loss is below it by more than ``MARGIN`` paired standard errors."""
    over = f"successive halving over {', '.join(compared)}"
    if "all_frozen" not in losses or best not in losses:
        return best, [f"{best} has the lowest validation loss of the trials "
                      f"({scores[best]:.4f}); {over}"]
    d = np.asarray(losses["all_frozen"]) - np.asarray(losses[best])
    se = noise_of(np.asarray(losses["all_frozen"]), losses[best], "loss") if len(d) > 1 \
        else math.inf
    gain = -float(d.mean())  # the frozen head's gain over the pick
    if gain > MARGIN * se:
        return "all_frozen", [
            f"the frozen head's validation loss {scores['all_frozen']:.4f} is below {best}'s "
            f"trial ({scores[best]:.4f}) by {gain:.4f}, more than {MARGIN:g} paired standard "
            f"errors ({MARGIN:g} x {se:.4f}) over {len(d)} validation examples; {over}"]
    return best, [
        f"{best} has the lowest validation loss of the fine-tuning trials ({scores[best]:.4f}; "
        f"the frozen head {scores['all_frozen']:.4f}, a difference of {gain:+.4f} in the frozen "
        f"head's favour, within {MARGIN:g} paired standard errors ({MARGIN:g} x {se:.4f}) over "
        f"{len(d)} validation examples); {over}"]


def _score(t: Trial) -> float:
    return t.val_loss if t.val_loss is not None else math.inf


def _describe(t: Trial, metric: str) -> str:
    if t.val_loss is None:
        return f"auto: {t.strategy}: {t.note}"
    return (f"auto: trial {t.strategy} (rung {t.rung}, {t.epochs} epoch(s), {t.steps} steps): "
            f"val loss {t.val_loss:.4f}, val {metric} {t.val_metric:.4f}, {t.seconds:.1f} s")


def _base(cfg: Config, dist: Dist, event: Event) -> _Base:
    tc = cfg.transfer_config
    event("stage", {"what": f"freeze_strategy auto: loading data {cfg.data.source} and "
                            f"{tc.source_model} for the trials"})
    data = load_source(cfg.data)
    splits = make_splits(data, cfg.data)
    check_length(tc, length_of(len(splits.train), tc.loop_settings))
    t0 = time.perf_counter()
    torch.manual_seed(tc.seed)  # a random initialisation (pretrained_weights none), as fit's
    backbone = load_backbone(tc.source_model, tc.pretrained_weights, tc.pooling,
                             cfg.data.max_length)
    load_seconds = time.perf_counter() - t0
    if backbone.kind != data.modality:
        raise UserError(f"{tc.source_model} is a {backbone.kind} backbone but the data is "
                        f"{data.modality}; choose a {data.modality} backbone")
    groups = layer_groups_for(backbone, tc)
    backbone.use_groups(groups)
    prep = resolve_preprocessing(backbone.preprocessing, cfg.data)
    collate = build_collate(prep)
    augment = cfg.data.augment if data.modality == "image" else "none"
    train_ds = build_dataset(splits.train, prep, augment)
    cache = None
    if tc.cache.enabled and augment == "none":
        cache = cache_for(backbone, len(groups), collate, dist.device, tc.cache_settings, prep,
                          dist=dist)
    return _Base(cfg, backbone, num_outputs_of(splits.train), data.modality,
                 training_data(cfg, data.modality, splits, prep, collate, train_ds), cache, dist,
                 0 if splits.test is None else len(splits.test), load_seconds, splits,
                 tuning_rates(cfg, data.modality))


def _forward_seconds(base: _Base, n: int = 48) -> float:
    """Seconds of one no-grad forward per training example (after a warm-up batch)."""
    asm = _assembled(base, candidate_config(base.cfg, "all_frozen"))
    model, device = asm.model.to(base.dist.device).eval(), base.dist.device
    feed = Feed({"train": base.data.train}, base.data.collate, device)
    idx = list(range(min(n, len(base.data.train))))
    mp = base.cfg.transfer_config.mixed_precision
    with torch.no_grad(), autocast(device, mp):
        feed.forward(model, feed.batch("train", idx[:4])[0])
        t0 = time.perf_counter()
        for i in range(0, len(idx), 16):
            feed.forward(model, feed.batch("train", idx[i:i + 16])[0])
    return (time.perf_counter() - t0) / max(1, len(idx))


def _assembled(base: _Base, cfg: Config) -> Assembled:
    torch.manual_seed(cfg.transfer_config.seed)  # the head's initialisation, as fit's
    return assemble(cfg.transfer_config, base.n_out, base.modality, base.cfg.data.max_length,
                    backbone=copy.deepcopy(base.backbone))


def _estimate(base: _Base, strategy: str, per_example: float) -> tuple[str | None, float]:
    """(why the candidate cannot run here, or None; the seconds of its full training)."""
    cfg = candidate_config(base.cfg, strategy, rates=base.rates)
    try:
        asm = _assembled(base, cfg)
    except UserError as e:  # LoRA on a backbone without its target modules, say
        return str(e), 0.0
    length = length_of(len(base.data.train), cfg.transfer_config.loop_settings)
    return None, _cost(asm, length, per_example, len(base.data.val))


def _cost(asm: Assembled, length: Length, per_example: float, n_val: int) -> float:
    """Estimated seconds of training ``asm``'s plan: per phase, each epoch's examples through
    the part above the phase's cut, forward and backward, and a validation pass."""
    n_groups = len(asm.groups)
    total = 0.0
    for ph in asm.plan.phases:
        cut = asm.plan.frozen_below(ph)
        if ph.converge_head and cut == n_groups:
            continue  # the convex solve on cached features
        share = max(n_groups - cut, 1) / max(n_groups, 1)
        epochs = ph.end_epoch - ph.start_epoch
        examples = length.batches_per_epoch * length.batch_size
        total += epochs * share * per_example * (examples * (1 + BACKWARD) + n_val)
    return total


def _run_trial(base: _Base, strategy: str, epochs: int | None, min_steps: int | None,
               rung: int, losses: dict[str, list[float]]) -> Trial:
    cfg = candidate_config(base.cfg, strategy, epochs, min_steps, trial=True, rates=base.rates)
    tc = cfg.transfer_config
    asm = _assembled(base, cfg)
    hooks: list[Any] = [L2SP(asm.model.backbone, tc.l2sp_lambda)] if tc.l2sp_lambda > 0 else []
    if base.cache is not None:
        hooks.append(CacheHook(base.cache, asm.plan))
    best: dict[str, Any] = {}

    def save_best(model: torch.nn.Module, state: Any) -> None:
        best["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def load_best(model: torch.nn.Module) -> None:
        if "weights" in best:
            model.load_state_dict(best["weights"])

    io = RunIO(save_last=NO_IO.save_last, save_best=save_best, load_best=load_best,
               log_epoch=NO_IO.log_epoch)
    t0 = time.perf_counter()
    state = fit(asm, base.data, tc.loop_settings, io, hooks=hooks, dist=base.dist)
    seconds = time.perf_counter() - t0
    row = next(r for r in state.history if r["epoch"] == state.best_epoch)
    if state.best_losses is not None:
        losses[strategy] = state.best_losses
    metric = monitor_metric(base.data.task)[0]
    length = length_of(len(base.data.train), tc.loop_settings)
    return Trial(strategy, rung, tc.epochs, length.total_steps, float(row["val_loss"]),
                 float(row.get(f"val_{metric}", math.nan)), round(seconds, 2))


def format_choice(choice: Choice) -> str:
    lines = [f"freeze_strategy auto chose {choice.chosen}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in choice.settings.items()) + ")"
                if choice.settings else "")
             + f": trials {choice.spent_seconds:.1f} s of a {choice.budget_seconds:.1f} s budget",
             f"  {'strategy':<15} {'rung':>4} {'epochs':>6} {'steps':>6} {'val loss':>9} "
             f"{'val ' + choice.metric:>13} {'seconds':>8}  note"]
    for t in choice.trials:
        loss = f"{t.val_loss:.4f}" if t.val_loss is not None else "-"
        met = f"{t.val_metric:.4f}" if t.val_metric is not None else "-"
        lines.append(f"  {t.strategy:<15} {t.rung if t.rung >= 0 else '-':>4} {t.epochs:>6} "
                     f"{t.steps:>6} {loss:>9} {met:>13} {t.seconds:>8.1f}  {t.note}")
    lines += [f"  - {r}" for r in choice.reasons]
    return "\n".join(lines)


def recorded_choice(record: Any) -> Choice:
    """The pick a run recorded, checked: its own file, but a file can be edited or damaged."""
    try:
        choice = Choice.from_dict(json.loads(record.read_text()))
        if choice.chosen not in (*CANDIDATES, PIXELS) or not isinstance(choice.settings, dict):
            raise ValueError(f"chosen {choice.chosen!r} is not one of {', '.join(CANDIDATES)}, "
                             f"{PIXELS}")
        return choice
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise UserError(f"{record} cannot be read as freeze_strategy auto's record ({e}); it "
                        "is written by fit: restore it, or delete it to run the trials again "
                        "on --resume") from None


def resolve_auto(cfg: Config, run: RunDir, resume: bool, dist: Dist, event: Event
                 ) -> tuple[Config, Choice | None]:
    """The config to train: ``cfg`` itself, or with auto, the chosen candidate's (read from the
    run directory's ``auto.json`` when resuming, so a resumed run trains the same pick)."""
    if cfg.transfer_config.freeze_strategy != AUTO:
        return cfg, None
    record = run.path / "auto.json"
    if resume and record.is_file():
        choice = recorded_choice(record)
        event("stage", {"what": f"freeze_strategy auto: resuming the pick {choice.chosen} "
                                f"({record})"})
    else:
        choice = choose(cfg, dist, event)
        if dist.is_main:
            run.write_text(record, json.dumps(choice.to_dict(), indent=1) + "\n")
    event("stage", {"what": format_choice(choice)})
    return chosen_config(cfg, choice), choice
