"""The baselines beside a finished run, each with its verdict: from scratch, and classical.

The same architecture from random initialisation, trained under the same budget (data, splits,
epochs, batch size; every layer at ``diagnostics.scratch_lr``), once per seed in
``diagnostics.baseline_seeds``, each an ordinary run directory under ``RUN_DIR/baseline/``. The
verdict compares the transferred model's test predictions with the baselines': positive
transfer, no measurable effect, or negative transfer, with the margin and its 95% interval (a
paired bootstrap over the test examples, and across seeds where there are several).

The classical baseline (``tlkit.diagnose.classical``: TF-IDF or raw pixels and a linear model)
trains on the same splits in seconds; its verdict says whether transfer beats what a user would
otherwise do, with both runs' seconds. ``diagnostics.baselines`` says which of the two
``--baseline`` trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.config import Config, derive
from tlkit.data import has_test_split
from tlkit.diagnose.verdict import classical_verdict, per_example_scores, transfer_verdict
from tlkit.errors import UserError
from tlkit.predictions import question_scores, test_predictions
from tlkit.run.fit import fit_run
from tlkit.rundir import RunDir
from tlkit.select.classical import fit_on_splits
from tlkit.select.variants import SCRATCH, check_comparable, variant
from tlkit.summary_json import read_summary


def baseline(cfg: Config, run_dir: Path, event: Any = lambda k, i: None,
             test_limit: int | None = None) -> dict[str, Any]:
    """Train the scratch baselines beside the finished run in ``run_dir`` (a finished baseline
    is kept: an interrupted --baseline picks up where it stopped) and return the verdict."""
    check_comparable(cfg, "--baseline", tokens=True)
    outputs, targets = test_predictions(run_dir)
    task = cfg.data.task
    answers = task == "question_answering"  # scored per question, by F1 (0..1)
    transfer_ok = (question_scores(run_dir)[1] if answers
                   else per_example_scores(outputs, targets, task) > 0.5)  # right or not
    scratch_ok, accs = [], []
    scratch = variant(cfg, SCRATCH)
    for k in range(cfg.diagnostics.baseline_seeds):
        seeded = derive(scratch, f"baseline seed {k}",
                        transfer_config={"seed": cfg.transfer_config.seed + k})
        sub = Path(run_dir) / "baseline" / f"seed-{k}"
        if not (sub / "summary.json").is_file():
            event("stage", {"what": f"baseline: from scratch, seed {k + 1} of "
                                    f"{cfg.diagnostics.baseline_seeds} ({sub})"})
            fit_run(seeded, sub,
                    resume=(sub / "checkpoints" / "last.pt").is_file(), event=event,
                    test_limit=test_limit)
        o, t = test_predictions(sub)
        if len(t) != len(targets) or not np.array_equal(t, targets):
            raise UserError(f"the baseline in {sub} was tested on other examples than the run; "
                            "delete that folder and run --baseline again")
        scratch_ok.append(question_scores(sub)[1] if answers
                          else per_example_scores(o, t, task) > 0.5)
        accs.append(float(scratch_ok[-1].mean()))
    v = transfer_verdict(transfer_ok, scratch_ok, resamples=cfg.diagnostics.bootstrap,
                         seed=cfg.transfer_config.seed,
                         unit={"token_classification": "words",
                               "question_answering": "questions"}.get(task, "examples"))
    out = {**v, "transfer_accuracy": float(transfer_ok.mean()),
           "scratch_accuracies": accs, "scratch_lr": scratch.transfer_config.backbone_lr}
    if task == "token_classification":  # the accuracies are token accuracies; entity F1 too
        out["measure"] = "token accuracy"
        out["transfer_entity_f1"] = _test_metric(Path(run_dir), "entity_f1")
        out["scratch_entity_f1"] = [
            _test_metric(Path(run_dir) / "baseline" / f"seed-{k}", "entity_f1")
            for k in range(cfg.diagnostics.baseline_seeds)]
    if answers:  # the margin is in points of SQuAD F1; exact match beside it
        out["measure"] = "F1 (SQuAD, 0 to 1)"
        out["transfer_exact_match"] = _test_metric(Path(run_dir), "exact_match")
        out["scratch_exact_match"] = [
            _test_metric(Path(run_dir) / "baseline" / f"seed-{k}", "exact_match")
            for k in range(cfg.diagnostics.baseline_seeds)]
    return out


def _test_metric(run_dir: Path, key: str) -> float | None:
    """A finished run's test metric, from its summary.json."""
    value = (read_summary(run_dir).get("test") or {}).get(key)
    return None if value is None else float(value)


def classical(cfg: Config, run_dir: Path, event: Any = lambda k, i: None,
              test_limit: int | None = None) -> dict[str, Any]:
    """The classical baseline on the finished run's splits, with its verdict against the run's
    test predictions and both seconds."""
    if not has_test_split(cfg.data):
        raise UserError("the classical baseline's verdict compares test predictions, but the run "
                        "has no test split (data.test_fraction is 0 and no data.test); give one")
    outputs, targets = test_predictions(run_dir)
    result, splits = fit_on_splits(cfg, test_limit, event)
    if len(splits.test) != len(targets) or not np.array_equal(splits.test.targets, targets):
        raise UserError(f"the data of {run_dir} is not what its run was tested on (the source "
                        "changed since); run fit again")
    assert result.test_outputs is not None
    v = classical_verdict(outputs, result.test_outputs, targets, cfg.data.task, result.name,
                          resamples=cfg.diagnostics.bootstrap, seed=cfg.transfer_config.seed)
    summary = json.loads(RunDir(Path(run_dir)).summary.read_text())
    return {**v, **result.record(cfg.data.task, splits.val, splits.test, splits.classes),
            "transfer_seconds": summary.get("total_seconds")}


def baselines(cfg: Config, run_dir: Path, event: Any = lambda k, i: None,
              test_limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Every baseline ``cfg`` asks for (``Config.baselines``), by its summary.json key:
    ``baseline`` (from scratch), ``classical_baseline``."""
    out: dict[str, dict[str, Any]] = {}
    chosen = cfg.baselines()
    if "classical" in chosen:  # seconds, where scratch takes a training run: first
        out["classical_baseline"] = classical(cfg, run_dir, event, test_limit)
    if SCRATCH in chosen:
        out["baseline"] = baseline(cfg, run_dir, event, test_limit)
    return out


def add_to_summary(run_dir: Path, verdicts: dict[str, dict[str, Any]]) -> None:
    rd = RunDir(Path(run_dir))
    summary = json.loads(rd.summary.read_text())
    summary.update(verdicts)
    rd.write_json(rd.summary, summary)
