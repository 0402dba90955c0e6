"""The Python API: what ``tlkit fit / predict / evaluate / report`` do, from a notebook or a
pipeline.

    import tlkit
    run = tlkit.fit(config, out="runs/mine")     # a YAML path, a dict or a tlkit.config.Config
    run.predict(["a text", ...])                 # or a DataFrame: a pandas DataFrame back
    run.evaluate("val"); run.summary; run.report()
    tlkit.load("runs/mine")                      # the same Run, from its directory

In a dict config, ``data.source``, ``data.validation`` and ``data.test`` may also be a pandas
DataFrame, a Hugging Face ``datasets.Dataset``, or a folder written by its ``save_to_disk``: the
rows are written once to a Parquet file in tlkit's cache (named by their content) and the config
points there, so the run directory records where its data came from and ``evaluate`` can read
it again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from tlkit.errors import UserError

__all__ = ["Run", "distill", "fit", "load"]

_FRAME_KEYS = ("source", "validation", "test")

# Cache file -> how the user gave it ("the DataFrame given as data.source"), per API call.
_FRAME_NAMES: list[dict[str, str]] = []


def _naming_frames(func: Any) -> Any:
    """``func`` (an API entry point) with its UserErrors naming data given as objects the way
    the user gave them, never as the content-named Parquet file in tlkit's cache they were
    written to (a file the user never made)."""
    import functools

    @functools.wraps(func)
    def named(*args: Any, **kwargs: Any) -> Any:
        names: dict[str, str] = {}
        _FRAME_NAMES.append(names)
        try:
            return func(*args, **kwargs)
        except UserError as error:
            said = str(error)
            for path, what in names.items():
                for key in _FRAME_KEYS:  # "data.test /cache/...parquet" reads "the ... data.test"
                    said = said.replace(f"data.{key} {path!r}", what)
                    said = said.replace(f"data.{key} {path}", what)
                said = said.replace(repr(path), what).replace(path, what)
                said = said.replace(Path(path).name, what)
            error.args = (said,)
            raise
        finally:
            _FRAME_NAMES.pop()

    return named


class Run:
    """A finished run directory: its summary, and the model to predict and evaluate with."""

    def __init__(self, path: Path | str) -> None:
        from tlkit.summary_json import read_summary

        self.path = Path(path)
        read_summary(self.path)  # a damaged summary.json: a UserError now, naming the field

    def __repr__(self) -> str:
        s = self.summary
        which = "test" if s.get("test") else "val"
        shown = {k: round(v, 4) for k, v in (s.get(which) or {}).items()
                 if isinstance(v, float)}
        return f"tlkit.Run({str(self.path)!r}, {s.get('strategy')}, {which} {shown})"

    @property
    def summary(self) -> dict[str, Any]:
        from tlkit.summary_json import read_summary

        return read_summary(self.path)  # checked again: the file may change after load

    def predict(self, inputs: Any, calibrated: bool = True) -> Any:
        """Labels and class probabilities for texts, sentence pairs or image paths (a string,
        a list, or a DataFrame / datasets.Dataset whose input column(s) the run reads), as a
        pandas DataFrame, one row per input, in order. An input the model cannot read (None,
        NaN, an empty text, a number or a list where a text belongs, one text for a pair
        model, a missing image) is a row with its ``error`` and no prediction."""
        import pandas as pd

        from tlkit.run import predict_run
        from tlkit.run.scoring import frame_of

        items = _inputs_of(inputs, self.path)
        if not items:
            raise UserError("run.predict got no inputs; give at least one text (or pair, or "
                            "image path)")
        rows = predict_run(self.path, items, None, calibrated, bad_inputs="row")
        return frame_of(rows, pd)

    @_naming_frames
    def evaluate(self, data: Any = None) -> dict[str, Any]:
        """Metrics on a split of the run's data ("train", "val", "test", default test), a
        labelled file or folder, or a labelled DataFrame / datasets.Dataset."""
        from tlkit.run import evaluate_run

        spec = None if data is None else data if isinstance(data, str) else \
            str(_materialised(data, f"{_kind_of(data)} given to Run.evaluate"))
        return evaluate_run(self.path, spec)

    def report(self, out: Path | str | None = None, *, overwrite: bool = False) -> Path:
        """Write (again) report.html and the model card; the report's path. ``out``: write the
        page there instead (the card is not written then); ``overwrite``: replace a file at
        ``out`` that is not a page tlkit wrote (never a file of a run directory)."""
        from tlkit.outputs import check_output, run_inputs
        from tlkit.report import write_report
        from tlkit.report.model_card import write_card

        target = Path(out) if out is not None else self.path / "report.html"
        check_output(target, "page", flag="out", inputs=run_inputs(self.path), own=self.path,
                     overwrite=overwrite, overwrite_hint="overwrite=True")
        page = Path(write_report(self.path, out))
        if out is None:
            write_card(self.path)
        return page


@_naming_frames
def fit(config: Any, out: Path | str | None = None, *, resume: bool = False,
        progress: bool = True, baseline: bool = False) -> Run:
    """Train per ``config`` (a YAML path, a dict or a ``tlkit.config.Config``) into ``out``
    (default runs/<config name>), as ``tlkit fit`` does, and return the Run. ``progress``
    prints tlkit's lines and a progress bar (rich; a notebook shows it as a terminal does)."""
    from tlkit.config import Config, load_config, validate
    from tlkit.outputs import check_output, config_inputs

    if isinstance(config, Config):
        cfg, name = config, "run"
    elif isinstance(config, dict):
        cfg, name = validate(_with_frames(config), "<dict>"), "run"
    elif isinstance(config, (str, Path)):
        cfg, name = load_config(str(config), []), Path(config).stem
    else:
        raise UserError(f"tlkit.fit takes a YAML path, a dict or a tlkit.config.Config, not "
                        f"{type(config).__name__}")
    path = Path(out) if out is not None else Path("runs") / name
    # the output rule (tlkit.outputs), before anything loads: never the config or its data,
    # a user's folder, or another kind of tlkit folder (a compare, a pretraining, an export)
    read = [Path(config)] if isinstance(config, (str, Path)) else []
    check_output(path, "run", flag="out", inputs=[*read, *config_inputs(cfg.model_dump())])
    if baseline:  # as tlkit fit --baseline: a verdict it cannot give is refused before training
        from tlkit.select.variants import check_baselines

        check_baselines(cfg)
    from tlkit.distributed import is_main_process
    from tlkit.tracking import tracker

    event = _reporter(path) if progress else (lambda kind, info: None)
    # contacted now: a UserError before anything is trained; rank 0 logs, as tlkit fit does
    ml = tracker(cfg, path, event) if is_main_process() else None
    from tlkit.run.after_fit import fit_and_finish

    logged = fit_and_finish(cfg, path, event=event, tracker=ml, resume=resume,
                            baseline=baseline, report=False)
    run = Run(path)
    if ml is not None and not logged and not progress:
        import warnings  # with progress, the line was printed; the fit's results stand

        warnings.warn(f"MLflow: the run was not logged to {ml.given} ({ml.broken})",
                      stacklevel=2)
    return run


def distill(run: Run | Path | str, out: Path | str, *, student: str | None = None,
            layers: int | None = None, unlabelled: Any = None,
            unlabelled_limit: int | None = None, temperature: float | None = None,
            alpha: float | None = None, epochs: int | None = None, resume: bool = False,
            progress: bool = True) -> Run:
    """Train a smaller student on the finished run ``run``'s outputs (knowledge distillation),
    as ``tlkit distill`` does, into ``out``; the student's Run (its summary's
    ``distillation`` compares it with the teacher on the same test split). ``student``: a
    registry backbone (default: a truncated copy of the teacher); ``unlabelled``: inputs the
    teacher labels for the student (a file or folder, a DataFrame or a datasets.Dataset)."""
    from tlkit.distillation.config import student_config
    from tlkit.outputs import check_output, config_inputs

    teacher = run.path if isinstance(run, Run) else Path(run)
    pool = None if unlabelled is None else unlabelled if isinstance(unlabelled, (str, Path)) \
        else _materialised(unlabelled, f"{_kind_of(unlabelled)} given as unlabelled")
    cfg = student_config(teacher, student=student, layers=layers,
                         unlabelled=None if pool is None else str(pool),
                         unlabelled_limit=unlabelled_limit, temperature=temperature,
                         alpha=alpha, epochs=epochs)
    path = Path(out)
    check_output(path, "run", flag="out", inputs=[teacher, *config_inputs(cfg.model_dump())])
    from tlkit.run.after_fit import fit_and_finish

    event = _reporter(path) if progress else (lambda kind, info: None)
    fit_and_finish(cfg, path, event=event, resume=resume, report=False)
    return Run(path)


def load(run_dir: Path | str) -> Run:
    """The finished run in ``run_dir``."""
    return Run(run_dir)


# --------------------------------------------------------------------------------------------------
# data given as objects
# --------------------------------------------------------------------------------------------------


def _with_frames(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every DataFrame / Dataset under data.source / validation / test written to
    Parquet in tlkit's cache and replaced by that file's path (errors still name them as given:
    ``_naming_frames``)."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    data = dict(data)
    for key in _FRAME_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, Path)) or _saved_dataset(value):
            data[key] = str(_materialised(value, f"{_kind_of(value)} given as data.{key}"))
        else:
            data[key] = str(value)
    return {**raw, "data": data}


def _kind_of(value: Any) -> str:
    if isinstance(value, (str, Path)):
        return f"the datasets folder {value}"
    kind = type(value).__name__
    return f"the {'datasets.' if kind == 'Dataset' else ''}{kind}"


def _materialised(obj: Any, what: str = "the data given") -> Path:
    """A DataFrame, a datasets.Dataset or a save_to_disk folder as a Parquet file (cached by
    content); ``what`` names it in messages ("the DataFrame given as data.source")."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tlkit.backbones.packaged import cache_dir

    frame = _frame_of(obj, what)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise UserError(_unstorable(frame, what, error)) from None
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    content = buffer.getvalue()
    path = cache_dir() / "frames" / f"{hashlib.sha256(content).hexdigest()[:20]}.parquet"
    if not path.is_file():
        from tlkit.files import atomic_write

        atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))
    if _FRAME_NAMES:
        names = _FRAME_NAMES[-1]
        names[str(path)] = (f"{names[str(path)]} and {what.rsplit(' ', 1)[-1]}"
                            if str(path) in names else what)
    return path


def _unstorable(frame: Any, what: str, error: Exception) -> str:
    """Why a column of a DataFrame cannot be one typed column: the first rows of two types."""
    import pyarrow as pa

    for column in frame.columns:
        try:
            pa.array(frame[column], from_pandas=True)
            continue
        except (pa.ArrowException, TypeError, ValueError):
            pass
        first: dict[str, int] = {}
        values = frame[column].tolist()
        for i, v in enumerate(values):
            if v is not None and not (isinstance(v, float) and v != v):
                first.setdefault(type(v).__name__, i)
        rows = sorted(first.values())[:2]
        shown = ", ".join(f"data row {i + 1}: {values[i]!r}" for i in rows)
        mixes = (f"mixes {' and '.join(first)} values ({shown})" if len(first) > 1
                 else f"holds values that cannot form one column ({shown})")
        return (f"column {column!r} of {what} {mixes}; write every value of the column one "
                "way (e.g. all labels as names, or all as numbers), or drop the column if tlkit "
                "does not read it.")
    return f"{what} cannot be stored as a table ({error}); give plain columns of text or numbers."


def _frame_of(obj: Any, what: str = "the data given") -> Any:
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return obj.reset_index(drop=True)
    if hasattr(obj, "to_pandas") and hasattr(obj, "features"):  # a datasets.Dataset
        return _labels_as_names(obj, obj.to_pandas(), what)
    if isinstance(obj, (str, Path)) and _saved_dataset(obj):
        from tlkit.errors import require

        require(("datasets",), "hf", "reading a save_to_disk folder")
        import datasets

        ds = datasets.load_from_disk(str(obj))
        if not hasattr(ds, "to_pandas"):
            raise UserError(f"{obj} holds a DatasetDict; give one split of it "
                            "(ds['train'].save_to_disk(...))")
        return _labels_as_names(ds, ds.to_pandas(), what)
    raise UserError(f"data given as {type(obj).__name__}: tlkit takes a path, a pandas "
                    "DataFrame, a datasets.Dataset or a folder written by save_to_disk")


def _saved_dataset(value: str | Path) -> bool:
    """Whether ``value`` is a folder written by ``datasets.Dataset.save_to_disk``."""
    return (Path(value).expanduser() / "dataset_info.json").is_file()


def _labels_as_names(ds: Any, frame: Any, what: str = "the datasets.Dataset") -> Any:
    """A ClassLabel column's integers as its names, as a user reads them; a list of them
    (Sequence / List of ClassLabel, multi-label) as a list of names. -1, ClassLabel's "no label"
    (GLUE's test splits), and a null become a null: a row without a label, which
    data.unlabelled refuses or drops, never a class. An integer outside the names is an error."""
    from tlkit.data.targets import is_missing

    for column, feature in getattr(ds, "features", {}).items():
        if column not in frame.columns:
            continue
        own = getattr(feature, "names", None)
        inner = getattr(getattr(feature, "feature", None), "names", None)
        if not own and not inner:
            continue
        labels: list[str] = list(own or inner or [])
        bad: list[int] = []

        def named(v: Any, row: int, names: list[str]) -> str | None:
            if is_missing(v) or v == -1:
                return None
            if float(v).is_integer() and 0 <= int(v) < len(names):
                return names[int(v)]
            bad.append(row)
            return None

        values = frame[column].tolist()
        if own:
            frame[column] = [named(v, i, labels) for i, v in enumerate(values)]
        else:
            lists: list[Any] = []
            for i, v in enumerate(values):
                items = [] if is_missing(v) else list(v)
                got = [named(x, i, labels) for x in items]
                lists.append(None if is_missing(v) or any(x is None for x in got) else got)
            frame[column] = lists
        if bad:
            n = len(labels)
            rows = ", ".join(str(i + 1) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise UserError(
                f"column {column!r} of {what} holds {values[bad[0]]!r} in {len(bad)} row(s) "
                f"(data rows {rows}), outside its ClassLabel's {n} names (0 to {n - 1}: "
                f"{', '.join(labels[:10])}{' ...' if n > 10 else ''}); -1 is "
                "'no label'. Fix those rows, or cast the column to a ClassLabel that names every "
                "class.")
    return frame


def _inputs_of(inputs: Any, run_dir: Path) -> list[Any]:
    """The inputs of ``run.predict``, one per row of its answer: a string (or bytes, or a
    path) is one input; a list, tuple, Series, array or other iterable one per item; a
    DataFrame or ``datasets.Dataset`` one per row, from the run's input column(s) (a pair
    model's two columns as pairs). The cells are kept as given: ``predict_run`` reads each
    through ``tlkit.data.cells``, and one that is not an input is a row with its error."""
    import os
    from collections.abc import Iterable, Mapping

    import pandas as pd

    from tlkit.run.inference import input_columns

    if inputs is None:
        raise UserError("run.predict(None): give a text, a list of texts (a sentence-pair "
                        "model: (text, text) tuples; an image model: file paths) or a "
                        "DataFrame with the run's input column")
    if isinstance(inputs, (str, bytes, bytearray, os.PathLike)):
        return [inputs]
    if hasattr(inputs, "to_pandas") and hasattr(inputs, "features"):  # a datasets.Dataset
        inputs = inputs.to_pandas()
    if isinstance(inputs, pd.DataFrame):
        columns = input_columns(run_dir)
        col = _column(inputs, columns.first)
        if columns.pair is None:
            return list(inputs[col].tolist())
        second = _column(inputs, [columns.pair])
        if second == col:
            raise UserError(f"the model reads pairs of two columns, but both are {col!r}; "
                            "give the second text in its own column")
        return list(zip(inputs[col].tolist(), inputs[second].tolist(), strict=True))
    if isinstance(inputs, Mapping):
        raise UserError(f"run.predict got a {type(inputs).__name__}, whose items are its keys; "
                        "give a list of inputs, or a DataFrame (pd.DataFrame(your_dict))")
    if not isinstance(inputs, Iterable):
        raise UserError(f"run.predict takes a text, a list of inputs or a DataFrame; got "
                        f"{type(inputs).__name__} {str(inputs)[:40]}")
    return list(inputs)


def _column(frame: Any, wanted: list[str]) -> Any:
    col = next((c for w in wanted for c in frame.columns if str(c).lower() == w.lower()), None)
    if col is None:
        what = repr(wanted[0]) if len(wanted) == 1 else "input"
        raise UserError(f"the DataFrame has no {what} column (looked for {', '.join(wanted)}); "
                        f"its columns are: {', '.join(map(str, frame.columns))}")
    return col


def _reporter(path: Path) -> Any:
    from tlkit.progress import Reporter

    rep = Reporter(str(path / "train.log"))
    from rich.console import Console

    rep.tty = sys.stderr.isatty() or Console().is_jupyter
    return rep
