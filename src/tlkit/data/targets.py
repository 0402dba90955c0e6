"""Raw label values (strings, numbers, lists) to the target arrays a task trains on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tlkit.data.types import Task
from tlkit.errors import UserError


def is_missing(value: Any) -> bool:
    """An empty cell: None, NaN, or pandas' NA / NaT (which refuse a plain ``!=`` test)."""
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict, np.ndarray)):
        return False
    import pandas as pd  # loaded already by whoever read the table; kept off this module's import

    return bool(pd.isna(value))


def label_name(value: Any) -> str:
    """A label's name as a string; integral floats (a CSV column with gaps reads as floats) drop the '.0'."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value).strip()


def sort_classes(names: set[str]) -> list[str]:
    """Sorted class names: numerically when all are numbers (so '10' follows '9'), else as text.
    A pure function of the names: numbers that tie ('1' and '1.0') are ordered as text, never
    by the set's (hash-seeded) iteration order."""
    try:
        return sorted(names, key=lambda n: (float(n), n))
    except ValueError:
        return sorted(names)


def same_number_twice(names: set[str]) -> list[str] | None:
    """Two or more names that spell one number ('1' and '1.0', '7' and '007'), or None."""
    by_value: dict[float, list[str]] = {}
    for n in names:
        try:
            value = float(n)
        except ValueError:
            continue
        if not math.isnan(value):
            by_value.setdefault(value, []).append(n)
    clashes = [sorted(v) for _, v in sorted(by_value.items()) if len(v) > 1]
    return clashes[0] if clashes else None


def check_spellings(names: set[str], where: str) -> None:
    twice = same_number_twice(names)
    if twice is not None:
        shown = " and ".join(repr(n) for n in twice)
        raise UserError(
            f"{where} holds labels {shown}: one number written {len(twice)} ways, which would "
            "train as different classes; write each label one way (e.g. all as "
            f"{min(twice, key=len)!r}) and run again.")


def _rows(positions: Sequence[int]) -> str:
    shown = ", ".join(str(p + 1) for p in positions[:5])
    return shown + (f" and {len(positions) - 5} more" if len(positions) > 5 else "")


def _split_labels(value: Any, separator: str) -> list[str]:
    if is_missing(value):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [label_name(v) for v in value if not is_missing(v) and label_name(v)]
    return [label_name(value)]


def encode_targets(
    values: Sequence[Any],
    task: Task,
    *,
    where: str,
    separator: str = "|",
    classes: list[str] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """Encode ``values`` for ``task``; returns (targets, classes).

    ``where`` names the values for messages (e.g. "column 'label' of train.csv"). Given
    ``classes`` (a trained model's labels), labels map onto them and an unknown label is an error;
    otherwise classes are the sorted distinct labels, so indices do not depend on row order.
    """
    values = list(values)
    if not values:
        raise UserError(f"{where} holds no rows; give a data set with examples in it.")
    if task == "multi_label":
        # An empty cell in a multi-label column means "none of the labels", not a gap.
        label_lists = [_split_labels(v, separator) for v in values]
        names = sort_classes({name for labels in label_lists for name in labels})
        if classes is None:
            check_spellings(set(names), where)
            if not names:
                raise UserError(
                    f"{where} holds no labels at all; multi-label cells list labels separated by "
                    f"{separator!r} (set data.label_separator if yours differ)."
                )
            classes = names
        _check_known(set(names), classes, where)
        index = {c: i for i, c in enumerate(classes)}
        multi_hot = np.zeros((len(values), len(classes)), dtype=np.float32)
        for row, labels in enumerate(label_lists):
            multi_hot[row, [index[name] for name in labels]] = 1.0
        return multi_hot, classes

    missing = [i for i, v in enumerate(values) if is_missing(v)]
    if missing:
        raise UserError(
            f"{where} is empty in {len(missing)} row(s) (data rows {_rows(missing)}); "
            "fill in those labels or remove the rows."
        )

    if task == "regression":
        bad = [i for i, v in enumerate(values) if not _is_number(v)]
        if bad:
            raise UserError(
                f"{where} must hold numbers for a regression task, but data rows {_rows(bad)} hold "
                f"e.g. {values[bad[0]]!r}; fix those rows, or set data.task to single_label for classes."
            )
        return np.asarray([float(v) for v in values], dtype=np.float32), None

    labels = [label_name(v) for v in values]
    if classes is None:
        check_spellings(set(labels), where)
        classes = sort_classes(set(labels))
        if len(classes) < 2:
            raise UserError(
                f"{where} holds a single class ({classes[0]!r} in all {len(labels)} rows); "
                "a classifier needs at least two classes: add examples of the others."
            )
    _check_known(set(labels), classes, where)
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[name] for name in labels], dtype=np.int64), classes


def _is_number(value: Any) -> bool:
    """A finite-or-infinite number or numeric text ('0.5' from a CSV read as text); not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _check_known(names: set[str], classes: list[str], where: str) -> None:
    unknown = sorted(names - set(classes))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise UserError(
            f"{where} holds labels the model was not trained on: {shown}"
            f"{' ...' if len(unknown) > 5 else ''}; known labels are {', '.join(classes[:20])}."
        )
