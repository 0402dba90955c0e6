"""What a config may not say beyond each key's type and range: values a key cannot hold (an
unknown backbone or strategy, a bad selector or regular expression, unreadable class weights)
and combinations of keys that cannot work together (a key its strategy ignores, a sampler the
task cannot use, an adaptation the strategy cannot train, ...).

Plain functions, called by the validators of the models in ``tlkit.config.schema`` (which stay
on the model classes, so that pydantic reports each error at its section's place and in the
same order). A rule takes the values it relates, not the models (they import this module), and
raises ValueError with the message the user sees, naming the fix.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

from tlkit import strategies

AUTO = "auto"  # freeze_strategy: chosen by measurement at fit time (tlkit.select.auto)

# A class weight above this overflows the loss of a few thousand examples in float32.
MAX_CLASS_WEIGHT = 1e6


# --------------------------------------------------------------------------------------------------
# One key's value
# --------------------------------------------------------------------------------------------------


def regular_expression(v: str) -> str:
    """A ``layer_groups`` pattern."""
    try:
        re.compile(v)
    except (re.error, OverflowError, RecursionError) as e:
        raise ValueError(f"not a valid regular expression: {e}") from None
    return v


def class_names(v: Any) -> Any:
    """``class_weights`` as YAML read it, its class names made text."""
    # YAML reads `{0: 20}` with the number 0, where the class is the label text "0", and
    # `{yes: 2}` with True: numbers name their text; a boolean or null name is ambiguous.
    if not isinstance(v, dict):
        return v
    out = {}
    for k, w in v.items():
        if isinstance(k, bool) or k is None:
            raise ValueError(f"the class name {k!r} was read by YAML as "
                             f"{'a boolean' if k is not None else 'null'}; quote it, e.g. "
                             "{'yes': 2.0}")
        if isinstance(w, float) and not math.isfinite(w):
            raise ValueError(f"the weight of class {str(k)!r} is {w}; give a finite number "
                             "of 0 or more")
        out[str(k) if isinstance(k, (int, float)) else k] = w
    return out


def class_weights(v: Any) -> Any:
    """``class_weights`` once typed: weights of 0 or more, not too large, not all 0."""
    if isinstance(v, dict) and any(not (w >= 0) for w in v.values()):
        raise ValueError("class weights must be numbers of 0 or more, e.g. {rare: 5.0}")
    if isinstance(v, dict) and any(w > MAX_CLASS_WEIGHT for w in v.values()):
        raise ValueError(f"class weights are at most {MAX_CLASS_WEIGHT:g} (a larger one "
                         "overflows the loss); weights are relative: scale them all down")
    if isinstance(v, dict) and v and not any(v.values()):
        # every named class 0: the solver fails, SGD's loss is 0 / 0
        raise ValueError(
            "every class weight given is 0: a class of weight 0 does not count in the loss, "
            "so these would leave only the classes not named (weight 1), or none; give the "
            "classes that should count a positive weight, e.g. {rare: 5.0, common: 1.0}")
    return v


def known_backbone(v: str) -> str:
    """``source_model``: a registry name, checked before anything loads."""
    # Prefixed names (timm:, hf:, torchvision:) are checked by the backbone registry, which
    # imports those libraries.
    if ":" not in v:
        # local: the registry imports torch, and a config is checked before anything heavy
        from tlkit.backbones.registry import KNOWN

        if v not in KNOWN:
            close = difflib.get_close_matches(v, list(KNOWN), n=1, cutoff=0.4)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown backbone {v!r}: {hint}known names: {', '.join(KNOWN)}; or use "
                "timm:NAME, hf:PATH_OR_ID, torchvision:NAME"
            )
    return v


def registered_strategy(v: str) -> str:
    """``freeze_strategy``: a name in tlkit.strategies' registry, or auto (reported as a
    Literal's error would be: the valid names listed)."""
    known = [*strategies.names(), AUTO]
    if v not in known:
        expected = ", ".join(repr(k) for k in known[:-1]) + f" or {known[-1]!r}"
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": expected})
    return v


# --------------------------------------------------------------------------------------------------
# Keys of one section together
# --------------------------------------------------------------------------------------------------


def cache_cap_used(enabled: bool, changed: Collection[str]) -> None:
    """``changed``: the cache section's keys that differ from their defaults."""
    if not enabled and "max_mb" in changed:
        raise ValueError("cache.max_mb caps the activation cache, which cache.enabled: "
                         "false turns off; remove max_mb, or set enabled: true")


def strategy_fits(freeze_strategy: str, changed: Collection[str], settings: Any) -> None:
    """auto_budget only under auto; the strategy's own check of ``settings`` (the
    transfer_config); a strategy's own keys (``changed``: the transfer_config keys that differ
    from their defaults) only under that strategy. Under auto every candidate's keys may be
    given."""
    if freeze_strategy != AUTO and "auto_budget" in changed:
        raise ValueError(f"auto_budget is only used by freeze_strategy auto, not "
                         f"{freeze_strategy!r}; remove it or set freeze_strategy: auto")
    if freeze_strategy == AUTO:
        return
    strategies.get(freeze_strategy).check(settings)
    for owner, key in strategies.owned_keys():
        if owner != freeze_strategy and key in changed:
            section = isinstance(getattr(settings, key), BaseModel)  # lora: {r: 16, ...}
            raise ValueError(
                f"{'the ' + key + ' section' if section else key} is only used by "
                f"freeze_strategy {owner}, not {freeze_strategy!r}; remove it or set "
                f"freeze_strategy: {owner}")


def l2sp_fits(l2sp_lambda: float, pretrained_weights: str) -> None:
    if l2sp_lambda > 0 and pretrained_weights == "none":
        raise ValueError(
            "l2sp_lambda pulls the backbone toward its pretrained weights, but "
            "pretrained_weights is none (a random start); set l2sp_lambda: 0 or give "
            "pretrained weights"
        )


def fractions_leave_training(val_fraction: float, test_fraction: float,
                             validation: str | None, test: str | None) -> None:
    # a given validation or test set takes the place of its fraction's cut
    val = 0.0 if validation is not None else val_fraction
    test_share = 0.0 if test is not None else test_fraction
    if val + test_share >= 0.9:
        raise ValueError("val_fraction + test_fraction must leave at least 10% for training")


def one_second_input(text_pair_column: str | None, image_column: str | None) -> None:
    if text_pair_column is not None and image_column is not None:
        raise ValueError("data.text_pair_column pairs two texts; it does not go with "
                         "data.image_column: remove one of them")


def separator_fits(label_separator: str, task: str) -> None:
    if label_separator != "|" and task != "multi_label":
        raise ValueError(f"data.label_separator splits a cell into several labels, which "
                         f"only data.task multi_label does; task {task} would ignore "
                         "it: remove it (or set task: multi_label)")


def target_given(method: str, has_target: bool, target_limit: int | None) -> None:
    if method != "none" and not has_target:
        raise ValueError(f"adaptation method {method} needs unlabelled target data: "
                         "add adaptation.target with a source, e.g. {source: my_images/}")
    if target_limit is not None and not has_target:
        raise ValueError("adaptation.target_limit samples the target data, but there is no "
                         "adaptation.target: remove target_limit, or add a target")


# --------------------------------------------------------------------------------------------------
# Sections together
# --------------------------------------------------------------------------------------------------


def sampler_fits(sampler: str, class_weights: Any, task: str) -> None:
    if sampler == "balanced" and task != "single_label":
        raise ValueError(
            f"sampler balanced draws each class equally often, which needs single-label "
            f"data; data.task is {task}: set sampler: shuffle")
    if class_weights != "none" and task in ("multi_label", "regression"):
        raise ValueError(
            f"transfer_config.class_weights weighs the classes of single-label (and token) "
            f"classification; data.task {task} would ignore it: remove it")


def baselines_fit(chosen: Sequence[str] | None, task: str) -> None:
    spans = task in ("token_classification", "question_answering")
    if chosen is not None and "classical" in chosen and spans:
        raise ValueError(
            f"diagnostics.baselines names classical, which classifies whole texts; "
            f"data.task is {task}: set baselines: [scratch]")
    if chosen is not None and "scratch" in chosen and task not in (
            "single_label", "token_classification", "question_answering"):
        raise ValueError(
            f"diagnostics.baselines names scratch, whose verdict compares test accuracy of "
            f"single-label runs; data.task is {task}: set baselines: [classical]")
    if chosen is not None and len(set(chosen)) != len(chosen):
        raise ValueError("diagnostics.baselines names a baseline twice; list each once")


def tokens_fit(task: str, freeze_strategy: str, has_target: bool) -> None:
    """What token classification does not do (yet): say so before anything loads."""
    if task != "token_classification":
        return
    if freeze_strategy == AUTO:
        raise ValueError("freeze_strategy auto is for sequence tasks; for "
                         "token_classification choose a strategy (none, top_n_unfrozen, "
                         "lora, all_frozen, ...), or compare them with tlkit compare")
    if has_target:
        raise ValueError("adaptation aligns whole-sequence features; it does not apply to "
                         "data.task token_classification: remove the adaptation section")


# question answering's defaults where the config leaves them out (Hugging Face's run_qa)
QA_DEFAULTS = {"max_length": 384, "doc_stride": 128}
# the strategies that train a question-answering model: a per-token head trained by SGD
QA_STRATEGIES = ("none", "top_n_unfrozen", "gradual", "lora", "all_frozen")


def stride_fits(doc_stride: int | None, max_length: int | None, task: str) -> None:
    if task != "question_answering":
        if doc_stride is not None:
            raise ValueError(f"data.doc_stride cuts long contexts into windows for data.task "
                             f"question_answering; task {task} would ignore it: remove it")
        return
    if doc_stride is not None and max_length is not None and doc_stride >= max_length // 2:
        raise ValueError(f"data.doc_stride {doc_stride} must be below half of data.max_length "
                         f"{max_length} (each window holds the question too, and consecutive "
                         "windows share doc_stride tokens): lower doc_stride, e.g. "
                         f"{max_length // 3}")


def answers_fit(task: str, freeze_strategy: str, head_solver: str, head_type: str,
                normalize: Any, pooling: str | None, has_target: bool, distilled: bool) -> None:
    """What question answering does not do (yet): say so before anything loads."""
    if task != "question_answering":
        return
    if freeze_strategy not in QA_STRATEGIES:
        raise ValueError(f"freeze_strategy {freeze_strategy} cannot train question answering "
                         "(a start and an end logit per token, trained by SGD); choose "
                         f"{', '.join(QA_STRATEGIES[:-1])} or {QA_STRATEGIES[-1]} (with "
                         "head_solver: sgd)")
    if freeze_strategy == "all_frozen" and head_solver != "sgd":
        raise ValueError("freeze_strategy all_frozen (the default) solves its head in closed "
                         "form on one vector per example (head_solver convex); question "
                         "answering scores every token: set freeze_strategy: none (full "
                         "fine-tuning, what question answering usually needs), or keep "
                         "all_frozen with head_solver: sgd")
    if head_type != "linear":
        raise ValueError(f"head.type {head_type}: question answering's head is linear, a "
                         "start and an end logit per token (as AutoModelForQuestionAnswering's "
                         "qa_outputs): set head.type: linear")
    if normalize is True:
        raise ValueError("head.normalize scales a pooled text vector; question answering's "
                         "head reads each token's state as it is: remove head.normalize")
    if pooling is not None:
        raise ValueError(f"transfer_config.pooling {pooling} pools a text into one vector; "
                         "question answering reads every token: remove pooling")
    if has_target:
        raise ValueError("adaptation aligns whole-sequence features; it does not apply to "
                         "data.task question_answering: remove the adaptation section")
    if distilled:
        raise ValueError("distill trains on a teacher's class outputs; it does not take "
                         "data.task question_answering yet: remove the distill section")


def target_test_fits(test: str | None, target_task: str, task: str) -> None:
    """adaptation.target.test is scored by the model, so its labels are read as the model's
    task reads them."""
    if test is not None and target_task != task:
        raise ValueError(f"adaptation.target.test is scored by the model of data.task {task}, "
                         f"but adaptation.target.task is {target_task} (the default is "
                         f"single_label): set adaptation.target.task: {task}")


def adaptation_trains(method: str, task: str, freeze_strategy: str) -> None:
    if method == "auto":
        if task != "single_label":
            raise ValueError(f"adaptation method auto picks by the target predictions of "
                             f"single-label classes; data.task is {task}: name a method (dann, "
                             "mmd, coral, adabn)")
        if freeze_strategy == AUTO:
            raise ValueError("adaptation method auto trains each adaptation on the config's "
                             "strategy; freeze_strategy auto would run its own trials inside "
                             "each: choose a strategy (e.g. none or top_n_unfrozen), or name "
                             "an adaptation method")
    if method in ("dann", "mmd", "coral") and (
            freeze_strategy == AUTO or not strategies.trains_backbone(freeze_strategy)):
        trainers = [n for n in strategies.names() if strategies.trains_backbone(n)]
        raise ValueError(
            f"adaptation method {method} aligns features by training the "
            f"backbone, but freeze_strategy {freeze_strategy} may train "
            f"only the head; choose {', '.join(trainers[:-1])} or {trainers[-1]}, or "
            "adaptation method adabn")


# the strategies a student trains under: its loss replaces the loop's, so a strategy that
# solves its head (all_frozen, lp_ft), brings its own objective (contrastive) or chooses by
# trials (auto) cannot run with it
DISTILL_STRATEGIES = ("none", "top_n_unfrozen", "gradual", "lora")


def distill_fits(strategy: str, task: str, method: str) -> None:
    """What a distillation (the ``distill`` section) cannot be combined with."""
    if strategy not in DISTILL_STRATEGIES:
        raise ValueError(f"distill trains the student on the teacher's outputs, which "
                         f"freeze_strategy {strategy} cannot (it solves its head, brings its own "
                         f"objective, or chooses by trials); use one of "
                         f"{', '.join(DISTILL_STRATEGIES)} (tlkit distill's default: none)")
    if task not in ("single_label", "multi_label", "regression"):
        raise ValueError(f"distill covers single_label, multi_label and regression data, not "
                         f"{task}")
    if method != "none":
        raise ValueError(f"distill with adaptation.method {method}: the student learns the "
                         "adapted teacher's outputs; set adaptation.method: none (give the "
                         "target's inputs as distill.unlabelled)")
