"""Train / validation / test splits, reproducible from the seed.

Order of operations, so that a run's test set does not depend on ``limit``:
1. test: the set's own test split where it ships one, else ``test_fraction`` of the whole set;
2. limit: a subset of ``limit`` examples of what remains (the training pool; all of it when smaller);
3. validation: ``val_fraction`` of the (limited) training pool; the rest trains.
Single-label splits are stratified (each split keeps the class proportions); multi-label and
regression splits are plain random ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from tlkit.data.types import DataSettings, LabelledData
from tlkit.errors import UserError


@dataclass
class Splits:
    """The three splits; ``own_test`` says the test split is the data set's own."""

    train: LabelledData
    val: LabelledData
    test: LabelledData
    own_test: bool
    # Images dropped as unreadable when the source loaded (before splitting).
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str] | None:
        return self.train.classes

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def summary(self) -> dict[str, Any]:
        """What a run records about its data (summary.json)."""
        return {
            "source": self.train.name,
            "modality": self.train.modality,
            "task": self.train.task,
            "num_classes": None if self.classes is None else len(self.classes),
            "sizes": self.sizes(),
            "own_test": self.own_test,
            "skipped_images": self.skipped,
        }


@dataclass(frozen=True)
class _Step:
    """One cut of the pool, named for messages: which split and which setting controls it."""

    split: str
    setting: str


_TEST = _Step("test", "data.test_fraction")
_LIMIT = _Step("limited training", "data.limit")
_VAL = _Step("validation", "data.val_fraction")


def make_splits(data: LabelledData, cfg: DataSettings) -> Splits:
    """Split ``data`` per ``cfg`` (val_fraction, test_fraction, limit, seed)."""
    stratify = data.task == "single_label"
    if stratify:
        _check_every_class_present(data)
    everything = np.arange(len(data))
    if data.test is not None:
        pool, test = everything, data.test
    else:
        n_test = _count(cfg.test_fraction, len(everything), _TEST)
        pool, test_idx = _cut(data, everything, n_test, stratify, cfg.seed, _TEST)
        test = data.subset(test_idx, name=f"{data.name}:test")
    if cfg.limit is not None and cfg.limit < len(pool):
        # The part set aside is the subset kept, drawn with the pool's class proportions.
        _, pool = _cut(data, pool, cfg.limit, stratify, cfg.seed, _LIMIT)
    n_val = _count(cfg.val_fraction, len(pool), _VAL)
    train_idx, val_idx = _cut(data, pool, n_val, stratify, cfg.seed, _VAL)
    return Splits(
        train=data.subset(train_idx),
        val=data.subset(val_idx, name=f"{data.name}:val"),
        test=test,
        own_test=data.test is not None,
        skipped=data.skipped,
        skipped_files=list(data.skipped_files),
    )


def _count(fraction: float, n: int, step: _Step) -> int:
    if not 0.0 < fraction < 1.0:
        raise UserError(
            f"{step.setting} is {fraction}; it must lie strictly between 0 and 1 "
            f"(tlkit needs a {step.split} split), e.g. 0.1."
        )
    count = round(fraction * n)
    if count == 0:
        raise UserError(
            f"the {step.split} split would be empty ({fraction} of {n} examples); "
            f"raise {step.setting} or add data."
        )
    if count >= n:
        raise UserError(f"the {step.split} split would take all {n} examples; lower {step.setting}.")
    return count


def _cut(
    data: LabelledData, pool: np.ndarray, n_out: int, stratify: bool, seed: int, step: _Step
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``pool`` (indices into ``data``) into (rest, ``n_out`` set aside)."""
    labels = data.targets[pool] if stratify else None
    if labels is not None:
        _check_stratifiable(data, labels, n_out, len(pool) - n_out, step)
    rest, out = train_test_split(pool, test_size=n_out, stratify=labels, random_state=seed, shuffle=True)
    return np.sort(rest), np.sort(out)


def _check_every_class_present(data: LabelledData) -> None:
    assert data.classes is not None
    counts = np.bincount(data.targets, minlength=len(data.classes))
    missing = [data.classes[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        why = f" ({data.skipped} unreadable images were skipped)" if data.skipped else ""
        raise UserError(
            f"class(es) {', '.join(map(repr, missing[:5]))} have no examples{why}; "
            "add examples of them or remove them from the data."
        )


def _check_stratifiable(data: LabelledData, labels: np.ndarray, n_out: int, n_rest: int, step: _Step) -> None:
    """Turn sklearn's conditions for a stratified split into messages that say what to change."""
    assert data.classes is not None
    counts = np.bincount(labels, minlength=len(data.classes))
    too_few = [data.classes[i] for i in np.flatnonzero(counts == 1)]
    if too_few:
        raise UserError(
            f"class(es) {', '.join(map(repr, too_few[:5]))} have a single example left when setting aside "
            f"the {step.split} split; stratified splits need at least 2 per class at each step. "
            "Add examples of them or remove them."
        )
    present = int(np.count_nonzero(counts))
    if min(n_out, n_rest) < present:
        size = f"would hold {n_out} examples" if n_out < present else f"would leave {n_rest} examples for the rest"
        raise UserError(
            f"the {step.split} split {size}, fewer than the {present} classes, so a stratified "
            f"split cannot hold one of each; change {step.setting} or add data."
        )
