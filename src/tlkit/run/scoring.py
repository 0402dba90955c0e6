"""Batch scoring: a trained run's predictions for inputs that have no labels, streamed.

``tlkit predict RUN --data FILE_OR_FOLDER --out preds.csv|.jsonl|.parquet`` reads a table (CSV,
TSV, JSONL, Parquet: the text column, or a column of image paths, by the run's own column
settings) or a folder of images in chunks of ``CHUNK`` rows, scores each chunk in batches and
writes each chunk's rows before reading the next, so memory stays flat however long the file.
Each output row has an id (the table's ``id`` column where it has one, else the data row number
counted from 1; an image's path relative to the folder), the label and every class's
probability.

Probabilities are calibrated: a single-label run's logits are divided by the temperature fitted
on its validation split (Guo et al., 2017; ``summary.json`` ``scoring``), and a multi-label run
decides each class at the threshold tuned on validation to maximise that class's F1.
``calibrated=False`` scores with the raw logits and 0.5.

A row that cannot be scored (an empty text, an image that does not decode) is written with its
id and the reason in ``error``, and counted; it does not stop the others.

Over 450 lines on purpose: reading the inputs, scoring, calibration and the writers of three
formats are one stream, each row's path through it readable in one file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from tlkit.data import build_collate, build_dataset
from tlkit.data.cells import BadCell, image_cell, pair_cell, pair_of, text_cell
from tlkit.data.images import IMAGE_EXTENSIONS
from tlkit.data.sources import IMAGE_COLUMNS, TEXT_COLUMNS, jsonl_error, table_format
from tlkit.data.types import PAIR_SEPARATOR, LabelledData, Modality, Task, is_pair
from tlkit.device import autocast
from tlkit.errors import UserError
from tlkit.metrics import probabilities
from tlkit.tensors import to_device

CHUNK = 2048  # rows read, scored and written at a time
OUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
ID_COLUMNS = ("id",)


@dataclass(frozen=True)
class Calibration:
    """What turns a run's outputs into calibrated probabilities and labels."""

    temperature: float = 1.0  # single-label: logits / temperature before the softmax
    thresholds: tuple[float, ...] | None = None  # multi-label: one per class (else 0.5)

    @staticmethod
    def of(summary: dict[str, Any], calibrated: bool) -> Calibration:
        """The calibration in a run's summary (``tlkit.summary_json.read_summary``); none when
        not ``calibrated`` or where fit fitted none (regression, no validation split). A
        ``scoring`` section that is not what fit writes is a UserError, never raw
        probabilities without a word."""
        if not calibrated or summary.get("scoring") is None:
            return Calibration()
        from tlkit.summary_json import Scoring

        try:
            s = Scoring.model_validate(summary["scoring"])
        except ValueError as e:  # pydantic's ValidationError
            why = str(e).strip().splitlines()[-1].strip()[:200]
            raise UserError(f"summary.json's scoring section is damaged ({why}); restore the "
                            "run's summary.json, or score uncalibrated with --no-calibration "
                            "(calibrated=False)") from None
        return Calibration(s.temperature if s.temperature is not None else 1.0,
                           tuple(s.thresholds) if s.thresholds is not None else None)


@dataclass
class Scored:
    """What a scoring pass did: rows written, rows that could not be scored (id, reason)."""

    rows: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# reading: chunks of (id, input or None, reason it cannot be scored or None)
# --------------------------------------------------------------------------------------------------

Row = tuple[Any, Any, str | None]


def read_chunks(path: Path, kind: str, text_column: str | None, image_column: str | None,
                chunk: int = CHUNK, pair_column: str | None = None) -> Iterator[list[Row]]:
    """The inputs of ``path`` (a table or a folder of images) in chunks, in file order; with
    ``pair_column`` (a sentence-pair model) each input is the pair of the two columns. Every
    cell goes through ``tlkit.data.cells`` (as training's do): one that is not an input of
    the model's kind is a row with its reason, never its ``repr``."""
    if path.is_dir():
        if kind != "image":
            raise UserError(f"{path} is a folder; the model takes text: give a CSV, JSONL or "
                            "Parquet file with a text column")
        yield from _folder_chunks(path, chunk)
        return
    if not path.is_file():
        raise UserError(f"--data {path} is neither a file nor a folder; give a table of inputs "
                        "or a folder of images")
    fmt = table_format(path)
    first = True
    row = 0
    column = id_column = second = None
    for frame in _frames(path, fmt, chunk):
        if first:
            column = _input_column(list(frame.columns), kind, text_column, image_column, path)
            second = (_input_column(list(frame.columns), "pair", pair_column, None, path)
                      if pair_column else None)
            if second is not None and second == column:
                raise UserError(f"the model reads pairs of two columns, but both are {column!r} "
                                f"in {path}; give the second text in its own column")
            id_column = next((c for c in frame.columns if str(c).lower() in ID_COLUMNS), None)
            first = False
        values = frame[column].tolist()
        seconds = frame[second].tolist() if second is not None else None
        ids = frame[id_column].tolist() if id_column is not None else None
        out: list[Row] = []
        for i, v in enumerate(values):
            rid = str(ids[i]) if ids is not None else str(row + i + 1)
            try:
                item: Any = (pair_of(v, seconds[i], ("text", f"second text ({second})"))
                             if seconds is not None else input_item(v, kind, False, path.parent))
            except BadCell as bad:
                out.append((rid, None, str(bad)))
                continue
            out.append((rid, item, None))
        row += len(values)
        yield out


def input_item(value: Any, kind: str, pairs: bool, base: Path | None = None) -> Any:
    """One input cell as the model of ``kind`` reads it: a text, a sentence pair (``pairs``),
    or an existing image file (a relative path is relative to ``base``, else to the current
    folder); :class:`tlkit.data.cells.BadCell` with the reason otherwise."""
    if kind == "image":
        p = Path(image_cell(value)).expanduser()
        p = p if p.is_absolute() or base is None else base / p
        try:
            found = p.is_file()
        except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte
            raise BadCell(f"not an image file's path ({getattr(e, 'strerror', None) or e})"
                          ) from None
        if not found:
            raise BadCell(f"no such image file: {p}")
        return p
    return pair_cell(value) if pairs else text_cell(value)


def input_rows(values: Sequence[Any], kind: str, pairs: bool) -> list[Row]:
    """Rows of inputs given as values (the API's list, the command line's arguments), each
    named by what the model read (the text, the pair written ``first ||| second``, the path),
    or, for one that cannot be read, by the value as given, with the reason."""
    out: list[Row] = []
    for v in values:
        try:
            item = input_item(v, kind, pairs)
        except BadCell as bad:
            out.append((_as_given(v), None, str(bad)))
            continue
        shown = (PAIR_SEPARATOR.join(item) if is_pair(item) else
                 str(v) if kind == "image" else item)
        out.append((shown, item, None))
    return out


def _as_given(value: Any) -> Any:
    """A value that cannot be read, as its row names it: itself, but a string that is not
    valid Unicode (a lone surrogate) with that character escaped, so that any table can hold
    it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _frames(path: Path, fmt: str, chunk: int) -> Iterator[Any]:
    import pandas as pd

    try:
        if fmt in ("csv", "tsv"):
            yield from pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                                   keep_default_na=False, na_values=[""], chunksize=chunk)
        elif fmt == "jsonl":
            yield from pd.read_json(path, lines=True, dtype=False, chunksize=chunk)
        else:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
                yield batch.to_pandas()
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - every parser has its own error types
        if fmt == "jsonl":  # pandas names a byte offset within the chunk; say the file's line
            raise UserError(jsonl_error(path, error)) from None
        raise UserError(f"cannot read {path} as {fmt.upper()} ({error}); fix the file or "
                        "convert it") from None


def _input_column(columns: list[Any], kind: str, text_column: str | None,
                  image_column: str | None, path: Path) -> Any:
    named = image_column if kind == "image" else text_column
    wanted = (named,) if named else (IMAGE_COLUMNS if kind == "image" else TEXT_COLUMNS)
    for name in wanted:
        hits = [c for c in columns if str(c).lower() == str(name).lower()]
        if hits:
            return hits[0]
    shown = ", ".join(map(str, columns[:30])) or "(none)"
    key = {"text": "data.text_column", "image": "data.image_column",
           "pair": "data.text_pair_column"}[kind]
    what = {"text": "text", "image": "image path", "pair": "second text"}[kind]
    raise UserError(f"{path} has no {what} column (looked "
                    f"for {', '.join(map(str, wanted))}); its columns are: {shown}. Name the "
                    f"column {wanted[0]!r}, or fit with {key} set to the one you use")


def _folder_chunks(root: Path, chunk: int) -> Iterator[list[Row]]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"{root} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    for i in range(0, len(files), chunk):
        yield [(str(p.relative_to(root)), p, None) for p in files[i:i + chunk]]


# --------------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------------


def score_chunk(saved: Any, rows: list[Row], cal: Calibration, batch_size: int,
                device: torch.device, mixed_precision: bool, key: str = "id"
                ) -> list[dict[str, Any]]:
    """One output record per row, in the rows' order, each named by its row's id under
    ``key``; a row that cannot be scored is a record with its ``error``."""
    kind = saved.preprocessing.kind
    good = [i for i, r in enumerate(rows) if r[2] is None]
    if kind == "text":  # batches of like length pad little; the order is restored below
        good.sort(key=lambda i: text_length(rows[i][1]))
    data = _unlabelled([rows[i][1] for i in good], saved, kind)
    ds = build_dataset(data, saved.preprocessing)
    collate: Any = build_collate(saved.preprocessing)
    out: dict[int, dict[str, Any]] = {}
    was_training = saved.model.training
    saved.model.eval()
    for start in range(0, len(good), batch_size):
        items: list[Any] = []
        kept: list[int] = []
        for j in range(start, min(start + batch_size, len(good))):
            try:
                items.append(ds[j])
                kept.append(good[j])
            except Exception as error:  # noqa: BLE001 - any decoder's failure: the row's error
                why = str(error) if isinstance(error, UserError) else \
                    f"{type(error).__name__}: {error}"
                out[good[j]] = _error_record(rows[good[j]][0], why, key)
        if not items:
            continue
        inputs, _ = collate(items)
        with torch.inference_mode(), autocast(device, mixed_precision):
            logits = saved.model(to_device(inputs, device)).float().cpu().numpy()
        for i, record in zip(kept, records(logits, saved.task, saved.classes, cal,
                                           [rows[i][0] for i in kept], key)):
            out[i] = record
    saved.model.train(was_training)
    for i, r in enumerate(rows):
        if r[2] is not None:
            out[i] = _error_record(r[0], r[2], key)
    return [out[i] for i in range(len(rows))]


def text_length(item: Any) -> int:
    """Characters of a text or of both texts of a pair (what batches of like length sort by)."""
    return len(item[0]) + len(item[1]) if is_pair(item) else len(item)


def _unlabelled(inputs: list[Any], saved: Any, kind: str) -> LabelledData:
    n, n_out = len(inputs), len(saved.classes) if saved.classes else 1
    dummy = (np.zeros(n, dtype=np.int64) if saved.task == "single_label"
             else np.zeros((n, n_out), dtype=np.float32))
    return LabelledData(name="inputs", modality=cast(Modality, kind),
                        task=cast(Task, saved.task), inputs=inputs, targets=dummy,
                        classes=saved.classes)


def records(outputs: np.ndarray, task: str, classes: list[str] | None, cal: Calibration,
            ids: Sequence[Any], key: str = "id") -> list[dict[str, Any]]:
    """Output records of a batch of model outputs: label(s) and probabilities, calibrated."""
    names = classes or []
    if task == "single_label":
        probs = probabilities(outputs / cal.temperature, task)
        return [{key: ids[i], "label": names[int(p.argmax())],
                 "probabilities": {c: round(float(v), 6) for c, v in zip(names, p)}}
                for i, p in enumerate(probs)]
    if task == "multi_label":
        probs = probabilities(outputs, task)
        t = np.asarray(cal.thresholds if cal.thresholds is not None else [0.5] * len(names))
        return [{key: ids[i], "labels": [c for c, v, th in zip(names, p, t) if v >= th],
                 "probabilities": {c: round(float(v), 6) for c, v in zip(names, p)}}
                for i, p in enumerate(probs)]
    return [{key: ids[i], "value": [float(v) for v in np.atleast_1d(o)]}
            for i, o in enumerate(outputs)]


def _error_record(rid: Any, reason: str, key: str = "id") -> dict[str, Any]:
    return {key: rid, "error": reason}


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def out_format(path: Path) -> str:
    fmt = OUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"--out {path}: tlkit writes predictions as .csv, .jsonl or .parquet; "
                        "give a file name with one of those endings")
    return fmt


def open_out(path: Path, fmt: str) -> Any:
    """The file a Writer of ``fmt`` writes to: binary for Parquet, text (csv's newlines) else."""
    if fmt == "parquet":
        return open(path, "wb")
    return open(path, "w", encoding="utf-8", newline="")


def check_out_file(path: Path, *, inputs: Sequence[Path] = (), own: Path | None = None,
                   overwrite: bool = False) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written: a folder, or a file in a
    folder that does not exist or is not writable; and, by the output rule
    (``tlkit.outputs.check_output``), one of ``inputs`` (the --data file, the run), a file
    inside a run directory (``own``, the run predicting, takes new files), or an existing file
    (predictions carry no mark of tlkit's: replaced only with ``overwrite``)."""
    import os

    from tlkit.outputs import check_output

    check_output(path, "predictions", inputs=inputs, own=own, overwrite=overwrite)
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file name ending in .csv, .jsonl or "
                        ".parquet")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--out {path}: the folder {parent} does not exist; create it or write "
                        "elsewhere")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--out {path} cannot be written (permission denied); choose a "
                        "writable place")


class Writer:
    """Records appended a chunk at a time to a CSV, JSON-lines or Parquet stream. CSV and
    Parquet take one column per class (``p_<class>``), JSONL a ``probabilities`` object."""

    def __init__(self, stream: Any, fmt: str, task: str, classes: list[str] | None) -> None:
        self.stream, self.fmt, self.task = stream, fmt, task
        self.classes = classes or []
        self._csv: Any = None
        self._parquet: Any = None

    def columns(self, width: int) -> list[str]:
        if self.task == "regression":
            return ["id", *(["value"] if width == 1 else [f"value_{k}" for k in range(width)]),
                    "error"]
        label = "label" if self.task == "single_label" else "labels"
        return ["id", label, *(f"p_{c}" for c in self.classes), "error"]

    def flat(self, r: dict[str, Any], width: int) -> list[Any]:
        if "error" in r:
            return [r["id"], *([None] * (len(self.columns(width)) - 2)), r["error"]]
        if self.task == "regression":
            return [r["id"], *r["value"], None]
        label = r["label"] if self.task == "single_label" else "|".join(r["labels"])
        return [r["id"], label, *(r["probabilities"][c] for c in self.classes), None]

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.fmt == "jsonl":
            self.stream.write("".join(json.dumps(r) + "\n" for r in rows))
            return
        width = next((len(r["value"]) for r in rows if "value" in r), 1)
        table = [self.flat(r, width) for r in rows]
        if self.fmt == "csv":
            if self._csv is None:
                self._csv = csv.writer(self.stream)
                self._csv.writerow(self.columns(width))
            self._csv.writerows(table)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = self.columns(width)
        cols = {n: [row[k] for row in table] for k, n in enumerate(names)}
        if self._parquet is None:
            fields = [pa.field(n, pa.string() if n in ("id", "label", "labels", "error")
                               else pa.float64()) for n in names]
            self._parquet = pq.ParquetWriter(self.stream, pa.schema(fields))
        schema = self._parquet.schema
        self._parquet.write_table(pa.table(
            {n: pa.array([None if v is None else (str(v) if schema.field(n).type == pa.string()
                                                  else float(v)) for v in cols[n]],
                         type=schema.field(n).type) for n in names}, schema=schema))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.fmt == "parquet":  # nothing was scored: an empty table with the columns
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({n: pa.array([], pa.string())
                                     for n in self.columns(1)}), self.stream)


def score_file(saved: Any, path: Path, writer: Writer, cal: Calibration,
               text_column: str | None, image_column: str | None, batch_size: int,
               device: torch.device, mixed_precision: bool,
               progress: Callable[[int], None] | None = None,
               pair_column: str | None = None) -> Scored:
    """Stream ``path`` through the model into ``writer``, a chunk at a time."""
    done = Scored()
    for rows in read_chunks(path, saved.preprocessing.kind, text_column, image_column,
                            pair_column=pair_column):
        recs = score_chunk(saved, rows, cal, batch_size, device, mixed_precision)
        writer.write(recs)
        done.rows += len(recs)
        done.errors += [(r["id"], r["error"]) for r in recs if "error" in r]
        if progress is not None:
            progress(len(recs))
    return done


def frame_of(rows: list[dict[str, Any]], pd: Any) -> Any:
    """Prediction records as a pandas DataFrame: input (or id), label(s), one ``p_<class>``
    column per class (or the values of a regression)."""
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("probabilities", "value", "labels")}
        if "labels" in r:
            row["labels"] = list(r["labels"])
        for c, p in (r.get("probabilities") or {}).items():
            row[f"p_{c}"] = p
        values = r.get("value")
        if values is not None:
            row.update({"value": values[0]} if len(values) == 1 else
                       {f"value_{k}": v for k, v in enumerate(values)})
        flat.append(row)
    return pd.DataFrame(flat)
