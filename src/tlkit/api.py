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

__all__ = ["Run", "fit", "load"]

_FRAME_KEYS = ("source", "validation", "test")


class Run:
    """A finished run directory: its summary, and the model to predict and evaluate with."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not (self.path / "summary.json").is_file():
            raise UserError(f"{self.path} is not a finished tlkit run (no summary.json); give "
                            "the --out folder of a finished fit")

    def __repr__(self) -> str:
        s = self.summary
        which = "test" if s.get("test") else "val"
        shown = {k: round(v, 4) for k, v in (s.get(which) or {}).items()
                 if isinstance(v, float)}
        return f"tlkit.Run({str(self.path)!r}, {s.get('strategy')}, {which} {shown})"

    @property
    def summary(self) -> dict[str, Any]:
        import json

        got: dict[str, Any] = json.loads((self.path / "summary.json").read_text())
        return got

    def predict(self, inputs: Any, calibrated: bool = True) -> Any:
        """Labels and class probabilities for texts or image paths (a list, or a DataFrame whose
        text or image column the run reads), as a pandas DataFrame, one row per input."""
        import pandas as pd

        from tlkit.run import predict_run
        from tlkit.run.scoring import frame_of

        items = _inputs_of(inputs, self.path)
        rows = predict_run(self.path, items, None, calibrated)
        return frame_of(rows, pd)

    def evaluate(self, data: Any = None) -> dict[str, Any]:
        """Metrics on a split of the run's data ("train", "val", "test", default test), a
        labelled file or folder, or a labelled DataFrame / datasets.Dataset."""
        from tlkit.run import evaluate_run

        spec = None if data is None else data if isinstance(data, str) else \
            str(_materialised(data))
        return evaluate_run(self.path, spec)

    def report(self) -> Path:
        """Write (again) report.html and the model card; the report's path."""
        from tlkit.report import write_report
        from tlkit.report.model_card import write_card

        page = Path(write_report(self.path))
        write_card(self.path)
        return page


def fit(config: Any, out: Path | str | None = None, *, resume: bool = False,
        progress: bool = True, baseline: bool = False) -> Run:
    """Train per ``config`` (a YAML path, a dict or a ``tlkit.config.Config``) into ``out``
    (default runs/<config name>), as ``tlkit fit`` does, and return the Run. ``progress``
    prints tlkit's lines and a progress bar (rich; a notebook shows it as a terminal does)."""
    from tlkit.config import Config, load_config, validate
    from tlkit.rundir import check_writable
    from tlkit.run import fit_run

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
    check_writable(path, "run")
    from tlkit.cli import tracker

    event = _reporter(path) if progress else (lambda kind, info: None)
    ml = tracker(cfg, path, event)
    try:
        fit_run(cfg, path, resume=resume, event=ml or event)
    except BaseException:
        if ml is not None:
            ml.finish(None)
        raise
    if baseline:
        from tlkit.run.baseline import add_to_summary, baselines

        add_to_summary(path, baselines(cfg, path, event=event))
    run = Run(path)
    from tlkit.report.model_card import write_card

    write_card(path)
    if ml is not None:
        ml.finish(run.summary)
    return run


def load(run_dir: Path | str) -> Run:
    """The finished run in ``run_dir``."""
    return Run(run_dir)


# --------------------------------------------------------------------------------------------------
# data given as objects
# --------------------------------------------------------------------------------------------------


def _with_frames(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every DataFrame / Dataset under data.source / validation / test written to
    Parquet in tlkit's cache and replaced by that file's path."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    data = dict(data)
    for key in _FRAME_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, Path)) or _saved_dataset(value):
            data[key] = str(_materialised(value))
        else:
            data[key] = str(value)
    return {**raw, "data": data}


def _materialised(obj: Any) -> Path:
    """A DataFrame, a datasets.Dataset or a save_to_disk folder as a Parquet file (cached by
    content)."""
    frame = _frame_of(obj)
    import pandas as pd

    from tlkit.backbones.packaged import cache_dir

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()
                            + repr(list(map(str, frame.columns))).encode()).hexdigest()[:20]
    path = cache_dir() / "frames" / f"{digest}.parquet"
    if not path.is_file():
        from tlkit.files import atomic_write

        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path


def _frame_of(obj: Any) -> Any:
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return obj.reset_index(drop=True)
    if hasattr(obj, "to_pandas") and hasattr(obj, "features"):  # a datasets.Dataset
        return _labels_as_names(obj, obj.to_pandas())
    if isinstance(obj, (str, Path)) and _saved_dataset(obj):
        from tlkit.errors import require

        require(("datasets",), "hf", "reading a save_to_disk folder")
        import datasets

        ds = datasets.load_from_disk(str(obj))
        if not hasattr(ds, "to_pandas"):
            raise UserError(f"{obj} holds a DatasetDict; give one split of it "
                            "(ds['train'].save_to_disk(...))")
        return _labels_as_names(ds, ds.to_pandas())
    raise UserError(f"data given as {type(obj).__name__}: tlkit takes a path, a pandas "
                    "DataFrame, a datasets.Dataset or a folder written by save_to_disk")


def _saved_dataset(value: str | Path) -> bool:
    """Whether ``value`` is a folder written by ``datasets.Dataset.save_to_disk``."""
    return (Path(value).expanduser() / "dataset_info.json").is_file()


def _labels_as_names(ds: Any, frame: Any) -> Any:
    """A ClassLabel column's integers as its names, as a user reads them."""
    for name, feature in getattr(ds, "features", {}).items():
        names = getattr(feature, "names", None)
        if names and name in frame.columns:
            frame[name] = [names[int(i)] for i in frame[name]]
    return frame


def _inputs_of(inputs: Any, run_dir: Path) -> list[Any]:
    """Texts, sentence pairs or image paths, from a string, a list or a DataFrame."""
    import pandas as pd

    pairs = _pair_columns(run_dir)
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, pd.DataFrame):
        from tlkit.data.sources import IMAGE_COLUMNS, TEXT_COLUMNS

        first = (pairs or {}).get("text_column")
        wanted = [first] if first else [*TEXT_COLUMNS, *IMAGE_COLUMNS]
        col = _column(inputs, wanted)
        if pairs is not None:
            second = _column(inputs, [pairs["text_pair_column"]])
            return [(str(a), str(b)) for a, b in zip(inputs[col], inputs[second], strict=True)]
        return [str(v) for v in inputs[col].tolist()]
    return [tuple(map(str, v)) if isinstance(v, (tuple, list)) else str(v) for v in inputs]


def _column(frame: Any, wanted: list[str]) -> Any:
    col = next((c for w in wanted for c in frame.columns if str(c).lower() == w.lower()), None)
    if col is None:
        what = repr(wanted[0]) if len(wanted) == 1 else "text or image"
        raise UserError(f"the DataFrame has no {what} column (looked for {', '.join(wanted)}); its columns are: "
                        f"{', '.join(map(str, frame.columns))}")
    return col


def _pair_columns(run_dir: Path) -> dict[str, Any] | None:
    """A sentence-pair run's two columns (from its model.json), None for any other run."""
    try:
        meta = json.loads((Path(run_dir) / "model" / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pairs = meta.get("pairs")
    return pairs if isinstance(pairs, dict) else None


def _reporter(path: Path) -> Any:
    from tlkit.cli import Reporter

    rep = Reporter(str(path / "train.log"))
    from rich.console import Console

    rep.tty = sys.stderr.isatty() or Console().is_jupyter
    return rep
