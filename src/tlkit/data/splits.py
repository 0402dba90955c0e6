"""Train / validation / test splits, reproducible from the seed.

Order of operations, so that a run's test set does not depend on ``limit``:
1. test: the user's (``data.test``) or the set's own test split where there is one, else
   ``test_fraction`` of the whole set (none at 0);
2. limit: a subset of ``limit`` examples of what remains (the training pool; all of it when smaller);
3. validation: the user's (``data.validation``) or the set's own validation split where there
   is one, else ``val_fraction`` of the (limited) training pool; the rest trains.
Single-label splits are stratified (each split keeps the class proportions); multi-label and
regression splits are plain random ones. A class with a single example left at a cut cannot be
stratified: it stays in the training pool, and the cut is stratified over the other classes
(``train_only_classes`` names them).
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
    test: LabelledData | None  # None: no test split (data.test_fraction 0)
    own_test: bool
    # Images dropped as unreadable when the source loaded (before splitting).
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)
    # where each split came from, and the classes too rare to appear outside training
    origins: dict[str, str] = field(default_factory=dict)
    train_only_classes: list[str] = field(default_factory=list)
    # rows left out for having no label (data.unlabelled: drop), per file: source, validation, test
    unlabelled: dict[str, int] = field(default_factory=dict)
    # inputs shared between the splits (tlkit.data.fingerprint.overlap_of), once a fit counted
    overlap: dict[str, Any] | None = None

    @property
    def classes(self) -> list[str] | None:
        return self.train.classes

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val),
                "test": 0 if self.test is None else len(self.test)}

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
            "origins": self.origins,
            "train_only_classes": self.train_only_classes,
            "unlabelled_dropped": {"total": sum(self.unlabelled.values()), **self.unlabelled},
            **({"overlap": self.overlap} if self.overlap is not None else {}),
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
    """Split ``data`` per ``cfg`` (val_fraction, test_fraction, limit, seed; the given
    validation and test sets ``data`` carries)."""
    stratify = data.task == "single_label"
    if stratify:
        _check_every_class_present(data)
    rare: set[str] = set()
    everything = np.arange(len(data))
    origins = {"train": data.name}
    test: LabelledData | None
    if data.test is not None:
        pool, test = everything, data.test
        origins["test"] = getattr(cfg, "test", None) or f"{data.name}'s own test split"
    elif cfg.test_fraction == 0:
        pool, test = everything, None
        origins["test"] = "none (data.test_fraction is 0)"
    else:
        n_test = _count(cfg.test_fraction, len(everything), _TEST)
        pool, test_idx = _cut(data, everything, n_test, stratify, cfg.seed, _TEST, rare)
        test = data.subset(test_idx, name=f"{data.name}:test")
        origins["test"] = f"{cfg.test_fraction} of {data.name}"
    if cfg.limit is not None and cfg.limit < len(pool):
        # The part set aside is the subset kept, drawn with the pool's class proportions.
        _, pool = _cut(data, pool, cfg.limit, stratify, cfg.seed, _LIMIT)
    if data.val is not None:
        train_idx, val = pool, data.val
        origins["validation"] = (getattr(cfg, "validation", None)
                                 or f"{data.name}'s own validation split")
    else:
        n_val = _count(cfg.val_fraction, len(pool), _VAL)
        train_idx, val_idx = _cut(data, pool, n_val, stratify, cfg.seed, _VAL, rare)
        val = data.subset(val_idx, name=f"{data.name}:val")
        origins["validation"] = f"{cfg.val_fraction} of the training pool"
    return Splits(
        train=data.subset(train_idx),
        val=val,
        test=test,
        own_test=data.test is not None,
        skipped=data.skipped,
        skipped_files=list(data.skipped_files),
        origins=origins,
        train_only_classes=sorted(rare),
        unlabelled={"source": data.unlabelled,
                    **{k: d.unlabelled for k, d in (("validation", data.val), ("test", data.test))
                       if d is not None}},
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
    data: LabelledData, pool: np.ndarray, n_out: int, stratify: bool, seed: int, step: _Step,
    rare: set[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``pool`` (indices into ``data``) into (rest, ``n_out`` set aside). Stratified: a
    class with a single example in the pool cannot be split; that example stays on the side
    that trains (the rest, or for ``limit`` the subset kept, the part set aside) and the cut is
    stratified over the other classes, or, when it is smaller than their number, drawn so
    that each class keeps an example in the rest. ``rare`` collects the classes kept out."""
    if not stratify:
        rest, out = train_test_split(pool, test_size=n_out, random_state=seed, shuffle=True)
        return np.sort(rest), np.sort(out)
    assert data.classes is not None
    labels = data.targets[pool]
    counts = np.bincount(labels, minlength=len(data.classes))
    single = counts[labels] == 1
    singles, cuttable = pool[single], pool[~single]
    into_out = step is _LIMIT  # the subset limit keeps is the part that trains
    need = n_out - len(singles) if into_out else n_out
    if need <= 0 or need >= len(cuttable):
        if into_out:  # more single examples than the limit: a plain random subset
            rest, out = train_test_split(pool, test_size=n_out, random_state=seed, shuffle=True)
            return np.sort(rest), np.sort(out)
        raise UserError(
            f"the {step.split} split would take {n_out} of the {len(cuttable)} examples whose "
            f"classes have more than one ({len(singles)} are the only example of their class "
            f"and stay in training); change {step.setting} or add data.")
    if rare is not None:
        rare.update(data.classes[i] for i in np.flatnonzero(counts == 1))
    present = int(np.count_nonzero(counts > 1))
    if present <= min(need, len(cuttable) - need):
        rest, out = train_test_split(cuttable, test_size=need, stratify=data.targets[cuttable],
                                     random_state=seed, shuffle=True)
    else:
        rest, out = _spread_cut(data.targets, cuttable, need, seed)
    if into_out:
        return np.sort(rest), np.sort(np.concatenate([out, singles]))
    return np.sort(np.concatenate([rest, singles])), np.sort(out)


def _spread_cut(targets: np.ndarray, pool: np.ndarray, n_out: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """``n_out`` examples of ``pool`` in a seeded order, at most all but one of each class."""
    left = {int(c): int(n) for c, n in zip(*np.unique(targets[pool], return_counts=True))}
    out: list[int] = []
    for i in np.random.default_rng(seed).permutation(pool):
        if len(out) == n_out:
            break
        if left[int(targets[i])] > 1:
            left[int(targets[i])] -= 1
            out.append(i)
    chosen = set(out)
    return np.asarray([i for i in pool if i not in chosen], dtype=np.int64), np.asarray(out)


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
