"""``adaptation.method: auto``: each adaptation trained, the label-free score's pick kept.

The candidates: source-only training (``none``), AdaBN where the backbone has BatchNorm layers,
and DANN, MMD and CORAL at each of ``adaptation.auto_weights`` where the strategy trains backbone
layers. Each is a whole run of the config (its own temporary run directory, the test split cut to
64 examples and calibration and the source-task check left out, as they do not bear on the
choice), scored by ``tlkit.adapt.label_free`` from its predictions on the unlabelled target and
its source validation accuracy. AdaBN trains nothing of its own: it is source-only's model with
its BatchNorm statistics re-estimated on the target, which source-only's trial measures on a copy
(its source accuracy is source-only's, the source keeping the source's statistics). The run then
trains the pick as any run (seeded, so the same model the trial had) and records every trial.
Target labels, where the target has some, are only reported beside each trial.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlkit import strategies
from tlkit.adapt.label_free import Candidate, choose, oracle
from tlkit.config import Config, dump_config
from tlkit.errors import UserError
from tlkit.events import Event
from tlkit.rundir import RunDir
from tlkit.summary_json import read_summary

Fit = Callable[..., dict[str, Any]]
ALIGNING = ("dann", "mmd", "coral")
RECORD = "adaptation_auto.json"


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
    source-task check)."""
    c = with_adaptation(cfg, method, weight)
    d = c.diagnostics.model_copy(update={"calibration": False, "source_task": None})
    return c.model_copy(update={"diagnostics": d})


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
        seconds[name] = round(float(s["total_seconds"]), 1)  # the trial's own fit
        a = s.get("adaptation") or {}
        trials.append(_candidate(name, method, weight, a, float(s["val"]["accuracy"])))
        if method == "none":
            n_val = s["data"]["sizes"]["val"]
            if "adabn" in a:  # the backbone has BatchNorm layers
                trials.append(_candidate("adabn", "adabn", 0.0, a["adabn"],
                                         float(s["val"]["accuracy"])))
                seconds["adabn"] = 0.0
    pick, why = choose(trials, n_val)
    best = oracle(trials)
    record: dict[str, Any] = {
        "method": pick.method, "weight": pick.weight, "chosen": pick.name, "why": why,
        "strategy": cfg.transfer_config.freeze_strategy,
        "trials": [{**t.row(), "seconds": seconds[t.name]} for t in trials]}
    if best is not None:  # target labels: how the label-free pick did, never used to pick
        record["oracle"] = {"chosen": best.name, "target_accuracy": best.target_accuracy}
    return record


def format_record(record: dict[str, Any]) -> str:
    on = f" on freeze_strategy {record['strategy']}" if "strategy" in record else ""
    lines = [f"adaptation auto chose {record['chosen']}{on}: {record['why']}",
             f"  {'candidate':<18} {'target IM':>9} {'source val acc':>14} "
             f"{'target acc':>10} {'seconds':>8}"]
    for t in record["trials"]:
        acc = t["target_accuracy"]
        lines.append(f"  {t['name']:<18} {t['target_im']:>9.4f} "
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
        record = run_trials(cfg, fit, event)
        run.write_text(path, json.dumps(record, indent=1) + "\n")
    event("stage", {"what": format_record(record)})
    return with_adaptation(cfg, record["method"], float(record["weight"])), record
