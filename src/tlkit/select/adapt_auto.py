"""``adaptation.method: auto``: the adaptations tried inside a budget, the label-free pick kept.

The candidates: source-only training (``none``), AdaBN where the backbone has BatchNorm layers,
and DANN, MMD and CORAL at each of ``adaptation.auto_weights`` where the strategy trains backbone
layers. A trial is a whole run of the config (a temporary run directory, the test split cut to
64 examples; calibration, the source-task check and the labelled target test left out, as they
do not bear on the choice), scored by ``tlkit.adapt.label_free`` from its predictions on the
unlabelled target and its source validation accuracy. AdaBN trains nothing of its own: it is
source-only's model with its BatchNorm statistics re-estimated on the target, which source-only's
trial measures on a copy (its source accuracy is source-only's). Target labels, where the target
has some, are only reported beside each trial.

Inside ``adaptation.auto_budget`` (default 3: the whole fit, trials and the pick's training, in
about three times one source-only fit's seconds), by successive halving (Jamieson & Talwalkar,
2016), as ``freeze_strategy: auto`` chooses its strategy:

- rung 0: each candidate trains an eighth of the schedule (``RUNGS``: the epochs and
  ``min_steps`` divided by 8); source-only first, whose trial measures the seconds of one of its
  steps and of a run's fixed work, hence the budget (``auto_budget`` times a source-only fit's
  estimated seconds). An aligning step costs about twice source-only's (the target's batch
  runs forward and backward too: ``ALIGN_COST``) until one is measured.
- the aligning candidates in ``order``: the larger weight first, then DANN, MMD, CORAL (at the
  weights 0.1 and 1 of bench/label_free.py's three shifts, weight 1 reached the higher target
  accuracy in 9 of the 9 method-shift pairs at commit 2f8f150 and in 6 of 9 (one tie, MMD
  lower twice) at 82fec1d, and DANN weight 1 the highest mean in both); those
  whose trials, with the costliest candidate's full training after them, do not fit the
  budget are left out, from the end, with the reason.
- each later rung (a quarter, then half of the schedule) trains source-only and the better
  half of the aligning candidates by the label-free order again, when its trials and the
  costliest survivor's full training still fit the budget.

The pick is the label-free choice among the last rung's trials; the run then trains it once,
with the full schedule (no trial runs the full schedule, so there are no full-length weights to
keep). ``auto_budget: null`` trains every candidate's full schedule instead and then the pick
(seeded: the model its trial scored): the exhaustive choice, about eight fits. The record
(trials with their rung, steps and seconds, the budget, the pick and why) goes in
``adaptation_auto.json`` and summary.json's ``adaptation.auto``; a resumed run reads it.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlkit import strategies
from tlkit.adapt.label_free import Candidate, choose, oracle, ranked, source_margin
from tlkit.config import Config, derive, dump_config
from tlkit.errors import UserError
from tlkit.events import Event
from tlkit.plan.length import length_of
from tlkit.rundir import RunDir
from tlkit.select.budget import FLOOR_SECONDS
from tlkit.summary_json import read_summary

Fit = Callable[..., dict[str, Any]]
ALIGNING = ("dann", "mmd", "coral")
RECORD = "adaptation_auto.json"
RUNGS = (8, 4, 2)  # the trials' schedules: an eighth, a quarter, then half of the full one
ALIGN_COST = 2.0  # an aligning step against a source-only one, until one is measured


def candidates(cfg: Config) -> list[tuple[str, str, float]]:
    """(name, method, weight) of each candidate the config allows."""
    ad = cfg.adaptation
    out = [("none", "none", 0.0), ("adabn", "adabn", 0.0)]
    if strategies.trains_backbone(cfg.transfer_config.freeze_strategy):
        out += [(f"{m} weight {w:g}", m, float(w)) for m in ALIGNING for w in ad.auto_weights]
    return out


def with_adaptation(cfg: Config, method: str, weight: float) -> Config:
    """``cfg`` with this adaptation method (and weight, for the aligning ones)."""
    ad = cfg.adaptation.model_copy(update={"method": method,
                                           **({"weight": weight} if weight else {})})
    return cfg.model_copy(update={"adaptation": ad})


def _trial_config(cfg: Config, method: str, weight: float) -> Config:
    """A trial: the candidate without what does not bear on the choice (calibration, the
    source-task check, the labelled target test)."""
    c = with_adaptation(cfg, method, weight)
    d = c.diagnostics.model_copy(update={"calibration": False, "source_task": None})
    ad = c.adaptation
    if ad.target is not None and ad.target.test is not None:
        ad = ad.model_copy(update={"target": ad.target.model_copy(update={"test": None})})
    return c.model_copy(update={"diagnostics": d, "adaptation": ad})


def _candidate(name: str, method: str, weight: float, measured: dict[str, Any],
               source_val_accuracy: float) -> Candidate:
    return Candidate(name, method, weight, float(measured.get("target_im", 0.0)),
                     source_val_accuracy,
                     (measured.get("target_test") or {}).get("accuracy"))


def source_only(cfg: Config) -> Config:
    """``cfg`` with adaptation method auto replaced by none (source-only training, the target
    still measured): what compare's strategy rows and advise's strategy trials train."""
    return with_adaptation(cfg, "none", 0.0) if cfg.adaptation.method == "auto" else cfg


def _trial(cfg: Config, fit: Fit, where: Path | None) -> dict[str, Any]:
    """A trial's summary: trained in a temporary folder, or in ``where`` (kept; a finished
    trial of the same config there is read back, an interrupted one resumed)."""
    if where is None:
        with tempfile.TemporaryDirectory(prefix="tlkit-adapt-") as tmp:
            return fit(cfg, Path(tmp) / "trial", test_limit=64)
    summary = where / "summary.json"
    if summary.is_file():
        saved = (where / "config.yaml").read_text() if (where / "config.yaml").is_file() \
            else None
        if saved != dump_config(cfg):
            raise UserError(f"{where} holds a run of another config than this trial's; remove "
                            "that folder, or choose another --out")
        return read_summary(where)
    return fit(cfg, where, resume=(where / "checkpoints" / "last.pt").is_file(), test_limit=64)


def run_trials(cfg: Config, fit: Fit, event: Event, where: Path | None = None
               ) -> dict[str, Any]:
    """Every candidate trained and scored; returns the record (trials, pick, why). ``where``:
    a folder to keep each trial's run directory in (compare's), else temporary ones."""
    trials: list[Candidate] = []
    seconds: dict[str, float] = {}
    n_val: int | None = None
    for name, method, weight in candidates(cfg):
        if method == "adabn":
            continue  # measured by source-only's trial, below
        event("stage", {"what": f"adaptation auto: training the candidate {name}"})
        s = _trial(_trial_config(cfg, method, weight), fit,
                   None if where is None else where / name.replace(" ", "-"))
        for c in _candidates_of(s, (name, method, weight)):  # source-only's: AdaBN's too
            trials.append(c)
            seconds[c.name] = 0.0 if c.method == "adabn" else round(
                float(s["total_seconds"]), 1)  # the trial's own fit
        if method == "none":
            n_val = s["data"]["sizes"]["val"]
    pick, why = choose(trials, n_val)
    best = oracle(trials)
    record: dict[str, Any] = {
        "method": pick.method, "weight": pick.weight, "chosen": pick.name, "why": why,
        "strategy": cfg.transfer_config.freeze_strategy,
        "trials": [{**t.row(), "seconds": seconds[t.name]} for t in trials]}
    if best is not None:  # target labels: how the label-free pick did, never used to pick
        record["oracle"] = {"chosen": best.name, "target_accuracy": best.target_accuracy}
    return record


def order(names: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """The aligning candidates in the order the budget keeps them: the larger weight first,
    then DANN, MMD, CORAL (the module's docstring)."""
    return sorted(names, key=lambda c: (-c[2], ALIGNING.index(c[1])))


def shortened(cfg: Config, divisor: int) -> Config:
    """``cfg`` on a schedule ``divisor`` times shorter: its epochs, ``min_steps`` and warmup
    steps divided (at least one epoch), run out without early stopping."""
    tc = cfg.transfer_config
    return derive(cfg, f"adaptation auto (a 1/{divisor} trial)", transfer_config={
        "epochs": max(1, round(tc.epochs / divisor)),
        "min_steps": math.ceil(tc.min_steps / divisor),
        "warmup_steps": tc.warmup_steps // divisor, "early_stopping_patience": None})


def _steps(cfg: Config, n_train: int) -> int:
    return length_of(n_train, cfg.transfer_config.loop_settings).total_steps


class _Costs:
    """Seconds per trial and per full training, from what the trials measured: a run's fixed
    work and the seconds of a source-only and of an aligning step."""

    def __init__(self, summary: dict[str, Any], steps: int) -> None:
        train = float(summary["train_seconds"])
        self.fixed = max(0.0, float(summary["total_seconds"]) - train)
        self.source_step = train / max(1, steps)
        self.aligned: list[float] = []  # each aligning trial's seconds per step

    def per_step(self, method: str) -> float:
        if method == "none":
            return self.source_step
        if self.aligned:
            return sum(self.aligned) / len(self.aligned)
        return ALIGN_COST * self.source_step

    def seconds(self, method: str, steps: int) -> float:
        return self.fixed + steps * self.per_step(method)

    def measured(self, method: str, summary: dict[str, Any], steps: int) -> None:
        if method != "none":
            self.aligned.append(float(summary["train_seconds"]) / max(1, steps))


SOURCE_ONLY = ("none", "none", 0.0)


def run_budgeted(cfg: Config, fit: Fit, event: Event) -> dict[str, Any]:
    """Successive halving inside ``adaptation.auto_budget`` (the module's docstring); returns
    the record (trials with their rung, the budget, the pick and why)."""
    try:
        rungs = [(d, shortened(cfg, d)) for d in RUNGS]
    except UserError as e:  # a schedule that cannot be shortened
        event("stage", {"what": f"adaptation auto: the trials cannot be shortened ({e}); every "
                                "candidate trains its full schedule"})
        return run_trials(cfg, fit, event)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    aligning = order([c for c in candidates(cfg) if c[1] in ALIGNING])
    # rung 0 starts with source-only: its trial measures the costs, hence the budget
    s = _rung_trial(rows, 0, rungs[0], SOURCE_ONLY, fit, event, None)
    n_train, n_val = s["data"]["sizes"]["train"], s["data"]["sizes"]["val"]
    full_steps = _steps(cfg, n_train)
    costs = _Costs(s, _steps(rungs[0][1], n_train))
    source_only_s = costs.seconds("none", full_steps)
    # a fit of a few seconds (small data) counts as FLOOR_SECONDS, as freeze_strategy auto's:
    # a run's fixed work would otherwise leave no room for a single aligning trial
    budget = float(cfg.adaptation.auto_budget or 0.0) * max(source_only_s, FLOOR_SECONDS)
    floor = f", counted as {FLOOR_SECONDS:g} s" if source_only_s < FLOOR_SECONDS else ""
    event("stage", {"what": f"adaptation auto: a source-only fit takes about {source_only_s:.1f} "
                            f"s{floor}; the trials and the pick's training get {budget:.1f} s "
                            f"(auto_budget {cfg.adaptation.auto_budget:g})"})

    def need(rung: int, names: list[tuple[str, str, float]], source: bool) -> float:
        """Seconds of ``names``' trials at ``rung`` (and source-only's), then the costliest
        full training among them and source-only."""
        steps = _steps(rungs[rung][1], n_train)
        return (sum(costs.seconds(m, steps) for _, m, _ in names)
                + (costs.seconds("none", steps) if source else 0.0)
                + max(costs.seconds(m, full_steps) for _, m, _ in [SOURCE_ONLY, *names]))

    last_rung, trials = 0, _candidates_of(s, SOURCE_ONLY)
    for rung in range(len(rungs)):
        if rung > 0:
            steps = _steps(rungs[rung][1], n_train)
            if steps <= _steps(rungs[last_rung][1], n_train):
                continue  # whole epochs and passes: no longer than the last rung's trials
            if (not aligning or steps >= full_steps
                    or time.perf_counter() - t0 + need(rung, aligning, True) > budget):
                break  # nothing left to tell apart, a trial as long as the training, or the
                # budget spent: the pick is among the last rung's trials
            s = _rung_trial(rows, rung, rungs[rung], SOURCE_ONLY, fit, event, costs)
            trials = _candidates_of(s, SOURCE_ONLY)
        for c in list(aligning):
            while rung == 0 and c in aligning and time.perf_counter() - t0 + need(
                    0, aligning[aligning.index(c):], False) > budget:
                drop = aligning.pop()  # the last in the order go first
                left = max(0.0, budget - (time.perf_counter() - t0))
                rows.append({"name": drop[0], "method": drop[1], "weight": drop[2], "rung": 0,
                             "note": f"skipped: its trial and the training after it do not "
                                     f"fit the budget ({budget:.0f} s, {left:.0f} s left; "
                                     "raise adaptation.auto_budget to try it)"})
            if c not in aligning:
                continue
            s = _rung_trial(rows, rung, rungs[rung], c, fit, event, costs)
            trials += _candidates_of(s, c)
        last_rung = rung
        ranked_now, _ = ranked(trials, source_margin(trials[0].source_val_accuracy, n_val))
        better = [t.name for t in ranked_now if t.method in ALIGNING]
        better = better[:math.ceil(len(better) / 2)]
        aligning = [c for c in aligning if c[0] in better]
    pick, why = choose(trials, n_val)
    record: dict[str, Any] = {
        "method": pick.method, "weight": pick.weight, "chosen": pick.name,
        "why": f"{why}; among rung {last_rung}'s trials (1/{rungs[last_rung][0]} of the "
               "schedule; successive halving inside adaptation.auto_budget)",
        "strategy": cfg.transfer_config.freeze_strategy,
        "budget_seconds": round(budget, 1), "source_only_seconds": round(source_only_s, 1),
        "trial_seconds": round(time.perf_counter() - t0, 1), "trials": rows}
    best = oracle(trials)
    if best is not None:  # target labels: how the label-free pick did, never used to pick
        record["oracle"] = {"chosen": best.name, "target_accuracy": best.target_accuracy,
                            "rung": last_rung}
    return record


def _rung_trial(rows: list[dict[str, Any]], rung: int, schedule: tuple[int, Config],
                cand: tuple[str, str, float], fit: Fit, event: Event, costs: "_Costs | None"
                ) -> dict[str, Any]:
    """One candidate's trial at ``rung``; its rows (source-only's also AdaBN's) appended."""
    name, method, weight = cand
    divisor, short = schedule
    event("stage", {"what": f"adaptation auto: rung {rung}, training {name} on 1/{divisor} of "
                            "the schedule"})
    s = _trial(_trial_config(short, method, weight), fit, None)
    steps = _steps(short, s["data"]["sizes"]["train"])
    if costs is not None:
        costs.measured(method, s, steps)
    for c in _candidates_of(s, cand):
        rows.append({**c.row(), "rung": rung, "steps": steps,
                     "seconds": 0.0 if c.method == "adabn"
                     else round(float(s["total_seconds"]), 1)})
    return s


def _candidates_of(s: dict[str, Any], cand: tuple[str, str, float]) -> list[Candidate]:
    """The candidate a trial's summary scores; source-only's also AdaBN, where measured."""
    name, method, weight = cand
    a, acc = s.get("adaptation") or {}, float(s["val"]["accuracy"])
    out = [_candidate(name, method, weight, a, acc)]
    if method == "none" and "adabn" in a:  # the backbone has BatchNorm layers
        out.append(_candidate("adabn", "adabn", 0.0, a["adabn"], acc))
    return out


def choose_adaptation(cfg: Config, fit: Fit, event: Event) -> dict[str, Any]:
    """The record of ``adaptation.method: auto``'s choice: inside ``auto_budget``, or every
    candidate's full schedule where it is null."""
    if cfg.adaptation.auto_budget is None:
        return run_trials(cfg, fit, event)
    return run_budgeted(cfg, fit, event)


def format_record(record: dict[str, Any]) -> str:
    on = f" on freeze_strategy {record['strategy']}" if "strategy" in record else ""
    lines = [f"adaptation auto chose {record['chosen']}{on}: {record['why']}"]
    if "budget_seconds" in record:
        lines.append(f"  budget {record['budget_seconds']:.0f} s (a source-only fit about "
                     f"{record['source_only_seconds']:.0f} s); the trials took "
                     f"{record['trial_seconds']:.0f} s")
    rungs = any("rung" in t for t in record["trials"])
    lines.append(f"  {'candidate':<18} {'rung' if rungs else '':>4} {'steps' if rungs else '':>5}"
                 f" {'target IM':>9} {'source val acc':>14} {'target acc':>10} {'seconds':>8}")
    for t in record["trials"]:
        where = (f"{t['rung']:>4} {t.get('steps', '-'):>5}" if rungs else f"{'':>4} {'':>5}")
        if "target_im" not in t:  # skipped
            lines.append(f"  {t['name']:<18} {where} {t['note']}")
            continue
        acc = t["target_accuracy"]
        lines.append(f"  {t['name']:<18} {where} {t['target_im']:>9.4f} "
                     f"{t['source_val_accuracy']:>14.4f} "
                     f"{'-' if acc is None else f'{acc:.4f}':>10} {t['seconds']:>8.1f}")
    if "oracle" in record:
        lines.append(f"  with the target's labels (reported only) the best was "
                     f"{record['oracle']['chosen']}")
    return "\n".join(lines)


def _recorded(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
        if record["method"] not in ("none", "adabn", *ALIGNING):
            raise ValueError(f"method {record['method']!r} is not a candidate")
        float(record["weight"])
        return dict(record)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path} cannot be read as adaptation auto's record ({e}); it is "
                        "written by fit: restore it, or delete it to run the trials again on "
                        "--resume") from None


def resolve_adaptation(cfg: Config, run: RunDir, resume: bool, fit: Fit, event: Event
                       ) -> tuple[Config, dict[str, Any] | None]:
    """The config to train: ``cfg`` itself, or with method auto, the pick's (read from the run
    directory's record when resuming, so a resumed run trains the same pick)."""
    if cfg.adaptation.method != "auto":
        return cfg, None
    path = run.path / RECORD
    if resume and path.is_file():
        record = _recorded(path)
        event("stage", {"what": f"adaptation auto: resuming the pick {record['chosen']}"})
    else:
        record = choose_adaptation(cfg, fit, event)
        run.write_text(path, json.dumps(record, indent=1) + "\n")
    event("stage", {"what": format_record(record)})
    return with_adaptation(cfg, record["method"], float(record["weight"])), record
