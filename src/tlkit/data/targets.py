"""Raw label values (strings, numbers, lists) to the target arrays a task trains on.

Every label of every source (CSV, JSONL, Parquet, a DataFrame or ``datasets.Dataset`` written to
Parquet, a folder's class names, a packaged set) goes through ``encode_targets``, and a row
without a label through ``labelled_rows``: what a label cell may hold is decided here once.
"""

from __future__ import annotations

import datetime
import difflib
import math
import numbers
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

import numpy as np

from tlkit.data.types import Task
from tlkit.errors import UserError

Unlabelled = Literal["refuse", "drop"]
_CONTAINERS = (list, tuple, set, frozenset, dict, np.ndarray)


class UnknownLabels(UserError):
    """Labels outside the classes given (a trained model's, or the training source's):
    ``unknown`` names them, ``counts`` their rows, so a caller can say where they came from."""

    def __init__(self, message: str, unknown: list[str], counts: dict[str, int],
                 classes: list[str]) -> None:
        super().__init__(message)
        self.unknown, self.counts, self.classes = unknown, counts, classes


def is_missing(value: Any) -> bool:
    """An empty cell: None, NaN, or pandas' NA / NaT (which refuse a plain ``!=`` test)."""
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset, np.ndarray)):
        return False
    import pandas as pd  # loaded already by whoever read the table; kept off this module's import

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # an object pandas cannot test is not a gap
        return False


def _blank(value: Any) -> bool:
    """Text (or bytes) of nothing but whitespace."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return isinstance(value, str) and not value.strip()


def label_name(value: Any) -> str:
    """A label's name as a string: integral floats (a CSV column with gaps reads as floats) drop
    the '.0'; text is stripped and in Unicode's composed form (NFC), so 'café' typed on one
    machine and listed by another's file system (decomposed, as macOS stores folder names) is
    one class; UTF-8 bytes (a Parquet binary column) are read as their text."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8")  # encode_targets has refused undecodable bytes
    return unicodedata.normalize("NFC", str(value)).strip()


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


def _spacing_key(name: str) -> str:
    """A name with its spaces and Unicode compatibility forms (no-break space, full-width
    letters, ligatures) made plain: two names with one key are one label written two ways."""
    return " ".join(unicodedata.normalize("NFKC", name).split())


def same_text_twice(names: set[str]) -> list[str] | None:
    """Two or more names that differ only in spacing or Unicode form, or None. Names that
    differ in case are left alone: 'K' and 'k' may well be two classes."""
    by_key: dict[str, list[str]] = {}
    for n in names:
        by_key.setdefault(_spacing_key(n), []).append(n)
    clashes = [sorted(v) for _, v in sorted(by_key.items()) if len(v) > 1]
    return clashes[0] if clashes else None


def check_spellings(names: set[str], where: str) -> None:
    """Refuse one label written two ways (as a number, or in spaces or Unicode form)."""
    for find, how, example in (
            (same_number_twice, "one number written {n} ways", True),
            (same_text_twice, "one label written {n} ways (they differ only in spaces or "
                              "Unicode form)", False)):
        twice = find(names)
        if twice is not None:
            shown = " and ".join(repr(n) for n in twice)
            hint = f" (e.g. all as {min(twice, key=len)!r})" if example else ""
            raise UserError(f"{where} holds labels {shown}: {how.format(n=len(twice))}, which "
                            f"would train as different classes; write each label one way{hint} "
                            "and run again.")


def near_spellings(name: str, classes: Sequence[str]) -> list[str]:
    """What relates ``name`` to the classes it is not one of: the same but for case, spacing,
    Unicode form or the way a number is written, or a close spelling; phrases for a message."""
    found: list[str] = []
    for c in classes:
        if name != c and _spacing_key(name).casefold() == _spacing_key(c).casefold():
            how = [w for w, differs in (
                ("case", _spacing_key(name) != _spacing_key(c)),
                ("spacing or Unicode form", name.casefold() != c.casefold())) if differs]
            found.append(f"{name!r} is the class {c!r} written with another {' and '.join(how)}")
            continue
        try:
            if float(name) == float(c) and name != c:
                found.append(f"{name!r} is the number {c!r} written another way")
        except ValueError:
            pass
    if not found:
        close = difflib.get_close_matches(name, list(classes), n=2, cutoff=0.8)
        found = [f"{name!r} is close to the class {c!r}" for c in close]
    return found


def _rows(positions: Sequence[int]) -> str:
    shown = ", ".join(str(p + 1) for p in positions[:5])
    return shown + (f" and {len(positions) - 5} more" if len(positions) > 5 else "")


# ---------------------------------------------------------------------------------------------
# Rows without a label


def unlabelled_rows(values: Sequence[Any], task: Task) -> list[int]:
    """The rows whose label cell says "no label": empty, null, NaN / NA / NaT, or blank text
    (a ``datasets`` ClassLabel -1 reaches here as a null). In a multi-label column of text an
    empty cell means "none of the labels" (a CSV cannot write an empty list), so only a column
    of lists (JSONL arrays, Parquet lists, a DataFrame's lists) has rows without a label: there
    "none" is written ``[]``, and a null can only mean unknown."""
    if task == "multi_label":
        if not any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
            return []
        return [i for i, v in enumerate(values) if is_missing(v)]
    return [i for i, v in enumerate(values) if is_missing(v) or _blank(v)]


def labelled_rows(values: Sequence[Any], task: Task, *, where: str,
                  unlabelled: Unlabelled = "refuse") -> list[int] | None:
    """The rows of ``values`` to keep (None: all of them), per ``data.unlabelled``: rows
    without a label are refused (a UserError with their count and rows) or left out."""
    empty = unlabelled_rows(values, task)
    if not empty:
        return None
    n, total = len(empty), len(values)
    what = ("no label (an empty cell, a null or NaN, blank text, or a datasets ClassLabel -1, "
            "its 'no label' value as in GLUE test splits)")
    if n == total:
        raise UserError(
            f"{where} has {what} in every one of its {total} rows: nothing to train or measure "
            "on. Give a labelled split (a test split without labels is for scoring: tlkit "
            "predict RUN --data FILE needs no labels).")
    if unlabelled == "drop":
        gone = set(empty)
        return [i for i in range(total) if i not in gone]
    raise UserError(
        f"{where} is empty in {n} row(s) (data rows {_rows(empty)}) of {total}: {what}. Fill in "
        "those labels or remove the rows, or set data.unlabelled: drop to leave rows without a "
        "label out (their count is logged and kept in summary.json).")


# ---------------------------------------------------------------------------------------------
# What a label cell may hold


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, str):
        if value.strip().lower() in ("true", "false"):
            return "bool text"
        try:
            float(value)
            return "number text"
        except ValueError:
            return "text"
    return "other"


def _check_cells(values: Sequence[Any], task: Task, where: str) -> None:
    """Refuse label cells that are not labels: a list where one label is needed, a dict, bytes
    that are not UTF-8 text, and a column that mixes numbers with names or booleans with
    numbers (a column half encoded: 1 and 'pos', True and 1, would be different classes)."""
    def refuse(i: int, why: str, fix: str) -> NoReturn:
        shown = repr(values[i])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise UserError(f"{where} holds {why} in data row {i + 1} ({shown}); {fix}.")

    for i, v in enumerate(values):
        if is_missing(v):
            continue
        items = list(v) if task == "multi_label" and isinstance(v, (list, tuple, np.ndarray)) \
            else [v]
        for item in items:
            if isinstance(item, bytes):
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError:
                    refuse(i, "bytes that are not UTF-8 text",
                           "labels are names or numbers: decode the column to text first")
            elif isinstance(item, dict):
                refuse(i, "a mapping where a label belongs",
                       "give each label as a name or a number")
            elif isinstance(item, _CONTAINERS):
                if task == "multi_label":
                    refuse(i, "a list inside a list of labels",
                           "give each row one flat list of label names")
                refuse(i, "a list where data.task single_label needs one label per row"
                       if task == "single_label" else "a list where a number belongs",
                       "give one label per row, or set data.task: multi_label for several")
            elif not isinstance(item, (str, numbers.Number, np.generic, datetime.date)):
                refuse(i, f"a {type(item).__name__} where a label belongs",
                       "give each label as a name or a number")
    if task != "single_label":
        return
    first: dict[str, int] = {}
    for i, v in enumerate(values):
        if not is_missing(v):
            first.setdefault(_kind(v), i)
    clash = None
    if "number" in first and "text" in first:
        clash = ("numbers and names", first["number"], first["text"])
    elif "bool" in first and ("number" in first or "number text" in first or "text" in first):
        other = next(k for k in ("number", "number text", "text") if k in first)
        clash = (f"booleans and {'names' if other == 'text' else 'numbers'}", first["bool"],
                 first[other])
    if clash is not None:
        what, a, b = clash
        a, b = sorted((a, b))
        raise UserError(
            f"{where} mixes {what} (data row {a + 1}: {values[a]!r}, data row {b + 1}: "
            f"{values[b]!r}): a column encoded half one way would train them as different "
            "classes; write every label one way (all names, or all numbers) and run again.")


# ---------------------------------------------------------------------------------------------


def _split_labels(value: Any, separator: str) -> list[str]:
    if is_missing(value):
        return []
    if isinstance(value, bytes):
        value = label_name(value)
    if isinstance(value, str):
        return [unicodedata.normalize("NFC", part).strip() for part in value.split(separator)
                if part.strip()]
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
    A row without a label is refused here (``labelled_rows`` is where a source leaves them out).
    """
    values = list(values)
    if not values:
        raise UserError(f"{where} holds no rows; give a data set with examples in it.")
    labelled_rows(values, task, where=where)
    _check_cells(values, task, where)
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
        _check_known([n for labels in label_lists for n in labels], classes, where)
        index = {c: i for i, c in enumerate(classes)}
        multi_hot = np.zeros((len(values), len(classes)), dtype=np.float32)
        for row, labels in enumerate(label_lists):
            multi_hot[row, [index[name] for name in labels]] = 1.0
        return multi_hot, classes

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
    _check_known(labels, classes, where)
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


def _check_known(labels: list[str], classes: list[str], where: str) -> None:
    known = set(classes)
    counts: dict[str, int] = {}
    for name in labels:
        if name not in known:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return
    unknown = sorted(counts)
    shown = ", ".join(f"{u!r} ({counts[u]} row{'s' if counts[u] > 1 else ''})"
                      for u in unknown[:5])
    hints = [h for u in unknown[:5] for h in near_spellings(u, classes)]
    raise UnknownLabels(
        f"{where} holds labels the model was not trained on: {shown}"
        f"{' ...' if len(unknown) > 5 else ''}; known labels are {', '.join(classes[:20])}"
        f"{' ...' if len(classes) > 20 else ''}."
        + (f" Note: {'; '.join(hints)}." if hints else ""),
        unknown, counts, list(classes))
