"""The teacher of a distillation: a finished run's saved model, its outputs on the inputs the
student trains on (computed once, each input through the teacher's own preprocessing, which may
not be the student's), and the comparison of the two on the same test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data import build_collate, build_dataset
from tlkit.diagnose.verdict import paired_bootstrap
from tlkit.errors import UserError
from tlkit.saved import SavedModel, load_model
from tlkit.train.evaluate import predict_outputs

DISTILLABLE = ("single_label", "multi_label", "regression")


def load_teacher(where: str) -> SavedModel:
    """The teacher run's saved model; a UserError naming the fix where ``where`` is not a
    finished run directory."""
    path = Path(where).expanduser()
    finished(path, where)
    saved = load_model(path / "model")
    if saved.task not in DISTILLABLE:
        raise UserError(f"distill: the teacher's task is {saved.task}; distillation here "
                        f"covers {', '.join(DISTILLABLE)}")
    return saved


def finished(path: Path, where: str) -> None:
    """Refuse a teacher that is not a finished run directory, naming the fix."""
    if not path.is_dir():
        raise UserError(f"distill.teacher {where}: no such run directory; give the --out folder "
                        "of a finished `tlkit fit`")
    if not (path / "model").is_dir() or not (path / "summary.json").is_file():
        raise UserError(f"distill.teacher {where} holds no finished run (model/ and "
                        "summary.json); finish its fit first (tlkit fit CONFIG --out "
                        f"{where} --resume)")


def check_fits(saved: SavedModel, task: str, classes: list[str] | None, where: str) -> None:
    """Refuse a student whose data is not the teacher's task and classes (in their order):
    the soft targets would name other classes."""
    if saved.task != task:
        raise UserError(f"distill: the teacher ({where}) was trained for {saved.task}, the "
                        f"student's data is {task}; give the student the teacher's data section")
    if (saved.classes or None) != (classes or None):
        theirs, ours = saved.classes or [], classes or []
        raise UserError(f"distill: the student's classes ({', '.join(ours[:6])}"
                        f"{' ...' if len(ours) > 6 else ''}) are not the teacher's "
                        f"({', '.join(theirs[:6])}{' ...' if len(theirs) > 6 else ''}) in the "
                        "same order; give the student the teacher's data section")


def teacher_outputs(saved: SavedModel, data: Any, batch_size: int, device: Any,
                    mixed_precision: bool = False) -> np.ndarray:
    """The teacher's outputs (logits, or values) on ``data`` (examples as loaded, before any
    preprocessing), in its order, through the teacher's own preprocessing, unaugmented, at
    the run's precision (the teacher's own, for a student config made from its run)."""
    ds = build_dataset(data, saved.preprocessing)
    saved.model.to(device)
    out, _ = predict_outputs(saved.model, ds, build_collate(saved.preprocessing),
                             max(batch_size, 64), device, mixed_precision)
    saved.model.cpu()
    return out


def compare(student: np.ndarray, teacher: np.ndarray, targets: np.ndarray, task: str,
            resamples: int, seed: int = 0) -> dict[str, Any]:
    """Student against teacher on the same test examples: each one's headline metric, the
    difference with its 95% paired-bootstrap interval, and (classification) how often the
    student predicts what the teacher does, with its interval."""
    y = np.asarray(targets)
    if task == "single_label":
        ps, pt = student.argmax(1), teacher.argmax(1)
        cs, ct = (ps == y).astype(float), (pt == y).astype(float)
        agree = (ps == pt).astype(float)
        metric = "accuracy"
    elif task == "multi_label":
        ps, pt = student > 0, teacher > 0
        cs, ct = (ps == (y > 0.5)).mean(1), (pt == (y > 0.5)).mean(1)
        agree = (ps == pt).mean(1).astype(float)
        metric = "label_accuracy"  # the share of (example, label) decisions that are right
    else:  # regression: each example's squared error; the interval is of the MSE's change
        s, t = student.reshape(len(y), -1), teacher.reshape(len(y), -1)
        yy = y.reshape(len(y), -1)
        cs, ct = -((s - yy) ** 2).mean(1), -((t - yy) ** 2).mean(1)
        agree = None
        metric = "negative_mse"
    diff = paired_bootstrap(cs, ct, resamples=resamples, seed=seed)
    out: dict[str, Any] = {
        "metric": metric, "examples": int(len(y)),
        "student": float(cs.mean()), "teacher": float(ct.mean()),
        "difference": {"value": float(cs.mean() - ct.mean()), "low": float(diff["low"]),
                       "high": float(diff["high"])},
    }
    if agree is not None:  # the same bootstrap, of the agreement's mean (against zero)
        ci = paired_bootstrap(agree, np.zeros_like(agree), resamples=resamples, seed=seed)
        out["agreement"] = {"value": float(agree.mean()), "low": ci["low"], "high": ci["high"]}
    return out
