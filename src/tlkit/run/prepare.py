"""Step 1 of a fit: from a config to everything training needs, cheap checks first (the run
directory, the data), then the model, so a mistake fails in seconds and never after an hour."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlkit.adapt.alignment import Alignment, aligns
from tlkit.adapt.target import Target, load_target_test, prepare_target
from tlkit.assemble import Assembled
from tlkit.config import AUTO, Config, dump_config
from tlkit.data import load_source
from tlkit.data.fingerprint import (
    check_identical,
    describe_overlap,
    differences,
    fingerprint,
    identical_inputs,
    overlap_of,
)
from tlkit.diagnose.preprocessing import check_preprocessing
from tlkit.distributed import Dist, launched, setup
from tlkit.errors import UserError
from tlkit.events import Event
from tlkit.inputs import build_inputs, check_length, class_weights_of, limited, load_data
from tlkit.plan import format_plan, plan_record
from tlkit.plan.apply import batchnorm_trains
from tlkit.plan.length import length_for
from tlkit.rundir import RunDir, check_writable
from tlkit.train.checkpoint import load_checkpoint
from tlkit.train.loop import TrainData


@dataclass
class Prepared:
    """A run ready to train: its config, run directory, data, model and plan, and the hooks the
    loop will call."""

    cfg: Config
    run: RunDir
    dist: Dist
    event: Event
    t_start: float
    data: Any  # the loaded source (LabelledData)
    splits: Any
    asm: Assembled
    prep: Any  # the backbone's preprocessing
    train: TrainData
    test_ds: Any  # None without a test split
    findings: list[Any]  # the preprocessing check's
    cache: Any  # ActivationCache or None
    hooks: list[Any]
    target: Target | None
    resume: dict[str, Any] | None  # the checkpoint to continue from
    pretrained: torch.nn.Module | None  # the backbone before training, for forgetting
    test_limit: int | None
    # adaptation.method is not none in the user's config (auto too, whatever it picks): the
    # model is meant for the target domain, and the test split is the source domain's
    adapted: bool = False


def open_run(cfg: Config, out: Path, resume: bool) -> tuple[RunDir, bool, Dist, bool]:
    """The run directory, checked against ``resume``: a finished run is never overwritten and a
    resumed one continues with its own config. Returns it, whether there is a checkpoint to
    resume, this process's place, and whether a --resume found nothing and starts over."""
    if launched() and cfg.adaptation.target is not None:
        raise UserError("adaptation.target runs on one process; run this config without "
                        "torchrun / accelerate launch, or remove the adaptation section")
    dist = setup(cfg.transfer_config.device)
    run = RunDir(out)
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    if dist.is_main:  # the others wait for rank 0, which claims the folder
        check_writable(run.path, "run")
    if not (resume and run.last.is_file()):  # a run that started was let through then
        # splits given as the same data: refused before anything is written or trained
        target = cfg.adaptation.target
        check_identical(cfg.data, cfg.diagnostics.allow_overlap,
                        None if target is None else target.test)
        if cfg.transfer_config.freeze_strategy == AUTO:
            # its trials train before prepare reads the target's test set: read it now
            load_target_test(cfg, load_source(cfg.data))
    if resume and not run.last.is_file():
        # Killed before its first checkpoint (or never started): resuming is starting. So a run
        # killed at any moment continues with the same command.
        if run.summary.is_file():
            raise UserError(f"{out} holds a finished run without checkpoints/last.pt; choose "
                            "another --out (nothing was changed)")
        return run, False, dist, True
    elif resume:
        saved = run.config.read_text() if run.config.is_file() else None
        # where a run is tracked is not what it computes: a resume may log elsewhere, or
        # nowhere (tracking.mlflow removed when its server is gone)
        if saved is not None and _untracked(saved) != _untracked(dump_config(cfg)):
            raise UserError(f"the config differs from the one {out} was started with "
                            f"({run.config}); resume with that config, or start a new --out")
    elif run.path.is_dir() and (run.last.is_file() or run.summary.is_file()):
        raise UserError(f"{out} already holds a run; add --resume to continue it, or choose "
                        "another --out (nothing was changed)")
    return run, resume, dist, False


def _untracked(text: str) -> Any:
    """A config as dump_config writes it, without its tracking section."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(raw, dict):
        raw.pop("tracking", None)
    return raw


def prepare(cfg: Config, run: RunDir, resume: bool, dist: Dist, event: Event,
            test_limit: int | None = None, given: Config | None = None) -> Prepared:
    """Everything ``cfg`` trains with; ``given`` is the user's config where it differs
    (freeze_strategy auto: ``cfg`` is the pick's), the one config.yaml keeps."""
    tc = cfg.transfer_config
    t_start = time.perf_counter()
    event("stage", {"what": f"loading data {cfg.data.source}"})
    data, splits = load_data(cfg)
    if any(splits.unlabelled.values()):  # data.unlabelled: drop
        event("stage", {"what": "rows without a label left out (data.unlabelled: drop): "
                                + ", ".join(f"{n} of data.{k}" for k, n in
                                            splits.unlabelled.items() if n)})
    if splits.train_only_classes:
        event("stage", {"what": f"{len(splits.train_only_classes)} class(es) with a single "
                                "example stay in training only (no stratified cut can hold them): "
                                + ", ".join(splits.train_only_classes[:10])
                                + (" ..." if len(splits.train_only_classes) > 10 else "")})
    adapted = (given or cfg).adaptation.method != "none"
    if splits.test is None:
        event("stage", {"what": f"no {'source domain ' if adapted else ''}test split "
                                "(data.test_fraction is 0): the run reports its validation "
                                "metrics"})
    splits = limited(splits, test_limit, cfg.data.seed)
    # read as data.test is, before the model loads or anything is written
    target_test = load_target_test(cfg, data, test_limit)
    count_overlap(cfg, splits, event)
    length = length_for(splits.train, tc)
    check_length(tc, length)  # before the model loads
    class_weights_of(tc.class_weights, splits.train)  # named classes checked: before it too
    if cfg.distill is not None:  # the teacher and the unlabelled inputs: before it too
        from tlkit.distillation.build import check_distill

        check_distill(cfg, splits, data.modality)
    if dist.is_main:
        same_data(run, splits, resume)
    event("stage", {"what": f"loading backbone {tc.source_model}", "sizes": splits.sizes()})

    def say(msg: str) -> None:
        event("stage", {"what": msg})

    inputs = _inputs(cfg, splits, data.modality, dist, say)
    asm = inputs.asm
    # where BatchNorm layers train, no batch holds a single example: the loop's length, known
    # once the model is (a single training example is refused here, before the config, the
    # plan, the metrics or a checkpoint is written or touched)
    length = length_for(splits.train, tc, not aligns(cfg.adaptation) and batchnorm_trains(
        asm.model, asm.groups, asm.plan, tc.freeze_norm_stats), len(inputs.train_ds))
    check_length(tc, length)
    findings = check_preprocessing(asm.model.backbone, inputs.collate, inputs.train_ds,
                                   cfg.diagnostics.check_preprocessing, say)
    event("stage", {"what": length.describe()})
    say_unused(cfg, data.modality, asm, event)
    if dist.is_main:
        run.write_text(run.config, dump_config(given or cfg))
        run.write_text(run.plan, format_plan(asm.plan, length) + "\n")
        run.write_json(run.plan_json, plan_record(asm.plan, length))
    # rank 0 reads the checkpoint and sends it to the others (their disk may not hold it)
    state_in = dist.on_main(lambda: load_checkpoint(run.last) if resume else None)
    if dist.is_main and state_in is not None:
        run.truncate_metrics(int(state_in["state"]["epoch"]))
    elif dist.is_main and run.metrics.exists():
        run.metrics.unlink()
    for note in inputs.notes:
        say(note)
    hooks = list(inputs.hooks)
    target = None
    if cfg.adaptation.target is not None:  # method none: the target is only measured
        target = prepare_target(cfg, data.modality, splits.classes, inputs.prep,
                                asm.model.backbone, len(asm.groups), inputs.train_ds,
                                inputs.collate, dist.device, event, target_test)
        if target.loss is not None:
            hooks.append(Alignment(target.loss, target.train, cfg.adaptation.weight, tc.seed))
    return Prepared(cfg, run, dist, event, t_start, data, splits, asm, inputs.prep,
                    inputs.training_data(), inputs.test_ds, findings, inputs.cache, hooks,
                    target, state_in, _pretrained_copy(cfg, asm, dist), test_limit, adapted)


def _inputs(cfg: Config, splits: Any, modality: str, dist: Dist, say: Any) -> Any:
    """``build_inputs``; for a student (the config's distill section), on its own backbone
    and head, with the hook that trains it on the teacher's outputs."""
    if cfg.distill is None:
        return build_inputs(cfg, splits, modality, dist, log=say)
    from tlkit.distillation.build import distillation_hook, start_head, student_of

    student = student_of(cfg, splits)
    inputs = build_inputs(cfg, splits, modality, dist, log=say, backbone=student.backbone)
    if start_head(inputs.asm.model, student.head):
        student.said += "; its head starts from the teacher's"
    inputs.hooks.insert(0, distillation_hook(cfg, inputs, student, dist.device, say))
    return inputs


def count_overlap(cfg: Config, splits: Any, event: Event) -> None:
    """The inputs the splits share, counted into ``splits.overlap`` (summary.json's
    data.overlap) and said in the log where there are any."""
    splits.overlap = overlap_of(splits, identical_inputs(cfg.data))
    said = describe_overlap(splits.overlap)
    if said is not None:
        event("stage", {"what": said})


def say_unused(cfg: Config, modality: str, asm: Assembled, event: Event) -> None:
    unused = unused_settings(cfg, modality, asm)
    if unused:
        event("stage", {"what": "settings this run does not use: " + "; ".join(unused)
                                + " (remove them, or choose what uses them)"})


def _differs(section: Any, key: str) -> bool:
    """Whether a config section's ``key`` differs from its default."""
    return bool(getattr(section, key) != type(section).model_fields[key].get_default(
        call_default_factory=True))


def unused_settings(cfg: Config, modality: str, asm: Assembled) -> list[str]:
    """The settings this run's path never reads, where the config gives them another value than
    the default: "key value (why)". They are said, not refused: a config compared across
    strategies (``compare``, ``freeze_strategy: auto``) carries every strategy's settings, and
    one written for text may be run on images. (What a solved head does not read the loop says
    when it solves: ``tlkit.train.head_solver.unread_by_solver``.)"""
    tc, d, ad = cfg.transfer_config, cfg.data, cfg.adaptation
    n = len(asm.groups)
    phases = list(asm.plan.phases)
    said: list[str] = []

    def say(section: Any, name: str, key: str, why: str) -> None:
        if _differs(section, key):
            value = getattr(section, key)
            said.append(f"{name}.{key} {value} ({why})")

    if not any(r.trainable for ph in phases for r in ph.rows[:n]):
        why = f"freeze_strategy {tc.freeze_strategy} trains no backbone group"
        for key in ("backbone_lr", "lr_decay_per_layer", "l2sp_lambda"):
            say(tc, "transfer_config", key, why)
    elif any(r.adapters_only for ph in phases for r in ph.rows[:n]):
        say(tc, "transfer_config", "l2sp_lambda",
            "LoRA's base weights stay frozen and its adapters have no pretrained value: the "
            "penalty stays 0")
    if max(sum(r.trainable for r in ph.rows[:n]) for ph in phases) == 1:
        say(tc, "transfer_config", "lr_decay_per_layer",
            "only the top group trains, at backbone_lr itself")
    if all(asm.plan.frozen_below(ph) == 0 for ph in phases):
        say(tc.cache, "transfer_config.cache", "max_mb",
            "no layer is frozen below a trained one: nothing is cached")
    if not any(ph.converge_head for ph in phases):
        say(tc, "transfer_config", "head_solver",
            f"freeze_strategy {tc.freeze_strategy} has no head-only phase to solve")
    if not (phases[-1].converge_head and tc.head_solver == "convex"):
        say(tc, "transfer_config", "head_refit", "only a head solved as the run's last phase "
            "(all_frozen or contrastive, head_solver convex) is refitted")
    if tc.head.type == "linear":
        say(tc.head, "transfer_config.head", "hidden_size", "a linear head has no hidden layer")
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for m in asm.model.backbone.modules()):
        say(tc, "transfer_config", "freeze_norm_stats", "the backbone has no BatchNorm layer")
    if modality == "text":
        for key in ("image_size", "augment", "on_bad_image"):
            say(d, "data", key, "the data is text")
    else:
        for key in ("max_length", "group_by_length"):
            say(d, "data", key, "the data is images")
        say(tc, "transfer_config", "pooling", "it pools a text model's tokens; the data is "
            "images")
    if ad.method in ("none", "adabn", "auto"):
        say(ad, "adaptation", "weight", f"adaptation method {ad.method} adds no alignment "
            "loss" + (" (auto weighs by auto_weights)" if ad.method == "auto" else ""))
    if ad.method not in ("dann", "auto"):
        say(ad, "adaptation", "dann_gamma", f"only method dann reads it, not {ad.method}")
    if ad.method != "auto":
        say(ad, "adaptation", "auto_weights", f"only method auto reads it, not {ad.method}")
        say(ad, "adaptation", "auto_budget", f"only method auto reads it, not {ad.method}")
    return said


def _pretrained_copy(cfg: Config, asm: Assembled, dist: Dist) -> torch.nn.Module | None:
    """Forgetting compares the adapted backbone with the pretrained one: a copy when any
    backbone group trains (the model still holds the pretrained weights here; a resumed run's
    checkpoint loads inside fit)."""
    n = len(asm.groups)
    # (not question answering: its backbone gives every token's state, which the CKA of
    # pooled features does not compare)
    if (any(r.trainable for ph in asm.plan.phases for r in ph.rows[:n])
            and cfg.transfer_config.pretrained_weights != "none" and dist.is_main
            and cfg.data.task != "question_answering"):
        return copy.deepcopy(asm.model.backbone).eval()
    return None


def same_data(run: RunDir, splits: Any, resume: bool) -> None:
    """A new run records its data's fingerprint; a resumed one must find the same data (the
    fingerprint of a run from before there was one is written now)."""
    now = fingerprint(splits)
    if resume and run.data.is_file():
        try:
            before = json.loads(run.data.read_text())
        except (OSError, ValueError):
            before = None
        said = differences(before, now) if isinstance(before, dict) else ["its record "
                                                                          f"{run.data} is unreadable"]
        if said:
            raise UserError(f"--resume with other data than {run.path} was started with: "
                            + "; ".join(said) + ". Restore that data to continue the run, or "
                            "start a new run in another --out (nothing was changed)")
        return
    run.write_json(run.data, now)
