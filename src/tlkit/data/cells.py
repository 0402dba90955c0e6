"""Input cells: what a text, a sentence pair, an image path or a word of a token file must be,
wherever it comes from: a table's column (CSV, TSV, JSONL, Parquet, and so DataFrames and
``datasets`` given to the API, which become Parquet), the API's lists, the command line, batch
scoring, token files. Every entry point calls the function of its kind, so one policy holds
for all of them, and a cell is never read as its ``repr``.

- **text**: a ``str`` holding something visible, valid Unicode (no lone surrogate; a surrogate
  pair is joined into its character), normalised to NFC (the same at training and prediction;
  tlkit's packaged text sets are NFC already). ``bytes`` are decoded as strict UTF-8 (a
  Parquet ``binary`` column of text reads as its text); bytes that are not UTF-8 are refused.
  None, NaN, ``pd.NA``, ``NaT``, ``""`` and a text of only white space or invisible
  characters (zero-width spaces, control characters) are *missing*. Numbers, booleans, lists,
  tuples, dicts (Parquet structs), arrays, dates and other objects are not texts.
- **pair** (sentence-pair models): exactly two texts: a 2-tuple or 2-list of texts, or one
  string with exactly one ``|||`` between two texts. ``"A ||| B ||| C"``, a one- or
  three-element tuple, and a single text are refused.
- **image path**: a ``str`` or ``os.PathLike`` that is not blank (not NFC-normalised: a file
  system's names are matched byte for byte). Bytes, arrays and dicts (a ``datasets`` Image
  column) are refused: tlkit reads images from files. Whether the file exists and decodes is
  checked where images are read (``on_bad_image``, batch scoring's error rows).
- **word** (token files): a text, as above.

A bad cell raises :class:`BadCell` (the reason, short). Training turns the bad cells of a
column into one ``UserError`` naming the column and the data rows (:func:`column_texts`,
:func:`column_image_paths`); batch scoring and ``run.predict`` make each an error row.
"""

from __future__ import annotations

import math
import os
import reprlib
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tlkit.data.types import PAIR_SEPARATOR, TextPair
from tlkit.errors import UserError

SEPARATOR = PAIR_SEPARATOR.strip()  # '|||'
# Characters that show nothing: white space, control and format characters (zero-width
# space, joiners, the byte-order mark, direction marks). A text of only these is empty.
_INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}
_SHORT = reprlib.Repr()
_SHORT.maxstring = 30
_SHORT.maxother = 30
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4


class BadCell(ValueError):
    """A cell that is not what its kind needs. ``str(self)`` is the reason (short, without the
    row or the column); ``missing`` is True for an empty cell."""

    def __init__(self, reason: str, missing: bool = False) -> None:
        super().__init__(reason)
        self.missing = missing


# --------------------------------------------------------------------------------------------
# one cell


def text_cell(value: Any, what: str = "text") -> str:
    """``value`` as a text (see the module's policy), or :class:`BadCell`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = _decoded(bytes(value), what)
    if isinstance(value, str):
        return _checked_text(str(value), what)
    if _is_missing(value):
        raise BadCell(f"empty {what}", missing=True)
    pair = _is_sequence(value) and len(value) == 2 and all(isinstance(v, str) for v in value)
    raise BadCell(f"not a {what}: {describe(value)}"
                  + ("; a text is one string, not a pair of them" if pair else ""))


def pair_cell(value: Any) -> TextPair:
    """``value`` as a sentence pair: a 2-tuple / 2-list of texts, or ``"first ||| second"``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = _decoded(bytes(value), "sentence pair")
    if isinstance(value, str):
        parts = value.split(SEPARATOR)
        if len(parts) == 1:
            if not _visible(value):
                raise BadCell("empty text", missing=True)
            raise BadCell(f"one text, but the model reads sentence pairs: write the two texts "
                          f"joined by {SEPARATOR!r}, e.g. 'A man sleeps.{PAIR_SEPARATOR}A person "
                          "rests.'")
        if len(parts) > 2:
            raise BadCell(f"{len(parts) - 1} {SEPARATOR!r} separators: a sentence pair is two "
                          f"texts joined by one {SEPARATOR!r}")
        return pair_of(parts[0].strip(), parts[1].strip())
    if _is_sequence(value):
        items = list(value)
        if len(items) != 2:
            raise BadCell(f"a sentence pair is two texts, not {len(items)} "
                          f"({describe(value)})")
        return pair_of(items[0], items[1])
    if _is_missing(value):
        raise BadCell("empty text", missing=True)
    raise BadCell(f"not a sentence pair: {describe(value)}; give two texts")


def pair_of(first: Any, second: Any, names: tuple[str, str] = ("first text", "second text")
            ) -> TextPair:
    """Two cells (two columns of a row, or a pair's two items) as a sentence pair."""
    return text_cell(first, names[0]), text_cell(second, names[1])


def image_cell(value: Any) -> str:
    """``value`` as an image path (a string; not checked to exist), or :class:`BadCell`."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if not value.strip():
            raise BadCell("empty image path", missing=True)
        _check_unicode(value, "image path")
        if "\x00" in value:
            raise BadCell("not an image path: it holds a NUL character, which no file name can")
        return str(value)
    if _is_missing(value):
        raise BadCell("empty image path", missing=True)
    if isinstance(value, dict) or isinstance(value, (bytes, bytearray, memoryview)):
        raise BadCell(f"not an image path: {describe(value)}; tlkit reads images from files: "
                      "save them and give their paths")
    raise BadCell(f"not an image path: {describe(value)}")


def word_cell(value: Any) -> str:
    """A word of a token file: a text (a JSON number or null is not a word)."""
    return text_cell(value, "word")


# --------------------------------------------------------------------------------------------
# a column of a training table: every cell, or one error naming the bad rows


def column_texts(values: Sequence[Any], column: str, where: str) -> list[str]:
    """The texts of a table's text column; any bad cell is a ``UserError`` naming the column
    of ``where`` (a file) and the data rows (counted from 1, the header not counted)."""
    return _column(values, text_cell, column, where, "text",
                   "data.text_column (or data.text_pair_column)")


def column_image_paths(values: Sequence[Any], column: str, where: str) -> list[str]:
    """The image paths of a table's image column, or a ``UserError`` as ``column_texts``."""
    return _column(values, image_cell, column, where, "image path", "data.image_column")


def read_cells(values: Sequence[Any], cell: Callable[[Any], str]
               ) -> tuple[list[str], list[int], list[tuple[int, str]]]:
    """``values`` through ``cell``: the values it read (in order, the bad ones left out), the
    indices of the empty cells, and the other bad cells' indices with the reason."""
    out: list[str] = []
    empty: list[int] = []
    wrong: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        try:
            out.append(cell(v))
        except BadCell as bad:
            (empty.append(i) if bad.missing else wrong.append((i, str(bad))))
    return out, empty, wrong


def _column(values: Sequence[Any], cell: Callable[[Any], str], column: str, where: str,
            what: str, key: str) -> list[str]:
    out, empty, wrong = read_cells(values, cell)
    if wrong:
        shown = "; ".join(f"data row {i + 1}: {why}" for i, why in wrong[:5])
        also = (f"; it is also empty in {len(empty)} row(s) (data rows {_rows(empty)})"
                if empty else "")
        raise UserError(
            f"column {column!r} of {where} holds {len(wrong)} cell(s) that are not "
            f"{what}s ({shown}{' ...' if len(wrong) > 5 else ''}){also}. Each cell must be one "
            f"{what}: fix those rows or remove them, or set {key} to the column that holds "
            f"the {what}s.")
    if empty:
        raise UserError(
            f"column {column!r} of {where} is empty in {len(empty)} row(s) (data rows "
            f"{_rows(empty)}); fill them in or remove those rows.")
    return out


def _rows(indices: list[int]) -> str:
    return ", ".join(str(i + 1) for i in indices[:5]) + (" ..." if len(indices) > 5 else "")


# --------------------------------------------------------------------------------------------


def describe(value: Any) -> str:
    """What a cell is, for a message: its kind and a short view of it."""
    shown = _SHORT.repr(value)
    if isinstance(value, (bool, np.bool_)):
        return f"a boolean ({shown})"
    if isinstance(value, (int, float, complex, np.number)) or type(value).__name__ == "Decimal":
        return f"a number ({shown}); if the number is the text, write it as a string"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"bytes ({_SHORT.repr(bytes(value))})"
    if isinstance(value, dict):
        return f"a dict or struct ({shown})"
    if isinstance(value, (list, tuple, np.ndarray)):
        kind = "a tuple" if isinstance(value, tuple) else "a list"
        items = value.tolist() if isinstance(value, np.ndarray) else value
        n = len(items) if isinstance(items, (list, tuple)) else 1
        return f"{kind} of {n} ({_SHORT.repr(items)})"
    if hasattr(value, "isoformat"):
        return f"a date or time ({value})"
    return f"a {type(value).__name__} ({shown})"


def _checked_text(text: str, what: str) -> str:
    if not _visible(text):
        raise BadCell(f"empty {what}", missing=True)
    text = _check_unicode(text, what)
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _visible(text: str) -> bool:
    """Whether ``text`` holds a character that shows (anything but white space, control and
    format characters); stops at the first one."""
    return any(unicodedata.category(c) not in _INVISIBLE for c in text)


def _check_unicode(text: str, what: str) -> str:
    """``text`` as valid Unicode: surrogate pairs joined into their characters; a lone
    surrogate (from a bad JSON escape, a mis-decoded file) refused."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        at = next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
        raise BadCell(f"{what} holds a lone surrogate (U+{ord(text[at]):04X} at character "
                      f"{at + 1}), which is not valid Unicode; fix the file's encoding or "
                      "remove that character") from None


def _decoded(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadCell(f"bytes that are not UTF-8 text ({_SHORT.repr(data)}: {error.reason} at "
                      f"byte {error.start}); give the {what} as a string, or its UTF-8 "
                      "bytes") from None


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _is_missing(value: Any) -> bool:
    """None, NaN (float or numpy), ``pd.NA``, ``NaT``: an empty cell."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    return type(value).__name__ in ("NAType", "NaTType")
