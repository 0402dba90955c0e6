"""Where examples come from: a packaged set by name, a folder of class subfolders, or a table.

``load_source`` turns ``data.source`` into one ``LabelledData``: inputs (texts, image paths or
arrays, decoded later), encoded targets, sorted class names, the set's own test split if any, and
the count of images dropped as unreadable. Unreadable images are found here, before splitting, so
no split ever holds a file that fails halfway through training.

Over 450 lines on purpose: each reader (packaged set, folder, CSV / TSV / JSONL / Parquet,
DataFrame, datasets) is short, and they are kept together because they share the column and
label checks, so every format is refused and named the same way.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from tlkit.data.cells import column_image_paths, column_texts
from tlkit.data.images import IMAGE_EXTENSIONS, drop_bad_images, is_image_file
from tlkit.data.packaged import is_packaged, load_packaged, packaged_info, packaged_names
from tlkit.data.targets import (UnknownLabels, encode_targets, is_missing, labelled_rows,
                                near_spellings)
from tlkit.data.types import DataSettings, LabelledData, Modality
from tlkit.errors import UserError

# Default column names, tried in order when the config leaves a column unnamed.
TEXT_COLUMNS = ("text", "sentence", "review", "content")
IMAGE_COLUMNS = ("image", "path", "file", "filename")
LABEL_COLUMNS = ("label", "labels", "target", "class", "y")

TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SEPARATORS = {"csv": ",", "tsv": "\t"}
# pandas reads these compressed forms of csv / tsv / jsonl directly.
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")

SourceKind = Literal["packaged", "folder", "table"]


def load_source(cfg: DataSettings, classes: list[str] | None = None) -> LabelledData:
    """Load ``cfg.source`` for ``cfg.task``.

    Given ``classes`` (a trained model's labels, for evaluation or prediction), labels are encoded
    onto them, a label outside them is an error, and a set holding one class is allowed.
    """
    if cfg.task == "token_classification":
        data = _load_tokens(cfg, classes)
        return data if classes is not None else with_given_splits(data, cfg)
    if cfg.task == "question_answering":
        data = _load_answers(cfg)
        return data if classes is not None else with_given_splits(data, cfg)
    kind, where = resolve_source(cfg.source)
    _check_group_source(cfg, kind)
    if kind == "packaged":
        _check_packaged_task(str(where), cfg.task)
        data = load_packaged(str(where))
        data = data if classes is None else _onto_classes(data, classes)
    elif kind == "folder":
        data = _load_folder(Path(where), cfg, classes)
    else:
        data = _load_table(Path(where), cfg, classes)
    return data if classes is not None else with_given_splits(data, cfg)


def with_given_splits(data: LabelledData, cfg: DataSettings) -> LabelledData:
    """``data`` with the user's own validation and test sets (``data.validation``,
    ``data.test``: files or folders read with the same column settings) in place of the cuts
    of the fractions (``load_given``)."""
    given = {k: getattr(cfg, k, None) for k in ("validation", "test")}
    loaded = {split: load_given(cfg, f"data.{split}", source, data, str(cfg.source))
              for split, source in given.items() if source is not None}
    if not loaded:
        return data
    if "validation" in loaded:  # else a packaged set's own validation split stays
        data.val = loaded["validation"]
    if "test" in loaded:
        data.test = loaded["test"]
    return data


def load_given(cfg: DataSettings, key: str, source: str, train: LabelledData,
               train_source: str) -> LabelledData:
    """The set the config key ``key`` names (``data.validation``, ``data.test``,
    ``adaptation.target.test``): ``source`` read with ``cfg``'s column settings onto the
    training classes. A single-label set whose labels include classes the training source
    lacks is refused, naming the file, the classes and their near-spellings among the training
    classes ('Fresh' for 'fresh'): a model cannot learn a class it never trains on. So is a set
    of another kind (text for images)."""
    try:
        loaded = load_source(_same_settings(cfg, source), train.classes)
    except UnknownLabels as error:
        raise UserError(_not_in_training(key, source, train_source, error)) from None
    except UserError as error:
        raise UserError(_keyed(str(error), key, source)) from None
    if loaded.modality != train.modality:
        raise UserError(f"{key} {source} is {loaded.modality} data but data.source is "
                        f"{train.modality}; give a {key.rsplit('.', 1)[-1]} set of the same "
                        "kind")
    return loaded


# The keys a reader's message may name for the file it reads: its column settings. A given set
# is read as a source of its own (load_source names it data.source), so its messages are
# renamed to the keys that gave it: its file's key, its section's column keys.
_COLUMN_KEYS = ("text_column", "text_pair_column", "image_column", "label_column",
                "group_column", "label_separator", "unlabelled", "on_bad_image")


def _keyed(message: str, key: str, source: str) -> str:
    """``message``, from reading ``source`` as a source, naming ``key`` (and the keys of its
    section) as the user wrote them."""
    message = message.replace(f"data.source {source!r}", f"{key} {source!r}")
    message = message.replace(f"data.source {source}", f"{key} {source}")
    section = key.rsplit(".", 1)[0]
    if section != "data":
        for column in _COLUMN_KEYS:
            message = message.replace(f"data.{column}", f"{section}.{column}")
    return message


def _not_in_training(key: str, source: str, train: str, error: UnknownLabels) -> str:
    """Why a validation or test set holding classes the training source lacks is refused."""
    what = "label" if len(error.unknown) == 1 else "labels"
    shown = ", ".join(f"{u!r} ({error.counts[u]} row{'s' if error.counts[u] > 1 else ''})"
                      for u in error.unknown[:5]) + (" ..." if len(error.unknown) > 5 else "")
    hints = [h for u in error.unknown[:5] for h in near_spellings(u, error.classes)]
    known = ", ".join(map(repr, error.classes[:20])) + (" ..." if len(error.classes) > 20 else "")
    return (f"{key} {source} holds the {what} {shown}, which the training source "
            f"(data.source {train}) does not have: a model cannot learn a class it has no "
            f"training examples of, and every such row would count as wrong. "
            + (f"Note: {'; '.join(hints)}. Write each class one way in both files, or "
               if hints else "Either ")
            + f"add training examples of it to data.source, or remove those rows from "
            f"{key}. The training classes are: {known}.")


def _same_settings(cfg: DataSettings, source: str) -> DataSettings:
    """``cfg`` reading ``source`` instead (validated again where it is the config's own)."""
    changes = {"source": source, "validation": None, "test": None}
    model: Any = cfg
    if hasattr(model, "model_dump"):  # the config's DataConfig: checked like the user's
        return cast(DataSettings, type(model).model_validate({**model.model_dump(), **changes}))
    return cast(DataSettings, SimpleNamespace(**{**vars(model), **changes}))


def num_outputs(cfg: DataSettings) -> int:
    """Width of the head ``cfg`` needs, without decoding any example (used by ``tlkit plan``)."""
    if cfg.task == "regression":
        return 1
    if cfg.task == "token_classification":
        return len(_load_tokens(cfg, None).classes or [])
    if cfg.task == "question_answering":
        return 2  # a start and an end logit per token
    kind, where = resolve_source(cfg.source)
    _check_group_source(cfg, kind)
    if kind == "packaged":
        _check_packaged_task(str(where), cfg.task)
        return packaged_info(str(where)).num_classes
    if kind == "folder":
        _check_folder_task(Path(where), cfg.task)
        return len(_list_folder(Path(where)))
    path = Path(where)
    frame, label = _read_table(path, cfg, label_only=True)
    frame, _ = _labelled(frame, label, cfg, path)
    _, found = encode_targets(
        frame[label].tolist(), cfg.task, where=f"column {label!r} of {path}", separator=cfg.label_separator
    )
    return len(found or [])


def has_test_split(cfg: DataSettings) -> bool:
    """Whether a run of ``cfg`` has a test split: the user's, the set's own, or a cut."""
    if getattr(cfg, "test", None) is not None or cfg.test_fraction > 0:
        return True
    return is_packaged(cfg.source) and packaged_info(cfg.source).test_size is not None


def resolve_source(source: str) -> tuple[SourceKind, str | Path]:
    """What ``source`` names: a packaged set (its name wins over a same-named folder; write
    ``./name`` for the folder), an existing folder, or an existing table file."""
    if is_packaged(source):
        return "packaged", source
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file():
        table_format(path)  # refuses an unsupported file type now, not after loading
        return "table", path
    if _looks_like_path(source):
        hint = _closest_sibling(path)
        raise UserError(
            f"data.source {source!r}: no such file or folder"
            + (f"; did you mean {hint}?" if hint else f" (relative paths start at {Path.cwd()}).")
        )
    close = difflib.get_close_matches(source, packaged_names(), n=1)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(
        f"data.source {source!r} is neither a packaged data set nor an existing path; {suggestion}"
        f"packaged sets: {', '.join(packaged_names())} (see `tlkit datasets`)."
    )


def _looks_like_path(source: str) -> bool:
    suffixes = "".join(Path(source).suffixes).lower()
    return (
        "/" in source
        or "\\" in source
        or source.startswith((".", "~"))
        or any(suffixes.startswith(s) for s in TABLE_FORMATS)
        or Path(source).suffix.lower() in IMAGE_EXTENSIONS
    )


def _closest_sibling(path: Path) -> str | None:
    parent = path.parent
    if not parent.is_dir():
        return None
    close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=1)
    return str(parent / close[0]) if close else None


def group_column_of(cfg: DataSettings) -> str | None:
    """``data.group_column``; settings objects without the attribute have none."""
    return getattr(cfg, "group_column", None) or None


def pair_column_of(cfg: DataSettings) -> str | None:
    """``data.text_pair_column``; settings objects without the attribute have none."""
    return getattr(cfg, "text_pair_column", None) or None


def _check_group_source(cfg: DataSettings, kind: SourceKind) -> None:
    """The columns only a table has (data.text_pair_column, data.group_column) refused, with
    the fix, for a packaged set or a folder."""
    if kind == "table":
        return
    what = "a packaged data set" if kind == "packaged" else "a folder of class subfolders"
    for key, name, fix in (
            ("text_pair_column", pair_column_of(cfg),
             "(a packaged pair set gives its pairs itself) or give a table with both texts"),
            ("group_column", group_column_of(cfg), "or give a table whose rows name their "
             "subgroup")):
        if name is not None:
            raise UserError(
                f"data.{key} {name!r} needs a CSV / JSONL / Parquet source with that column, "
                f"but data.source {cfg.source!r} is {what}; remove data.{key} {fix}.")


def _check_packaged_task(name: str, task: str) -> None:
    own = packaged_info(name).task
    if task != own:
        what = {"single_label": "one class per example",
                "regression": "a score per example (a regression target)",
                "question_answering": "questions answered by a span of their context",
                }.get(own, "one tag per word (named entities)")
        raise UserError(f"packaged data set {name!r} has {what}; set data.task: {own}.")


def _load_tokens(cfg: DataSettings, classes: list[str] | None) -> LabelledData:
    """A token-classification source: a packaged set, or a CoNLL / JSON-lines file (the
    columns of a table do not apply)."""
    from tlkit.data.tokens import TOKEN_FILE_SUFFIXES, read_sentences, to_labelled

    for key in ("text_column", "text_pair_column", "image_column", "label_column",
                "group_column"):
        if getattr(cfg, key, None):
            raise UserError(f"data.{key} does not apply to data.task: token_classification, "
                            "whose files give each word and its tag (CoNLL lines, or JSON "
                            "lines with tokens and tags); remove data.{key}")
    if is_packaged(cfg.source):
        _check_packaged_task(cfg.source, cfg.task)
        data = load_packaged(cfg.source)
        if classes is not None and data.classes != classes:
            sentences = [(w, [data.classes[t] for t in y])  # type: ignore[index]
                         for w, y in zip(data.inputs, data.targets, strict=True)]
            data = to_labelled(data.name, sentences, classes)  # type: ignore[arg-type]
        return data
    path = Path(cfg.source).expanduser()
    if path.is_dir() or path.suffix.lower() not in TOKEN_FILE_SUFFIXES:
        raise UserError(
            f"data.source {cfg.source!r}: data.task token_classification reads a CoNLL file "
            f"({', '.join(s for s in TOKEN_FILE_SUFFIXES if s not in ('.jsonl', '.ndjson'))}: "
            "one word and its tag per line, a blank line between sentences), JSON lines "
            "(.jsonl: tokens and tags per line) or a packaged token set "
            f"({', '.join(n for n in packaged_names() if packaged_info(n).task == cfg.task)})")
    return to_labelled(str(cfg.source), read_sentences(path), classes)


def _load_answers(cfg: DataSettings) -> LabelledData:
    """An extractive question-answering source: the packaged set ``squad`` (its dev file as
    the test split), or a SQuAD-format JSON or JSON-lines file (``tlkit.qa.squad.read_qa``).
    Each row is one question (``QAExample``): splits, ``data.limit`` and the overlap checks
    take whole questions, never windows."""
    from tlkit.data.answers import answers_data
    from tlkit.qa.squad import read_qa

    for key in ("text_column", "text_pair_column", "image_column", "label_column",
                "group_column"):
        if getattr(cfg, key, None):
            raise UserError(f"data.{key} does not apply to data.task: question_answering, "
                            "whose files give each question, its context and its answers "
                            f"(SQuAD's JSON layout or JSON lines); remove data.{key}")
    if is_packaged(cfg.source):
        _check_packaged_task(cfg.source, cfg.task)
        return load_packaged(cfg.source)
    path = Path(cfg.source).expanduser()
    if not path.is_file():
        raise UserError(
            f"data.source {cfg.source!r}: data.task question_answering reads a SQuAD-format "
            "JSON file, JSON lines ({\"question\", \"context\", \"answers\"} a line) or a "
            "packaged set ("
            f"{', '.join(n for n in packaged_names() if packaged_info(n).task == cfg.task)})"
            + ("" if path.exists() else "; no such file"))
    return answers_data(str(cfg.source), read_qa(path))


# ---------------------------------------------------------------------------------------------
# Folders: root/<class>/<image>


def _check_folder_task(root: Path, task: str) -> None:
    if task != "single_label":
        raise UserError(
            f"folder {root} gives one class per image (its subfolder), which suits data.task: single_label; "
            f"for {task} use a CSV / JSONL / Parquet table with an image column and a label column."
        )


def _list_folder(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, sorted, without opening any. Images must sit directly in
    their class folder: recursing would silently read root/train/cat/... as one class 'train'."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    listing = {d.name: sorted(p for p in d.iterdir() if p.is_file() and is_image_file(p)) for d in class_dirs}
    if not any(listing.values()):
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        if any(p.is_file() and is_image_file(p) for p in root.iterdir()):
            raise UserError(
                f"images in {root} must sit in one subfolder per class ({root}/<class>/<image>), "
                "not in the folder itself; move them into class subfolders."
            )
        deeper = next((p for d in class_dirs for p in d.rglob("*") if p.is_file() and is_image_file(p)), None)
        if deeper is not None:
            raise UserError(
                f"no images directly inside the class subfolders of {root} (found deeper ones, e.g. {deeper}); "
                f"point data.source at the folder whose subfolders are the classes, e.g. {deeper.parent.parent}."
            )
        raise UserError(
            f"folder {root} holds no images ({extensions}) in class subfolders; "
            f"lay it out as {root}/<class>/<image>, or point data.source at a table or packaged set."
        )
    empty = [name for name, files in listing.items() if not files]
    if empty:
        raise UserError(
            f"class folder(s) {', '.join(str(root / n) for n in empty[:5])} hold no images; "
            "add images to them or remove them."
        )
    return listing


def _load_folder(root: Path, cfg: DataSettings, classes: list[str] | None) -> LabelledData:
    _check_folder_task(root, cfg.task)
    listing = _list_folder(root)
    paths = [p for files in listing.values() for p in files]
    labels = [name for name, files in listing.items() for _ in files]
    targets, found = encode_targets(labels, "single_label", where=f"folder {root}", classes=classes)
    keep, skipped = drop_bad_images(paths, cfg.on_bad_image, where=str(root))
    return LabelledData(
        name=str(cfg.source),
        modality="image",
        task="single_label",
        inputs=[paths[i] for i in keep],
        targets=targets[keep],
        classes=found,
        skipped=len(skipped),
        skipped_files=skipped,
    )


# ---------------------------------------------------------------------------------------------
# Tables: CSV / TSV / JSONL / Parquet with an input column and a label column


def table_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS and len(suffixes) > 1:
        suffixes = suffixes[:-1]
    fmt = TABLE_FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise UserError(
            f"data.source {path} is a file of a type tlkit does not read; give a .csv, .tsv, .jsonl or "
            ".parquet table, a folder of class subfolders, or a packaged set name."
        )
    return fmt


def _table_header(path: Path, fmt: str) -> list[str] | None:
    """Column names read cheaply (None for JSONL, whose columns are known only once read)."""
    if fmt in ("csv", "tsv"):
        return [str(c) for c in pd.read_csv(path, sep=_SEPARATORS[fmt], nrows=0).columns]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return None


def _read_table(path: Path, cfg: DataSettings, label_only: bool = False) -> tuple[pd.DataFrame, str]:
    """The table and the name of its label column. A CSV's labels are read as text so that
    '007' stays '007'; ``label_only`` reads just that column where the format allows it."""
    fmt = table_format(path)
    try:
        header = _table_header(path, fmt)
        if header is None:
            try:
                frame = pd.read_json(path, lines=True, dtype=False)
            except Exception as error:  # noqa: BLE001 - it names a byte offset; find the line
                raise UserError(jsonl_error(path, error)) from None
            return frame, _label_column(frame, cfg, path)
        label = _label_column(pd.DataFrame(columns=header), cfg, path)
        columns = [label] if label_only else None
        if fmt == "parquet":
            return pd.read_parquet(path, columns=columns), label
        # Every column is read as text: label '007' stays '007', a text '1.50' stays '1.50'
        # (regression values parse later). Only a truly empty cell is missing: 'None', 'NA',
        # 'null' or 'nan' are a text or a class like any other (pandas' default NA list would
        # drop them as gaps).
        return pd.read_csv(path, sep=_SEPARATORS[fmt], usecols=columns, dtype=str,
                           keep_default_na=False, na_values=[""]), label
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - every parser has its own error types
        raise UserError(f"cannot read {path} as {fmt.upper()} ({error}); fix the file or convert it.") from error


def jsonl_error(path: Path, error: Exception) -> str:
    """What is wrong with a JSON-lines file pandas could not parse, by its line number (pandas
    names a byte offset, and within a chunk when it reads in chunks): the first line that is
    not JSON, or not a JSON object."""
    import json

    where = None
    try:
        with _open_text(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as bad:
                    where = (f"line {number} of {path} is not valid JSON ({bad.msg} at column "
                             f"{bad.colno})")
                    break
                if not isinstance(value, dict):
                    where = (f"line {number} of {path} holds a JSON {type(value).__name__}, not "
                             "an object with the columns as keys")
                    break
    except (OSError, ValueError, EOFError):  # an unreadable or damaged archive: pandas' words
        where = None
    if where is None:
        return f"cannot read {path} as JSONL ({error}); fix the file or convert it."
    return (f"{where}; each line of a JSON-lines file is one object such as "
            '{"text": "...", "label": "..."}: fix or remove that line.')


def _open_text(path: Path) -> Any:
    """A text reader of ``path``, decompressed per its suffix (.gz, .bz2, .xz, .zip)."""
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    if suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if suffix == ".zip":
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
        if len(names) != 1:
            raise ValueError("not one file in the archive")
        return io.TextIOWrapper(archive.open(names[0]), encoding="utf-8")
    if suffix == ".zst":
        raise ValueError("zstandard: left to pandas")
    return open(path, encoding="utf-8")


def _labelled(frame: pd.DataFrame, label: str, cfg: DataSettings, path: Path
              ) -> tuple[pd.DataFrame, int]:
    """``frame`` without its rows that have no label, per data.unlabelled (refuse: a
    UserError with their count; drop: left out), and how many were left out. The frame keeps
    its index, so a row's number in a later message can still be read from it."""
    keep = labelled_rows(frame[label].tolist(), cfg.task, where=f"column {label!r} of {path}",
                         unlabelled=getattr(cfg, "unlabelled", "refuse"))
    if keep is None:
        return frame, 0
    return frame.iloc[keep], len(frame) - len(keep)


def _find_column(frame: pd.DataFrame, name: str) -> str | None:
    if name in frame.columns:
        return name
    folded = [c for c in frame.columns if str(c).lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def _present(frame: pd.DataFrame, names: tuple[str, ...]) -> list[str]:
    """The columns among ``names`` that ``frame`` has, in the order of ``names``."""
    return [c for c in (_find_column(frame, n) for n in names) if c is not None]


def _columns_list(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    return ", ".join(names[:30]) + (" ..." if len(names) > 30 else "") if names else "(none)"


def _named_column(frame: pd.DataFrame, name: str, key: str, path: Path) -> str:
    found = _find_column(frame, name)
    if found is None:
        raise UserError(
            f"{key} {name!r} is not a column of {path}; its columns are: {_columns_list(frame)}. "
            f"Set {key} to one of them."
        )
    return found


def _label_column(frame: pd.DataFrame, cfg: DataSettings, path: Path) -> str:
    if cfg.label_column:
        return _named_column(frame, cfg.label_column, "data.label_column", path)
    present = _present(frame, LABEL_COLUMNS)
    if present:
        return present[0]
    raise UserError(
        f"{path} has no label column (looked for {', '.join(LABEL_COLUMNS)}); its columns are: "
        f"{_columns_list(frame)}. Set data.label_column to the one holding the labels."
    )


def _looks_like_image_paths(values: pd.Series) -> bool:
    sample = [v for v in values.head(20).tolist() if isinstance(v, str)]
    return bool(sample) and all(Path(v).suffix.lower() in IMAGE_EXTENSIONS for v in sample)


def input_column(frame: pd.DataFrame, cfg: DataSettings, path: Path) -> tuple[Modality, str]:
    if cfg.image_column and pair_column_of(cfg):
        raise UserError("data.text_pair_column pairs two texts; it does not go with "
                        "data.image_column: remove one of them.")
    if cfg.text_column and cfg.image_column:
        raise UserError(
            "data.text_column and data.image_column are both set; a data set has one input: keep only one."
        )
    if cfg.text_column:
        return "text", _named_column(frame, cfg.text_column, "data.text_column", path)
    if cfg.image_column:
        return "image", _named_column(frame, cfg.image_column, "data.image_column", path)
    texts = _present(frame, TEXT_COLUMNS)
    # 'file' or 'path' columns are common metadata in text sets; they count only if they hold images.
    images = [c for c in _present(frame, IMAGE_COLUMNS) if _looks_like_image_paths(frame[c])]
    text, image = (texts[0] if texts else None), (images[0] if images else None)
    if text is not None and image is not None:
        raise UserError(
            f"{path} has both a text column {text!r} and an image column {image!r}; "
            "set data.text_column or data.image_column to choose the input."
        )
    if text is not None:
        return "text", text
    if image is not None:
        return "image", image
    raise UserError(
        f"{path} has no text column (looked for {', '.join(TEXT_COLUMNS)}) and no column of image paths "
        f"(looked for {', '.join(IMAGE_COLUMNS)}); its columns are: {_columns_list(frame)}. "
        "Set data.text_column or data.image_column."
    )


def _group_values(frame: pd.DataFrame, cfg: DataSettings, path: Path) -> np.ndarray | None:
    """Each row's subgroup name (an empty cell is the group '(missing)'), or None without
    ``data.group_column``."""
    name = group_column_of(cfg)
    if name is None:
        return None
    column = _named_column(frame, name, "data.group_column", path)
    return np.array(["(missing)" if is_missing(v) else str(v) for v in frame[column].tolist()],
                    dtype=object)


def _distinct_inputs(columns: dict[str, str], label: str) -> None:
    """The input columns (``columns``: config key -> the column it resolved to) and the label
    column are different columns: a pair of a column with itself, or a model reading its own
    labels as its input, is refused."""
    first, second = columns.get("data.text_column"), columns.get("data.text_pair_column")
    if second is not None and second == first:
        raise UserError(
            f"data.text_pair_column and data.text_column both name the column {first!r}, so "
            f"every pair would be ({first}, {first}); set data.text_pair_column to the column "
            "of the second text (e.g. the hypothesis) and data.text_column to the first.")
    for key, name in columns.items():
        if name == label:
            raise UserError(
                f"column {name!r} would be both an input ({key}) and the labels (data."
                "label_column), so the model would read each row's label; set "
                f"{key} or data.label_column to another column.")


def _load_table(path: Path, cfg: DataSettings, classes: list[str] | None) -> LabelledData:
    frame, label = _read_table(path, cfg)
    frame, unlabelled = _labelled(frame, label, cfg, path)
    modality, column = input_column(frame, cfg, path)
    pair = pair_column_of(cfg) if modality == "text" else None
    second = None if pair is None else _named_column(frame, pair, "data.text_pair_column", path)
    _distinct_inputs({f"data.{modality}_column": column,
                      **({"data.text_pair_column": second} if second is not None else {})}, label)
    groups = _group_values(frame, cfg, path)
    targets, found = encode_targets(
        frame[label].tolist(),
        cfg.task,
        where=f"column {label!r} of {path}",
        separator=cfg.label_separator,
        classes=classes,
    )
    if modality == "text":
        inputs: list[Any] = column_texts(frame[column].tolist(), column, str(path))
        if second is not None:
            inputs = list(zip(inputs, column_texts(frame[second].tolist(), second, str(path)),
                              strict=True))
        return LabelledData(
            name=str(cfg.source),
            modality="text",
            task=cfg.task,
            inputs=inputs,
            targets=targets,
            classes=found,
            groups=groups,
            unlabelled=unlabelled,
        )
    # Relative image paths are relative to the table, so a data folder can move as a whole.
    paths = [Path(v).expanduser() for v in column_image_paths(frame[column].tolist(), column,
                                                              str(path))]
    paths = [p if p.is_absolute() else path.parent / p for p in paths]
    keep, skipped = drop_bad_images(paths, cfg.on_bad_image, where=str(path))
    return LabelledData(
        name=str(cfg.source),
        modality="image",
        task=cfg.task,
        inputs=[paths[i] for i in keep],
        targets=targets[keep],
        classes=found,
        skipped=len(skipped),
        skipped_files=skipped,
        groups=None if groups is None else groups[keep],
        unlabelled=unlabelled,
    )


# ---------------------------------------------------------------------------------------------


def _onto_classes(data: LabelledData, classes: list[str]) -> LabelledData:
    """Re-index a single-label set's targets onto ``classes`` (a trained model's label order)."""
    if data.classes == classes:
        return data
    assert data.classes is not None
    names = [data.classes[t] for t in data.targets]
    targets, _ = encode_targets(names, "single_label", where=f"data set {data.name!r}", classes=classes)
    test = _onto_classes(data.test, classes) if data.test is not None else None
    val = _onto_classes(data.val, classes) if data.val is not None else None
    return LabelledData(
        name=data.name,
        modality=data.modality,
        task=data.task,
        inputs=data.inputs,
        targets=targets,
        classes=list(classes),
        test=test,
        val=val,
        skipped=data.skipped,
        skipped_files=data.skipped_files,
        groups=data.groups,
        unlabelled=data.unlabelled,
    )
