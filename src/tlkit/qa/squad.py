"""Extractive question answering data: SQuAD-format JSON (v1.1 and v2.0) and JSON lines read
into frozen ``QAExample`` records, every answer checked against its context.

Character positions are Python string indices (Unicode code points) into the context exactly as
the file holds it: the context is never normalized, stripped or re-encoded, so that an
``answer_start`` keeps pointing at its answer. A file that breaks a rule is one ``UserError``
naming the file, the question (its id, or its line), what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tlkit.errors import UserError

Answer = tuple[str, int]  # (text, answer_start): text == context[start:start + len(text)]

SQUAD_FILES = {"train": "squad/train-v1.1.json", "dev": "squad/dev-v1.1.json"}
_FETCH = ".venv/bin/python scripts/fetch_data.py (make setup runs it)"


@dataclass(frozen=True)
class QAExample:
    """One question about one context. ``answers`` holds every gold answer as (text, start)
    (SQuAD's dev set has several per question); it is empty exactly when ``impossible`` (SQuAD
    v2.0's unanswerable questions)."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    impossible: bool


def read_qa(path: str | Path, *, allow_impossible: bool = True, questions_only: bool = False
            ) -> list[QAExample]:
    """The questions of a SQuAD-format JSON file or a JSON lines file. A ``.jsonl`` file is
    JSON lines; any other is told by its content: one JSON value is SQuAD's layout (unless it
    is a single question row), one object a line is JSON lines (``Dataset.to_json`` writes
    those under a ``.json`` name). ``allow_impossible=False`` (SQuAD v1.1) refuses a question
    without an answer instead of marking it impossible. ``questions_only`` (questions to
    answer, ``tlkit predict``) reads no answers: every example has none (``impossible``)."""
    path = Path(path)
    text = _text(path)
    if path.suffix.lower() != ".jsonl":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as error:
            # "Extra data" after a first line that is an object on its own: JSON lines
            if error.msg != "Extra data" or not _first_line_is_object(text):
                raise _not_json(path, error) from None
        else:
            if not (isinstance(whole, dict) and "context" in whole and "data" not in whole):
                return _squad(path, whole, allow_impossible, questions_only)
    return _jsonl(path, text, allow_impossible, questions_only)


def read_squad_json(path: str | Path, *, allow_impossible: bool = True) -> list[QAExample]:
    """The questions of a SQuAD-format JSON file (v1.1 or v2.0): ``data[].paragraphs[]`` with
    ``context`` and ``qas[]`` (``id``, ``question``, ``answers[]`` of ``text`` and
    ``answer_start``, v2.0's ``is_impossible``)."""
    path = Path(path)
    text = _text(path)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as error:
        raise _not_json(path, error) from None
    return _squad(path, whole, allow_impossible)


def read_qa_jsonl(path: str | Path, *, allow_impossible: bool = True) -> list[QAExample]:
    """The questions of a JSON lines file: one object a line with ``context``, ``question``,
    ``answers`` (a list of ``{"text", "answer_start"}`` objects, or Hugging Face datasets'
    ``{"text": [...], "answer_start": [...]}``), and optionally ``id`` and ``is_impossible``.
    Blank lines are skipped; a row without ``id`` is named ``line N``."""
    path = Path(path)
    return _jsonl(path, _text(path), allow_impossible)


def packaged_squad_path(split: Literal["train", "dev"]) -> Path:
    """SQuAD v1.1's ``train`` or ``dev`` file as scripts/fetch_data.py keeps it (the venv's
    share/tlkit-data/squad/, ``TLKIT_DATA`` overrides), found like the other fetched sets."""
    if split not in SQUAD_FILES:
        raise UserError(f"SQuAD's packaged splits are {', '.join(map(repr, SQUAD_FILES))}, "
                        f"not {split!r}")
    # tlkit.data.packaged.data_folder's rule, not imported: tlkit.data reads this package
    folder = Path(os.environ.get("TLKIT_DATA") or Path(sys.prefix) / "share" / "tlkit-data")
    path = folder / SQUAD_FILES[split]
    if not path.is_file():
        raise UserError(f"packaged data set 'squad' is not fetched here ({path} is missing); "
                        f"fetch it with: {_FETCH}")
    return path


# -- reading ----------------------------------------------------------------------------------


def _text(path: Path) -> str:
    """The file as text: UTF-8 (a byte order mark is allowed and dropped)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror}); check the path") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                        "save it as UTF-8 (SQuAD's files are UTF-8 JSON)") from None


def _not_json(path: Path, error: json.JSONDecodeError, where: str = "") -> UserError:
    place = where or f"line {error.lineno}, column {error.colno}"
    return UserError(f"{path}, {place}: not JSON ({error.msg}); a SQuAD file is one JSON "
                     "object with \"data\", a JSON lines file one object a line")


def _squad(path: Path, whole: Any, allow_impossible: bool, questions_only: bool = False
           ) -> list[QAExample]:
    """SQuAD's layout walked article by article, each question named by its id and place."""
    if not isinstance(whole, dict) or not isinstance(whole.get("data"), list):
        got = "an object without \"data\"" if isinstance(whole, dict) else _kind(whole)
        raise UserError(f"{path}: a SQuAD file is a JSON object whose \"data\" is a list of "
                        f"articles, but this is {got}; give SQuAD's layout (data[].paragraphs[]"
                        ".{context, qas}) or one question object a line (JSON lines)")
    examples: list[tuple[QAExample, str]] = []
    for a, article in enumerate(whole["data"]):
        at = f"article {a}"
        paragraphs = _field(article, "paragraphs", list, path, at, "article")
        for p, paragraph in enumerate(paragraphs):
            at = f"article {a}, paragraph {p}"
            context = _text_field(paragraph, "context", path, at, "paragraph")
            qas = _field(paragraph, "qas", list, path, at, "paragraph")
            for q, qa in enumerate(qas):
                at_q = f"{at}, question {q}"
                if isinstance(qa, dict) and isinstance(qa.get("id"), str | int) \
                        and not isinstance(qa.get("id"), bool):
                    at_q = f"question {str(qa['id'])!r} ({at_q})"
                examples.append((_example(qa, context, path, at_q, allow_impossible, None,
                                          questions_only), at_q))
    return _checked(path, examples)


def _jsonl(path: Path, text: str, allow_impossible: bool, questions_only: bool = False
           ) -> list[QAExample]:
    """JSON lines, each row named by its line (and its id where it has one)."""
    examples: list[tuple[QAExample, str]] = []
    for number, line in _lines(text):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise _not_json(path, error, f"line {number}, column {error.colno}") from None
        at = f"line {number}"
        if not isinstance(row, dict):
            raise UserError(f"{path}, {at}: a row is a JSON object with \"context\", "
                            f"\"question\" and \"answers\", not {_kind(row)}")
        if "id" in row and isinstance(row["id"], str | int) and not isinstance(row["id"], bool):
            at = f"{at} (id {str(row['id'])!r})"
        context = _text_field(row, "context", path, at, "row")
        examples.append((_example(row, context, path, at, allow_impossible, f"line {number}",
                                  questions_only), at))
    return _checked(path, examples)


def _first_line_is_object(text: str) -> bool:
    """Whether the first non-blank line is a JSON object on its own (JSON lines, not a
    damaged SQuAD file)."""
    for _, line in _lines(text):
        try:
            return isinstance(json.loads(line), dict)
        except json.JSONDecodeError:
            return False
    return False


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines numbered from 1 (split at line feeds only: a context may hold other
    Unicode line separators inside its JSON string)."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def _example(qa: Any, context: str, path: Path, at: str, allow_impossible: bool,
             default_id: str | None, questions_only: bool = False) -> QAExample:
    """One question checked: its id, question, answers (each inside the context and equal to
    its text there) and ``is_impossible``, which must agree with the answers."""
    what = "question" if default_id is None else "row"
    if not isinstance(qa, dict):
        raise UserError(f"{path}, {at}: a {what} is a JSON object, not {_kind(qa)}")
    if default_id is not None and "id" not in qa:
        qid = default_id
    else:
        raw = qa.get("id")
        if raw is None:
            raise UserError(f"{path}, {at}: the {what} has no \"id\"; give every question a "
                            "unique string id")
        if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw).strip():
            raise UserError(f"{path}, {at}: \"id\" is {_short(raw)}; an id is a non-empty "
                            "string (or an integer)")
        qid = str(raw)
    question = _text_field(qa, "question", path, at, what)
    if questions_only:
        return QAExample(id=qid, question=question, context=context, answers=(),
                         impossible=True)
    impossible_flag = qa.get("is_impossible")
    if impossible_flag is not None and not isinstance(impossible_flag, bool):
        raise UserError(f"{path}, {at}: \"is_impossible\" is {_short(impossible_flag)}; it is "
                        "true or false (or left out)")
    if "answers" not in qa:
        if impossible_flag:
            answers: tuple[Answer, ...] = ()
        else:
            raise UserError(f"{path}, {at}: the {what} has no \"answers\"; give a list of "
                            "{\"text\", \"answer_start\"} objects ([] with \"is_impossible\": "
                            "true for an unanswerable question)")
    else:
        answers = _answers(qa["answers"], context, path, at)
    if impossible_flag and answers:
        raise UserError(f"{path}, {at}: \"is_impossible\" is true but the question has "
                        f"{len(answers)} answer(s); remove the answers (SQuAD v2.0 keeps them "
                        "under \"plausible_answers\") or set \"is_impossible\" to false")
    if not answers and impossible_flag is False:
        raise UserError(f"{path}, {at}: \"is_impossible\" is false but \"answers\" is empty; "
                        "give the answer, or set \"is_impossible\" to true")
    if not answers and not allow_impossible:
        raise UserError(f"{path}, {at}: the question has no answer, and unanswerable "
                        "questions (SQuAD v2.0) are not allowed here; give at least one "
                        "answer, or use a v2.0 setting")
    return QAExample(id=qid, question=question, context=context, answers=answers,
                     impossible=not answers)


def _answers(raw: Any, context: str, path: Path, at: str) -> tuple[Answer, ...]:
    """The answers in either spelling: a list of {text, answer_start} objects, or Hugging Face
    datasets' {"text": [...], "answer_start": [...]} (two lists of one length)."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        texts, starts = raw.get("text"), raw.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) \
                or len(texts) != len(starts):
            raise UserError(f"{path}, {at}: \"answers\" is an object, so it must hold two lists "
                            "of one length, \"text\" and \"answer_start\" (Hugging Face "
                            f"datasets' form); it has text {_short(texts)} and answer_start "
                            f"{_short(starts)}")
        pairs = list(zip(texts, starts, strict=True))
    elif isinstance(raw, list):
        for n, answer in enumerate(raw):
            if not isinstance(answer, dict) or "text" not in answer \
                    or "answer_start" not in answer:
                raise UserError(f"{path}, {at}: answer {n} is {_short(answer)}; an answer is "
                                "an object with \"text\" and \"answer_start\"")
            pairs.append((answer["text"], answer["answer_start"]))
    else:
        raise UserError(f"{path}, {at}: \"answers\" is {_kind(raw)}; give a list of "
                        "{\"text\", \"answer_start\"} objects (or {\"text\": [...], "
                        "\"answer_start\": [...]})")
    answers = []
    for n, (text, start) in enumerate(pairs):
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}, {at}: answer {n}'s text is {_short(text)}; it must be a "
                            "non-empty string (an unanswerable question has no answers)")
        if isinstance(start, bool) or not isinstance(start, int):
            raise UserError(f"{path}, {at}: answer {n}'s answer_start is {_short(start)}; it is "
                            "an integer, the character where the answer starts in the context "
                            "(counted from 0)")
        _unicode(text, path, at, f"answer {n}'s text")
        end = start + len(text)
        if start < 0 or end > len(context):
            raise UserError(f"{path}, {at}: answer {n} ({_short(text)}) starts at character "
                            f"{start} and would end at {end}, outside the context (0 to "
                            f"{len(context)} characters); answer_start counts characters "
                            "(code points) of the context from 0")
        found = context[start:end]
        if found != text:
            hint = ""
            where = context.find(text)
            if where >= 0:
                hint = f" (the text occurs at character {where})"
            raise UserError(f"{path}, {at}: answer {n}'s text is {_short(text)} but the context "
                            f"at answer_start {start} holds {_short(found)}{hint}; fix "
                            "answer_start (characters, not bytes, from 0) or the text")
        answers.append((text, start))
    return tuple(answers)


def _checked(path: Path, examples: Sequence[tuple[QAExample, str]]) -> list[QAExample]:
    """The examples (each with where it is in the file), refused when there are none or when
    two share an id."""
    if not examples:
        raise UserError(f"{path} holds no questions; give at least one")
    seen: dict[str, str] = {}
    for example, at in examples:
        if example.id in seen:
            raise UserError(f"{path}: the id {example.id!r} is used twice, at {seen[example.id]} "
                            f"and at {at}; every question needs its own id")
        seen[example.id] = at
    return [example for example, _ in examples]


# -- small checks ------------------------------------------------------------------------------


def _field(obj: Any, key: str, kind: type, path: Path, at: str, what: str) -> Any:
    if not isinstance(obj, dict):
        raise UserError(f"{path}, {at}: a {what} is a JSON object, not {_kind(obj)}")
    if key not in obj:
        raise UserError(f"{path}, {at}: the {what} has no \"{key}\"; SQuAD's layout is "
                        "data[].paragraphs[].{context, qas[].{id, question, answers}}")
    value = obj[key]
    if not isinstance(value, kind):
        raise UserError(f"{path}, {at}: \"{key}\" is {_kind(value)}, but must be "
                        f"{_KINDS.get(kind, kind.__name__)}")
    return value


def _text_field(obj: Any, key: str, path: Path, at: str, what: str) -> str:
    value: str = _field(obj, key, str, path, at, what)
    if not value.strip():
        raise UserError(f"{path}, {at}: \"{key}\" is empty; give the {key} text")
    _unicode(value, path, at, f"\"{key}\"")
    return value


def _unicode(text: str, path: Path, at: str, what: str) -> None:
    """Refuse a lone surrogate (a bad ``\\ud800``-style JSON escape): no tokenizer reads it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UserError(f"{path}, {at}: {what} holds a lone surrogate (U+"
                        f"{ord(text[error.start]):04X} at character {error.start}), which is not "
                        "valid Unicode; fix the file's \\u escapes") from None


_KINDS: dict[type, str] = {list: "a list", str: "a string", dict: "an object"}


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"),
                       (str, "a string"), (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    """A value as it would be quoted in a message, cut to ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                                  default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."
