"""A config's ``distill`` section made real: the teacher loaded and checked against the data,
the student's backbone (a truncated copy of the teacher, or the config's own source_model), and
the loop hook with the teacher's outputs on the training split and the unlabelled inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tlkit.data import build_dataset
from tlkit.distillation.objective import Distillation
from tlkit.distillation.student import truncated
from tlkit.distillation.teacher import check_fits, load_teacher, teacher_outputs
from tlkit.errors import UserError
from tlkit.saved import SavedModel

Log = Callable[[str], None]


@dataclass
class Student:
    """What the student starts from: its backbone (None: the config's source_model, loaded as
    any run's) and head weights (None: a fresh head), and the teacher."""

    teacher: SavedModel
    backbone: Any | None
    head: dict[str, torch.Tensor] | None
    said: str  # what the student is, for the log, the summary and the model card


def student_of(cfg: Any, splits: Any) -> Student:
    """The teacher of ``cfg.distill``, checked against the student's data, and the student's
    starting weights."""
    d = cfg.distill
    teacher = load_teacher(d.teacher)
    check_fits(teacher, splits.train.task, splits.classes, d.teacher)
    if d.student == "backbone":
        return Student(teacher, None, None,
                       f"{cfg.transfer_config.source_model} (its pretrained weights)")
    backbone, head, kept = truncated(teacher.model, d.layers)
    return Student(teacher, backbone, head, f"a truncated copy of the teacher: {kept}")


def check_distill(cfg: Any, splits: Any, modality: str) -> None:
    """What a distillation needs, checked before the model loads or the run directory is
    written: a finished teacher for the student's task and classes (its model.json only), and
    unlabelled inputs that can be read."""
    import json
    from pathlib import Path

    from tlkit.distillation.teacher import finished

    d = cfg.distill
    path = Path(d.teacher).expanduser()
    finished(path, d.teacher)
    try:
        meta = json.loads((path / "model" / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict) and "task" in meta:
        if meta["task"] != splits.train.task or (meta.get("classes") or None) != (
                splits.classes or None):
            check_fits(load_teacher(d.teacher), splits.train.task, splits.classes, d.teacher)
    unlabelled_of(cfg, modality)


def start_head(model: Any, head: dict[str, torch.Tensor] | None) -> bool:
    """Start the student's head from the teacher's where their shapes match; whether it did."""
    if head is None:
        return False
    own = model.head.state_dict()
    if set(own) != set(head) or any(own[k].shape != head[k].shape for k in own):
        return False
    model.head.load_state_dict(head)
    return True


def unlabelled_of(cfg: Any, modality: str) -> Any | None:
    """``distill.unlabelled``'s inputs (``unlabelled_limit`` of them, a seeded sample), or None."""
    d = cfg.distill
    if d.unlabelled is None:
        return None
    from tlkit.adapt.target import load_unlabelled
    from tlkit.inputs import subset

    try:
        pool = load_unlabelled(d.unlabelled)
    except UserError as e:  # named as the user gave it
        raise UserError(str(e).replace("adaptation.target", "distill.unlabelled").replace(
            "data.source", "distill.unlabelled (tlkit distill --unlabelled)")) from None
    if pool.modality != modality:
        raise UserError(f"distill.unlabelled {d.unlabelled.source} holds {pool.modality}, the "
                        f"student's data is {modality}; give unlabelled {modality}")
    if d.unlabelled_limit is not None and len(pool) > d.unlabelled_limit:
        pool = subset(pool, d.unlabelled_limit, cfg.transfer_config.seed)
    return pool


def distillation_hook(cfg: Any, inputs: Any, student: Student, device: Any,
                      log: Log) -> Distillation:
    """The loop hook: the teacher's outputs on the training split and the unlabelled inputs,
    computed once now, and the student's view of those inputs."""
    d, tc = cfg.distill, cfg.transfer_config
    train = inputs.splits.train
    pool = unlabelled_of(cfg, inputs.modality)
    t0 = time.perf_counter()
    mp = tc.mixed_precision
    outs = [teacher_outputs(student.teacher, train, tc.batch_size, device, mp)]
    if pool is not None:
        outs.append(teacher_outputs(student.teacher, pool, tc.batch_size, device, mp))
    teacher = np.concatenate(outs)
    log(f"distillation: the teacher's outputs on {len(train):,} training"
        + (f" and {len(pool):,} unlabelled" if pool is not None else "")
        + f" inputs, computed once ({time.perf_counter() - t0:.1f} s); the student is "
        + student.said)
    from tlkit.inputs import class_weights_of

    hook = Distillation(inputs.train_ds,
                        None if pool is None else build_dataset(pool, inputs.prep),
                        inputs.collate, teacher, train.task, tc, d.temperature, d.alpha,
                        class_weights_of(tc.class_weights, train), d.teacher)
    hook.saved, hook.student_said = student.teacher, student.said
    return hook
