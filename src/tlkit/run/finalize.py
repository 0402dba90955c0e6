"""Step 3 of a fit: after training, the steps that change the model (AdaBN), the validation and
test outputs, the diagnostics, the saved model and summary.json.

Each diagnostic registers itself here with ``@diagnostic(name)``: it is called with the prepared
run and the final outputs and returns its part of summary.json (or None when it does not apply).
A step that changes the trained model before it is measured registers with ``@after_training``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkit.adapt.adabn import adabn
from tlkit.data import num_outputs_of
from tlkit.data.types import DEFAULT_PAIR_COLUMN, is_pair
from tlkit.diagnose.calibration import calibration_report, fit_temperature, tune_thresholds
from tlkit.diagnose.forgetting import forgetting
from tlkit.metrics import probabilities, subgroup_metrics
from tlkit.run.prepare import Prepared
from tlkit.heads import head_inputs, normalizes
from tlkit.saved import save_model
from tlkit.train.evaluate import evaluate_cached, evaluate_split
from tlkit.train.head_solver import features, held_out_logits
from tlkit.train.loop import TrainState
from tlkit.token_rows import kept_rows
from tlkit.train.selection import selection_summary


@dataclass
class Outputs:
    """The final model's metrics, outputs and targets on validation and test."""

    val: dict[str, Any]
    val_outputs: np.ndarray
    val_targets: np.ndarray
    test: dict[str, Any] | None  # None without a test split (its outputs are then empty)
    test_outputs: np.ndarray
    test_targets: np.ndarray
    val_in_fit: bool = False  # the head was fitted on validation too: its metrics in-sample
    head_c: float | None = None  # that head's L2 strength
    head_standardized: bool = True  # and whether its features were standardised for the fit


Diagnostic = Callable[[Prepared, Outputs], Any]
DIAGNOSTICS: list[tuple[str, str | None, Diagnostic]] = []  # name, the summary key it goes in
AFTER_TRAINING: list[Callable[[Prepared], None]] = []


def after_training(fn: Callable[[Prepared], None]) -> Callable[[Prepared], None]:
    """Register a step that changes the trained model before it is measured (AdaBN)."""
    AFTER_TRAINING.append(fn)
    return fn


def diagnostic(name: str, into: str | None = None) -> Callable[[Diagnostic], Diagnostic]:
    """Register a diagnostic: its result goes in summary.json under ``name`` (inside the
    ``into`` section when given, e.g. the test metrics)."""
    def add(fn: Diagnostic) -> Diagnostic:
        DIAGNOSTICS.append((name, into, fn))
        return fn
    return add


@diagnostic("subgroups", into="test")
def _subgroups(p: Prepared, o: Outputs) -> Any:
    groups = None if p.splits.test is None else p.splits.test.groups
    return None if groups is None else subgroup_metrics(o.test_outputs, o.test_targets, groups,
                                                        p.data.task, p.splits.classes)


@diagnostic("calibration")
def _calibration(p: Prepared, o: Outputs) -> Any:
    if p.data.task not in ("single_label", "token_classification") \
            or not p.cfg.diagnostics.calibration or not len(o.val_targets) or o.test is None:
        return None
    if p.data.task == "token_classification":  # per token, over the words inside the input
        return calibration_report(*kept_rows(o.val_outputs, o.val_targets),
                                  *kept_rows(o.test_outputs, o.test_targets))
    val_outputs = o.val_outputs
    if o.val_in_fit:  # the temperature needs outputs on examples the head has not seen
        held = _held_out_val_outputs(p, o)
        if held is None:
            return None
        val_outputs = held
    return calibration_report(val_outputs, o.val_targets, o.test_outputs, o.test_targets)


@diagnostic("scoring")
def _scoring(p: Prepared, o: Outputs) -> Any:
    """What ``tlkit predict`` calibrates with (``tlkit.run.scoring``), fitted on validation:
    single-label, the temperature; multi-label, each class's threshold."""
    if not len(o.val_targets) or p.data.task in ("regression", "question_answering"):
        return None
    val_outputs = o.val_outputs
    if o.val_in_fit:  # fitted on outputs of examples the head has not seen
        held = _held_out_val_outputs(p, o)
        if held is None:
            return None
        val_outputs = held
    if p.data.task == "single_label":
        return {"temperature": fit_temperature(val_outputs, o.val_targets),
                "fitted_on": f"{len(o.val_targets)} validation examples"}
    if p.data.task == "token_classification":
        words, tags = kept_rows(val_outputs, o.val_targets)
        return {"temperature": fit_temperature(words, tags),
                "fitted_on": f"{len(tags)} validation words"}
    return {"thresholds": tune_thresholds(probabilities(val_outputs, "multi_label"),
                                          o.val_targets),
            "fitted_on": f"{len(o.val_targets)} validation examples"}


def _held_out_val_outputs(p: Prepared, o: Outputs) -> np.ndarray | None:
    """A refitted head's stand-in validation outputs: the head fitted at the same strength on
    the training split alone, on the cached features (None without them)."""
    n = len(p.asm.groups)
    if p.cache is None or o.head_c is None:
        return None
    train, val = p.cache.get("train", p.train.train, n), p.cache.get("val", p.train.val, n)
    if train is None or val is None:
        return None
    (x, y), (xv, _) = features(train), features(val)
    norm = normalizes(p.asm.model.head)
    x, xv = head_inputs(x, norm), head_inputs(xv, norm)
    return held_out_logits(p.data.task, x, y, xv, o.head_c, o.val_outputs.shape[1],
                           p.train.class_weights, balanced=p.train.sample_weights is not None,
                           standardized=o.head_standardized)


@diagnostic("adaptation")
def _adaptation(p: Prepared, o: Outputs) -> Any:
    if p.target is None:
        return None
    return p.target.report(p.asm.model, p.train.train, p.train.collate, p.dist.device,
                           p.data.task, p.splits.classes, p.cfg.transfer_config)


@diagnostic("target_test")
def _target_test(p: Prepared, o: Outputs) -> Any:
    """The model on adaptation.target.test, measured as the source's test split is."""
    if p.target is None or p.target.test is None:
        return None
    p.event("stage", {"what": f"evaluating on the target domain test set "
                              f"(adaptation.target.test, {len(p.target.test):,} examples)"})
    return p.target.test_metrics(p.asm.model, p.train.collate, p.dist.device, p.data.task,
                                 p.splits.classes, p.cfg.transfer_config,
                                 p.cfg.diagnostics.bootstrap)


@diagnostic("forgetting")
def _forgetting(p: Prepared, o: Outputs) -> Any:
    if p.pretrained is None:
        return None
    p.event("stage", {"what": "measuring forgetting (CKA of each group against the "
                              "pretrained backbone)"})
    tc, d = p.cfg.transfer_config, p.cfg.diagnostics
    return forgetting(p.pretrained, p.asm.model.backbone, p.asm.groups, p.train.val,
                      p.train.collate, p.dist.device, d.sample, tc.mixed_precision,
                      source_task=d.source_task, source_model=tc.source_model)


@diagnostic("distillation")
def _distillation(p: Prepared, o: Outputs) -> Any:
    """A student (the config's distill section): its teacher, and the two compared on the
    same test split (the teacher's outputs through its own preprocessing)."""
    from tlkit.distillation.objective import Distillation
    from tlkit.distillation.teacher import compare, teacher_outputs

    hook = next((h for h in p.hooks if isinstance(h, Distillation)), None)
    if hook is None:
        return None
    d = p.cfg.distill
    assert d is not None
    out: dict[str, Any] = {
        "teacher": hook.source, "student": hook.student_said,
        "temperature": d.temperature, "alpha": d.alpha,
        "trained_on": {"labelled": hook.n_train, "unlabelled": hook.unlabelled_count},
    }
    if o.test is not None and p.splits.test is not None and len(o.test_targets):
        p.event("stage", {"what": "distillation: the teacher on the same test split"})
        tc = p.cfg.transfer_config
        teacher = teacher_outputs(hook.saved, p.splits.test, tc.batch_size, p.dist.device,
                                  tc.mixed_precision)
        out["test"] = compare(o.test_outputs, teacher, o.test_targets, p.data.task,
                              p.cfg.diagnostics.bootstrap, p.cfg.data.seed)
    return out


@after_training
def _adabn(p: Prepared) -> None:
    """AdaBN: every BatchNorm's statistics re-estimated on the target."""
    tc = p.cfg.transfer_config
    if p.target is not None and p.cfg.adaptation.method == "adabn":
        n_bn = adabn(p.asm.model.backbone, p.target.train, p.train.collate, p.dist.device,
                     max(tc.batch_size, 64))
        p.event("stage", {"what": f"AdaBN: re-estimated {n_bn} BatchNorm layers' statistics "
                                  f"on {len(p.target.train):,} target examples"})


def outputs(p: Prepared) -> Outputs:
    tc, model, dist = p.cfg.transfer_config, p.asm.model, p.dist
    task, classes, device = p.data.task, p.splits.classes, dist.device
    n_groups = len(p.asm.groups)
    last = p.asm.plan.phases[-1]
    frozen_to_the_end = (not any(r.trainable for r in last.rows[:n_groups])
                         and p.cfg.adaptation.method != "adabn")
    val_cached = (p.cache.get("val", p.train.val, n_groups)
                  if p.cache is not None and frozen_to_the_end else None)
    if val_cached is not None:  # the backbone never changed: its cached features hold
        val = evaluate_cached(model, val_cached, task, tc.batch_size, device, classes,
                              tc.mixed_precision, return_outputs=True, dist=dist)
    else:
        val = evaluate_split(model, p.train.val, p.train.collate, task, tc.batch_size, device,
                             classes, tc.mixed_precision, return_outputs=True, dist=dist)
    if p.test_ds is None:
        return Outputs(val[0], val[1], val[2], None, val[1][:0], val[2][:0])
    test = evaluate_split(model, p.test_ds, p.train.collate, task, tc.batch_size, device,
                          classes, tc.mixed_precision, return_outputs=True, dist=dist)
    return Outputs(val[0], val[1], val[2], test[0], test[1], test[2])


def _question_scores(p: Prepared, o: Outputs) -> dict[str, np.ndarray]:
    """Question answering: each test question's exact match and F1 (0..1), which the scratch
    baseline's paired verdict resamples (its windows' outputs alone do not say them)."""
    if p.data.task != "question_answering" or p.test_ds is None or o.test is None:
        return {}
    em, f1 = p.test_ds.per_question(o.test_outputs)
    return {"test_question_em": em, "test_question_f1": f1}


def finalize(p: Prepared, state: TrainState, auto: dict[str, Any] | None = None,
             adaptation_auto: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rank 0 returns the summary it writes; other processes their validation and test
    metrics. ``auto`` and ``adaptation_auto``: the trials behind freeze_strategy auto's and
    adaptation method auto's picks."""
    for step in AFTER_TRAINING:
        step(p)
    p.event("stage", {"what": _evaluating(p)})
    o = outputs(p)
    solved = [r["head_solver"] for r in state.history if r.get("head_solver", {}).get(
        "val_in_fit")]
    o.val_in_fit, o.head_c = bool(solved), solved[-1]["c"] if solved else None
    o.head_standardized = bool(solved[-1].get("standardized", True)) if solved else True
    if not p.dist.is_main:  # rank 0 measures the rest and writes the run directory
        return {"val": o.val, "test": o.test}
    diagnostics: dict[str, Any] = {}
    for name, into, fn in DIAGNOSTICS:
        result = fn(p, o)
        if result is not None:
            section = getattr(o, into) if into else diagnostics
            section[name] = result
    if adaptation_auto is not None and "adaptation" in diagnostics:
        diagnostics["adaptation"]["auto"] = adaptation_auto
    p.run.write_predictions(o.val_outputs, o.val_targets, o.test_outputs, o.test_targets,
                            **_question_scores(p, o))
    tc = p.cfg.transfer_config
    head = {"type": tc.head.type, "hidden_size": tc.head.hidden_size, "dropout": tc.dropout,
            "num_outputs": num_outputs_of(p.splits.train),
            **({"normalize": True} if normalizes(p.asm.model.head) else {})}
    p.asm.model.cpu()
    # sentence pairs (a table's two columns, or a packaged pair set): predict reads both
    pairs = len(p.splits.train) > 0 and is_pair(p.splits.train.inputs[0])
    save_model(p.run.model, p.asm.model, p.prep, head, p.data.task, p.splits.classes,
               {"source_model": tc.source_model,
                # question answering: how predict cuts a long context into windows
                **({"qa": {"doc_stride": p.cfg.data.doc_stride}}
                   if p.cfg.data.doc_stride is not None else {}),
                **({"pairs": {"text_column": p.cfg.data.text_column,
                              "text_pair_column": p.cfg.data.text_pair_column
                              or DEFAULT_PAIR_COLUMN}} if pairs else {})})
    summary = {
        "source_model": tc.source_model,
        "strategy": tc.freeze_strategy,
        **({"auto": auto} if auto is not None else {}),
        "task": p.data.task,
        "data": _data(p),
        "skipped_images": p.splits.skipped,
        "best_epoch": state.best_epoch,
        "model_selection": selection_summary(tc.model_selection, p.data.task, len(p.train.val),
                                             len(p.splits.classes or ()) or None),
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "train_seconds": round(state.seconds, 2),
        **({"processes": p.dist.world} if p.dist.enabled else {}),
        "total_seconds": round(time.perf_counter() - p.t_start, 2),
        **({"test_limit": p.test_limit} if p.test_limit is not None else {}),
        "parameters": p.asm.plan.total_params,
        "trainable_parameters_last_phase": p.asm.plan.phases[-1].trainable_params,
        "val": o.val,
        # all_frozen's solved head saw the validation split (head_refit): in-sample metrics
        **({"val_in_fit": True} if o.val_in_fit else {}),
        "test": o.test,
        **domains(p),
        "preprocessing_findings": [f.__dict__ for f in p.findings],
        **diagnostics,
    }
    p.run.write_json(p.run.summary, summary)
    return summary


def _evaluating(p: Prepared) -> str:
    """The log's line before the test split is measured, naming its domain where a run has
    two."""
    if not domains(p):
        return "evaluating on the test split"
    if not p.adapted:
        return "evaluating on the source domain test split"
    there = ("the target domain test set follows" if p.target is not None and p.target.test
             is not None else "give adaptation.target.test, labelled target data, to measure "
             "it there")
    return ("evaluating on the source domain test split (the adapted model is meant for the "
            f"target domain; {there})")


def domains(p: Prepared) -> dict[str, str]:
    """Which domain the test split measures where a run has two (adapted, or given a target
    test set): ``test_domain`` source; in an adapted run, ``model_domain`` target (the model is
    meant for the target domain). Nothing for other runs."""
    if p.target is None or not (p.adapted or p.target.test is not None):
        return {}
    return {"test_domain": "source", **({"model_domain": "target"} if p.adapted else {})}


def _data(p: Prepared) -> dict[str, Any]:
    """summary.json's data section, with where the target's test set came from."""
    data = p.splits.summary()
    target = p.cfg.adaptation.target
    if p.target is not None and p.target.test is not None and target is not None:
        data["origins"] = {**data["origins"], "target_test": target.test}
    return data
