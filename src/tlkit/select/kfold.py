"""freeze_strategy auto below ``MIN_TRIAL_VAL`` validation examples: every candidate scored by
k-fold cross-validation over the training and validation examples together, the same folds
for all, and the pick by the decision rule (rule.py).

The candidates, in order of cost: the frozen head (its convex solve, out of fold on the cached
pooled features: seconds), the raw pixels for single-label images (the same solve on 16 x 16
pixels), then the fine-tuning candidates of the registry (``auto_rank``; on text
``contrastive`` first, ``candidates.RACE_FIRST``) whose full training fits the budget. These
race over the folds (``_race``): each whose k folds fit with every entrant's trains on fold
1, a candidate behind the best by more than two paired standard errors drops
out, and the next fold goes to the leaders first, while the budget lasts; the rule then
compares the candidates that ran the most folds with the better of the frozen head and the
pixels (chosen on every fold) on the examples of those folds (``final_pick``; on text
``contrastive`` gives way only to a fine-tuner ahead of it by more than two paired standard
errors).
A fold trial trains the candidate as the pick's fit would (auto's rates and length,
``candidate_config``) on the other k - 1 folds, cut into training and validation in the run's
proportions (its best epoch is chosen on that inner validation part, never on the held-out
fold), and scores the held-out fold; each fold has its own activation cache, shared by every
candidate's trial on that fold."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from tlkit.cache import cache_for
from tlkit.data import build_dataset
from tlkit.data.types import LabelledData
from tlkit.events import Event
from tlkit.inputs import Inputs, with_model
from tlkit.select.budget import estimate
from tlkit.select.candidates import (MARGIN, PIXELS, RACE_FIRST, candidate_config,
                                     frozen_head, race_order)
from tlkit.select.pixels import pixel_features
from tlkit.select.record import Trial
from tlkit.select.rule import (SAID, Scored, ahead_of, behind, decide, mean_se, rule_for,
                               scored, standing)
from tlkit.select.trials import Base, memory_io
from tlkit.train.evaluate import example_losses, predict_outputs
from tlkit.heads import head_inputs, normalizes
from tlkit.train.head_solver import features, folds_of, out_of_fold
from tlkit.train.loop import fit

K = 5  # folds


def together(base: Base) -> LabelledData:
    """The training and validation splits as one set (training first)."""
    tr, va = base.splits.train, base.splits.val
    return LabelledData(f"{tr.name}+validation", tr.modality, tr.task, [*tr.inputs, *va.inputs],
                        np.concatenate([tr.targets, va.targets]), tr.classes)


def kfold_pick(base: Base, costs: dict[str, float], budget: float, t0: float,
               per_example: float, trials: list[Trial], event: Event
               ) -> tuple[str, list[str], str]:
    """The pick by the modality's rule (``rule_for``) among the candidates scored out of fold
    (``costs``: the fine-tuning candidates whose full training fits the budget, in order, and
    its seconds); why; the rule. The fine-tuners race over the folds (``_race``)."""
    data = together(base)
    task, y, seed = data.task, data.targets, base.cfg.transfer_config.seed
    parts = folds_of(task, y, K, seed)
    k, n = len(parts), len(y)
    rule_name = rule_for(base.modality)
    rule = f"{rule_name}: {SAID[rule_name]}"
    if n < 4:
        return frozen_head(), [f"{n} labelled examples are too few to cross-validate: the "
                               "frozen head's convex solve is the pick"], rule
    event("stage", {"what": f"freeze_strategy auto: {len(base.data.val)} validation examples, "
                            f"fewer than the trials need: every candidate scored by {k}-fold "
                            f"cross-validation over the {n} training and validation examples"})
    board = Board(task, y, parts)
    head, convex = frozen_head(), convex_inputs(base)
    caches: dict[int, Any] = {}
    if convex is not None:
        for name, x in convex:
            s0 = time.perf_counter()
            out, c = out_of_fold(task, x, y, base.n_out, seed, folds=K)
            on = "16 x 16 pixels" if name == PIXELS else "the cached pooled features"
            board.add(name, out, range(k), [round(time.perf_counter() - s0, 2)],
                      f"its convex solve on {on} (C {c:g})")
            event("stage", {"what": f"auto: {name}: {board.said(name)}"})
    else:  # no cached features (the cache off, or augmented images): the head trains per fold
        out, seconds = trained_out_of_fold(base, head, data, parts, caches)
        board.add(head, out, range(k), seconds, "trained on each fold")
        event("stage", {"what": f"auto: {head}: {board.said(head)}"})
    fixed = list(board.folds)  # scored on every fold, at no cost worth racing over
    fold_cost = {name: estimate(base, name, per_example, *_inner_sizes(base, n - n // k))[1]
                 + per_example * n for name in costs}
    costs = {c: costs[c] for c in race_order(base.modality, list(costs))}
    skipped = _race(base, board, fixed, costs, fold_cost, budget, t0, data, parts, caches,
                    rule_name, event)
    chosen, reasons = final_pick(board, fixed, list(costs), rule_name,
                                 next(iter(RACE_FIRST.get(base.modality, ())), None))
    trials.extend(board.trials(k, costs))
    trials.extend(skipped)
    return chosen, reasons, rule


def final_pick(board: Board, fixed: list[str], tuners: list[str], rule_name: str,
               favourite: str | None = None) -> tuple[str, list[str]]:
    """After the race: the better of the candidates scored on every fold (``fixed``: the
    frozen head, the pixels) by the rule over all the examples, against the fine-tuners that
    ran the most folds (not dropped) on those folds' examples; the pick and why. At k folds
    this is the rule's pick among them all (the rules compare means over the same examples);
    below k, the frozen head against the pixels keeps every fold's evidence. Where the
    modality's measured first fine-tuner (``favourite``, ``candidates.RACE_FIRST``) is a
    finalist, another fine-tuner takes its place only by beating it by more than ``MARGIN``
    paired standard errors: among fine-tuners a few folds pick the luckiest, not the best.
    A fine-tuner that ran fewer folds than the leaders gets a note on the board saying so (the
    trial record shows why it was not compared)."""
    k, n = len(board.parts), len(board.y)
    ran = [t for t in tuners if board.folds.get(t) and t not in board.dropped]
    m = max((len(board.folds[t]) for t in ran), default=k)
    for t in ran:
        if len(board.folds[t]) < m:
            board.notes[t] += (f"; not in the final comparison: {len(board.folds[t])} folds "
                               f"against the leaders' {m} (the budget ran out)")
    best, reasons = fixed[0], []
    if len(fixed) > 1:
        best, why = decide([board.scored(f, range(k)) for f in fixed], rule_name)
        if m < k:
            reasons.append(f"{why}; over all {n} training and validation examples")
    finalists = [best] + [t for t in ran if len(board.folds[t]) == m]
    if favourite in finalists and len(finalists) > 2:
        ahead = ahead_of([board.scored(f, range(m)) for f in finalists[1:]], favourite,
                         rule_name, MARGIN)
        kept = ahead[0] if ahead else favourite
        reasons.append(
            f"{kept} beats {favourite} (the fine-tuner measured best on this modality) by "
            f"more than {MARGIN:g} paired standard errors: it goes to the final comparison"
            if ahead else
            f"{favourite}, the fine-tuner measured best on this modality, is kept against "
            f"{', '.join(f for f in finalists[1:] if f != favourite)}: none beats it by more "
            f"than {MARGIN:g} paired standard errors")
        finalists = [best, kept]
    chosen, why = decide([board.scored(f, range(m)) for f in finalists], rule_name)
    over = f"the {len(board.examples(range(m)))} examples of the {m} of {k} folds every " \
           "finalist ran" if m < k else f"the {n} training and validation examples"
    return chosen, [f"{why}; {k}-fold cross-validation over {over} (fewer validation examples "
                    "than the trials need), the same folds for every candidate", *reasons]


def _race(base: Base, board: Board, fixed: list[str], costs: dict[str, float],
          fold_cost: dict[str, float], budget: float, t0: float, data: LabelledData,
          parts: list[tuple[np.ndarray, np.ndarray]], caches: dict[int, Any], rule_name: str,
          event: Event) -> list[Trial]:
    """The fine-tuning candidates race over the folds (Maron & Moore, 1994; Birattari et al.,
    2002): round j trains every candidate still racing on fold j, the best standing first (by
    the rule's score on the folds all have run), while that fold's trial and the costliest
    contender's full training fit the budget left; where one does not, the race ends for it and
    for every candidate behind it (a cheaper candidate's extra fold would otherwise put it
    alone among the finalists, ``final_pick``); round 1 goes in the candidates' order (of cost,
    the modality's measured first ones before: ``candidates.RACE_FIRST``), each whose k folds
    fit with the rest of every entrant's (one or two folds of a few examples cannot tell
    candidates apart, and the rules were measured on k). After each
    round a candidate behind the best by more than ``MARGIN`` paired standard errors drops
    out. A clear loser costs one fold, not k, and the budget goes to the leaders' folds. The
    candidates that ran no fold, as skipped."""
    racing, skipped = list(costs), []
    k = len(parts)
    for j in range(k):
        now = standing([board.scored(c, range(j)) for c in racing], rule_name) if j else {}
        order = sorted(racing, key=lambda c: now.get(c, 0.0))  # stable: round 1 in order
        ahead: str | None = None  # a better-standing candidate the budget stopped this round
        for name in order:
            if ahead is not None:  # a cheaper one's extra fold must not outvote it
                racing.remove(name)
                board.notes[name] = (f"stopped after {j} of {k} folds: {ahead}, ahead of it, "
                                     f"could not run fold {j + 1} in the budget left")
                continue
            left = budget - (time.perf_counter() - t0)
            contenders = [c for c in costs if c == name or (board.folds.get(c) and c not in
                                                            board.dropped)]
            reserve = max(costs[c] for c in contenders)
            # round 1: a candidate enters only where its k folds and the rest of every
            # entrant's fit (the rule compares candidates on the folds all ran: one or two
            # folds of a few examples cannot tell them apart)
            rest = (k - 1) * sum(fold_cost[c] for c in contenders) if j == 0 else 0.0
            if fold_cost[name] + rest + reserve <= left:
                s0 = time.perf_counter()
                tr, te = parts[j]
                out = fold_outputs(base, name, data.subset(tr), data.subset(te), caches, j)
                board.fold(name, j, out, round(time.perf_counter() - s0, 2))
                continue
            racing.remove(name)
            seconds = (f"the other folds of it and of each candidate in the race (about "
                       f"{rest:.0f} s) " if rest else "")
            why = (f"fold {j + 1}'s trial (about {fold_cost[name]:.0f} s), {seconds}and the "
                   f"pick's training (about {reserve:.0f} s) do not fit the budget left "
                   f"({left:.0f} s; raise auto_budget to try it)")
            if j == 0:  # round 1 goes by cost, not standing: a cheaper one may still fit
                skipped.append(Trial(name, -1, 0, 0, note=f"skipped: {why}"))
            else:
                board.notes[name] = f"stopped after {j} of {k} folds: {why}"
                ahead = name
        for name in [c for c in order if c in racing]:
            event("stage", {"what": f"auto: {name}: fold {j + 1} of {k}: {board.said(name)}"})
        field = fixed + racing
        if len(field) > 1 and racing:
            for name, why in behind([board.scored(c, range(j + 1)) for c in field], rule_name,
                                    MARGIN).items():
                if name in racing:
                    racing.remove(name)
                    board.dropped.add(name)
                    board.notes[name] = f"dropped after {j + 1} of {k} folds: {why}"
                    event("stage", {"what": f"auto: {name}: {board.notes[name]}"})
        if not racing:
            break
    return skipped


class Board:
    """Each candidate's out-of-fold outputs on the folds it ran, their seconds and a note."""

    def __init__(self, task: str, y: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]]):
        self.task, self.y, self.parts = task, y, parts
        self.outputs: dict[str, np.ndarray] = {}
        self.folds: dict[str, list[int]] = {}
        self.seconds: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}
        self.dropped: set[str] = set()

    def add(self, name: str, outputs: np.ndarray, folds: Any, seconds: list[float],
            note: str) -> None:
        self.outputs[name] = np.asarray(outputs, dtype=np.float64)
        self.folds[name], self.seconds[name], self.notes[name] = list(folds), seconds, note

    def fold(self, name: str, j: int, out: np.ndarray, seconds: float) -> None:
        if name not in self.outputs:
            self.add(name, np.zeros((len(self.y), *out.shape[1:])), [], [], "")
        self.outputs[name][self.parts[j][1]] = out
        self.folds[name].append(j)
        self.seconds[name].append(seconds)

    def examples(self, folds: Any) -> np.ndarray:
        return np.sort(np.concatenate([self.parts[j][1] for j in folds]))

    def scored(self, name: str, folds: Any) -> Scored:
        idx = self.examples(folds)
        out, y = self.outputs[name][idx], self.y[idx]
        return scored(name, out, y, self.task, example_losses(out, y, self.task))

    def said(self, name: str) -> str:
        return _trial(self.scored(name, self.folds[name]), len(self.parts),
                      self.seconds[name], self.notes[name]).note

    def trials(self, k: int, costs: dict[str, float]) -> list[Trial]:
        out = []
        for name in self.outputs:
            note = self.notes[name] or (f"estimated {costs[name]:.1f} s for its training"
                                        if name in costs else "")
            out.append(_trial(self.scored(name, self.folds[name]), k, self.seconds[name],
                              note, len(self.folds[name])))
        return out


def _trial(s: Scored, k: int, seconds: list[float], note: str, folds: int | None = None
           ) -> Trial:
    """The record of one candidate's cross-validation: the mean and standard error of each
    out-of-fold score (over the folds it ran), k, how many folds it ran, their seconds."""
    cv: dict[str, Any] = {"k": k, "folds": k if folds is None else folds,
                          "examples": len(s.loss)}
    for what, x in (("accuracy", s.correct), ("brier", s.brier), ("loss", s.loss)):
        if x is not None:
            cv[what], cv[f"{what}_se"] = (round(v, 6) for v in mean_se(x))
    cv["fold_seconds"] = seconds
    said = ", ".join(f"{w} {cv[w]:.4f} +- {cv[w + '_se']:.4f}" for w in ("accuracy", "brier",
                                                                          "loss") if w in cv)
    ran = f"{k}-fold" if cv["folds"] == k else f"{cv['folds']} of {k} folds,"
    return Trial(s.name, -1, 0, 0, float(cv["loss"]), cv.get("accuracy"),
                 round(sum(seconds), 2), note=f"{ran} out-of-fold over {cv['examples']} "
                                              f"examples: {said} (mean +- standard error)"
                                              + (f"; {note}" if note else ""), cv=cv)


def convex_inputs(base: Base) -> list[tuple[str, np.ndarray]] | None:
    """(candidate, features of the training then validation examples) for the candidates the
    convex solver fits: the frozen head on the cached pooled features, and for single-label
    images the raw pixels; None without cached features."""
    if base.cache is None:
        return None
    n = base.cache.n_groups
    got = [base.cache.get(s, getattr(base.data, s), n) for s in ("train", "val")
           if len(getattr(base.data, s))]
    if any(g is None for g in got):
        return None
    x = np.concatenate([features(g)[0] for g in got if g is not None])
    out = [(frozen_head(), head_inputs(x, normalizes(base.inputs.asm.model.head)))]
    if base.modality == "image" and base.data.task == "single_label":
        out.append((PIXELS, np.concatenate([pixel_features(base, s) for s in
                                            (base.splits.train, base.splits.val) if len(s)])))
    return out


def _inner_sizes(base: Base, n_part: int) -> tuple[int, int]:
    """(training, validation) sizes of a fold's training part of ``n_part`` examples: the
    run's proportions."""
    n_tr, n_val = len(base.data.train), len(base.data.val)
    inner = min(n_part - 1, max(1, round(n_part * n_val / max(1, n_tr + n_val)))) if n_val else 0
    return n_part - inner, inner


def trained_out_of_fold(base: Base, name: str, data: LabelledData,
              parts: list[tuple[np.ndarray, np.ndarray]], caches: dict[int, Any]
              ) -> tuple[np.ndarray, list[float]]:
    """``name``'s out-of-fold outputs (a fold trial per part) and each fold's seconds."""
    outputs: np.ndarray | None = None
    seconds = []
    for i, (tr, te) in enumerate(parts):
        s0 = time.perf_counter()
        out = fold_outputs(base, name, data.subset(tr), data.subset(te), caches, i)
        if outputs is None:
            outputs = np.zeros((len(data), *out.shape[1:]), dtype=np.float64)
        outputs[te] = out
        seconds.append(round(time.perf_counter() - s0, 2))
    assert outputs is not None
    return outputs, seconds


def fold_outputs(base: Base, name: str, part: LabelledData, held: LabelledData,
                 caches: dict[int, Any] | None = None, fold: int = 0) -> np.ndarray:
    """Candidate ``name`` trained as the pick's fit would train it on ``part`` (cut into
    training and validation in the run's proportions), its outputs on ``held``."""
    cfg = candidate_config(base.cfg, name, rates=base.rates)
    n_tr, n_val = _inner_sizes(base, len(part))
    idx = np.arange(len(part))
    strat = part.targets if part.task == "single_label" else None
    seed = base.cfg.data.seed
    try:
        tr, va = train_test_split(idx, test_size=n_val, stratify=strat, random_state=seed) \
            if n_val else (idx, idx[:0])
    except ValueError:  # too few of some class to stratify
        tr, va = train_test_split(idx, test_size=n_val, random_state=seed)
    caches = {} if caches is None else caches
    if fold not in caches:
        caches[fold] = _cache(base.inputs)
    inputs = _fold_inputs(base.inputs, part.subset(np.sort(tr)), part.subset(np.sort(va)),
                          caches[fold])
    inputs = with_model(inputs, cfg)
    tc = cfg.transfer_config
    fit(inputs.asm, inputs.training_data(), tc.loop_settings, memory_io(), hooks=inputs.hooks,
        dist=base.dist)
    out, _ = predict_outputs(inputs.asm.model, build_dataset(held, inputs.prep), inputs.collate,
                             tc.batch_size, base.dist.device, tc.mixed_precision)
    return out.astype(np.float64)


def _cache(base: Inputs) -> Any:
    """A fold's own activation cache (in memory: fold subsets are not worth a disk copy)."""
    if base.cache is None:
        return None
    return cache_for(base.backbone, base.n_groups, base.collate, base.cache.device,
                     base.tc.cache_settings.model_copy(update={"disk": False}), base.prep,
                     dist=base.cache.dist)


def _fold_inputs(base: Inputs, train: LabelledData, val: LabelledData, cache: Any) -> Inputs:
    splits = replace(base.splits, train=train, val=val, test=None)
    return replace(base, splits=splits, train_ds=build_dataset(train, base.prep, base.augment),
                   val_ds=build_dataset(val, base.prep), test_ds=None, cache=cache)
