"""Experiment tracking in MLflow (``tracking: {mlflow: {uri, experiment}}``), through the real
``mlflow`` package (the ``tracking`` extra installs mlflow-skinny).

An event consumer like ``tlkit.tensorboard``'s: at the first epoch's end it opens an MLflow run named
after the run directory and logs the config as params (flattened, ``transfer_config.head_lr``);
at each epoch's end the epoch's metrics (step = the epoch); at the end ``finish`` logs the test
metrics, summary.json as a dict and the run directory as artifacts (checkpoints/ left out:
they are for resuming, and the model is in model/). A fit that fails ends its MLflow run FAILED
(KILLED when stopped by Ctrl-C or SIGTERM).

A tracker is an external service, so it is reached in bounded time and before any work:

- ``check`` (what every tracker implements, ``Tracker``) contacts the service once at the
  start, before the model loads or the run directory is written, with no retries and a timeout
  of ``CHECK_SECONDS``: a URI that is malformed, of an unknown scheme, a folder that cannot be
  one, a server that refuses, does not resolve or accepts and never answers, is a UserError
  (exit 2) naming the URI, the cause and the fix. Ctrl-C and SIGTERM stop the wait at once.
- Every later call (the epochs, the end) runs with ``RUN_RETRIES`` retries and a timeout of
  ``RUN_SECONDS`` per request (MLflow's own default is 7 retries with exponential backoff and
  120 s each: minutes per call). A failure there does not fail the fit, whose results are in
  the run directory: it is said in the log (``[tlkit] MLflow: ...``), tracking stops for the
  rest of the run, and the fit exits 0 without the "logged to MLflow" line. A user's own
  ``MLFLOW_HTTP_REQUEST_*`` environment variables are honoured (the check's timeout is never
  longer than ``CHECK_SECONDS``, nor its retries more than none).

MLflow 3 keeps its file store (a local folder) in maintenance mode and asks for an opt-in; a
local folder is what the default ``mlruns`` names, so tlkit opts in for file stores only.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from tlkit.errors import UserError, require
from tlkit.events import Event

if TYPE_CHECKING:
    from tlkit.config import Config

CHECK_SECONDS = 5  # the start's one request: a tracking server answers in milliseconds
RUN_RETRIES = 2  # then, per request: a server restarting is waited for, a dead one is not
RUN_SECONDS = 10
_RETRIES, _TIMEOUT, _BACKOFF = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
_SCHEMES = ("file", "http", "https", "databricks")
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # the full mlflow package's SQL stores
FIX = ("start the tracking server (mlflow server --host HOST --port PORT), correct "
       "tracking.mlflow.uri, or remove tracking.mlflow from the config to train without it")
FOLDER_FIX = ("correct tracking.mlflow.uri (a folder that can be written, or a tracking "
              "server's http(s):// address), or remove tracking.mlflow from the config to train "
              "without it")


class Tracker(Protocol):
    """What fit needs of a tracker: an event consumer with a start-up check and an end."""

    def check(self) -> None:
        """Contact the service now, briefly; a UserError (the URI, the cause, the fix) when it
        cannot be used. Called before the model loads or anything of the run is written."""

    def __call__(self, kind: str, info: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any] | None,
               interrupted: bool = False) -> bool:
        """Log the outcome (None: the fit failed); whether everything was logged."""


def tracking_uri(uri: str) -> str:
    """A local folder as an absolute file: URI; any URI with a scheme as given."""
    if "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` (as the config gives it) cannot be a tracking URI, or None."""
    if not uri.strip():
        return "it is empty"
    if "://" not in uri and not uri.startswith("file:"):
        if any(c.isspace() for c in uri) and not Path(uri).expanduser().is_dir():
            return ("it is neither a URI (scheme://...) nor an existing folder (a new folder's "
                    "name must not hold spaces; create such a folder first to use it)")
        return None
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in _DATABASES:
        import importlib.util

        if importlib.util.find_spec("sqlalchemy") is None:
            return (f"a {scheme} store needs the full mlflow package (pip install mlflow), and "
                    "only mlflow-skinny is installed")
        return None
    if scheme not in _SCHEMES:
        close = difflib.get_close_matches(scheme, [*_SCHEMES, *_DATABASES], n=1)
        return (f"its scheme {scheme!r} is not one MLflow tracks to (http, https, file, "
                f"databricks, or sqlite / postgresql / mysql / mssql with the full mlflow)"
                + (f" (did you mean {close[0]}://?)" if close else ""))
    if scheme in ("http", "https"):
        try:
            host, _ = parts.hostname, parts.port  # a port that is not a number raises
        except ValueError as e:
            return f"its address is malformed ({e})"
        if not host:
            return "it names no host (http://HOST:PORT)"
    return None


def flat_params(raw: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        elif v is not None:
            out[key] = str(v)[:500]  # MLflow's limit on a param's value
    return out


@contextlib.contextmanager
def bounded(retries: int, seconds: int, force: bool = False) -> Iterator[None]:
    """MLflow's HTTP requests within ``retries`` retries (backoff 1 s) and ``seconds`` each,
    for the calls inside; a user's own MLFLOW_HTTP_REQUEST_* settings are kept, except that
    ``force`` caps them at these bounds."""
    saved = {k: os.environ.get(k) for k in (_RETRIES, _TIMEOUT, _BACKOFF)}
    wanted = {_RETRIES: retries, _TIMEOUT: seconds, _BACKOFF: 1}
    for key, bound in wanted.items():
        given = saved[key]
        if given is None:
            os.environ[key] = str(bound)
        elif force:
            try:
                os.environ[key] = str(min(int(given), bound))
            except ValueError:
                os.environ[key] = str(bound)
    try:
        yield
    finally:
        for key, before in saved.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before


def cause_of(e: BaseException, seconds: int) -> str:
    """What went wrong in words, from an MLflow / requests / OS error."""
    text = str(e)
    low = text.lower()
    if "read timed out" in low or "readtimeout" in low:
        return f"the server accepted the connection but did not answer within {seconds} s"
    if "connection refused" in low or "newconnectionerror" in low:
        return "nothing is listening there (connection refused)"
    if "failed to resolve" in low or "name or service not known" in low \
            or "nameresolutionerror" in low:
        return "its host name does not resolve"
    if isinstance(e, NotADirectoryError) or "not a directory" in low:
        return "a file is in the way where the store's folder should be (not a directory)"
    if isinstance(e, PermissionError) or "permission denied" in low or "read-only" in low:
        return "the store's folder cannot be written (permission denied / read-only)"
    if isinstance(e, FileNotFoundError):
        return f"the store's folder cannot be created ({e})"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{type(e).__name__}: {first[:300]}"


class MlflowLog:
    """Logs to MLflow, then passes every event on to ``forward``."""

    def __init__(self, uri: str, experiment: str, run_dir: Path, params: dict[str, Any],
                 forward: Event | None = None) -> None:
        require(("mlflow",), "tracking", "tracking.mlflow")
        self.given = uri
        problem = uri_problem(uri)
        if problem is not None:
            raise UserError(f"tracking.mlflow.uri {uri!r} cannot be used: {problem}; correct "
                            "tracking.mlflow.uri, or remove tracking.mlflow from the config to "
                            "train without it")
        self.uri, self.experiment = tracking_uri(uri), experiment
        self.run_dir, self.params, self.forward = Path(run_dir), params, forward
        self.run_id: str | None = None
        self.broken: str | None = None  # why tracking stopped during the run

    def _mlflow(self) -> Any:
        import mlflow

        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(self.uri)
        return mlflow

    def check(self) -> None:
        """One request, no retries, at most CHECK_SECONDS: the experiment is looked up (and
        made when new), so that a fit that cannot log is refused before it trains."""
        timeout = CHECK_SECONDS
        given = os.environ.get(_TIMEOUT, "")
        if given.isdigit() and 0 < int(given) < timeout:
            timeout = int(given)
        try:
            with bounded(0, timeout, force=True):
                self._mlflow().set_experiment(self.experiment)
        except Exception as e:  # noqa: BLE001 - whatever the store says, the fit cannot log
            fix = FIX if self.uri.startswith(("http:", "https:")) else FOLDER_FIX
            raise UserError(f"MLflow at tracking.mlflow.uri {self.given!r} cannot be used: "
                            f"{cause_of(e, timeout)}. Nothing was trained; {fix}") from None

    def _say(self, text: str) -> None:
        if self.forward is not None:
            self.forward("stage", {"what": text})

    def _guarded(self, what: str, call: Callable[[Any], None], retries: int | None = None,
                 seconds: int | None = None) -> bool:
        """``call(mlflow)`` within bounds (default RUN_RETRIES, RUN_SECONDS); a failure stops
        tracking for the rest of the run and is said in the log (the fit's results stand).
        Ctrl-C and SIGTERM pass through."""
        if self.broken is not None:
            return False
        retries = RUN_RETRIES if retries is None else retries
        seconds = RUN_SECONDS if seconds is None else seconds
        try:
            with bounded(retries, seconds):
                call(self._mlflow())
            return True
        except Exception as e:  # noqa: BLE001 - the fit goes on; the log says why
            self.broken = cause_of(e, seconds)
            self._say(f"MLflow: could not {what} at {self.given}: {self.broken}; tracking "
                      "stops for this run, whose results are in its run directory")
            return False

    def _start(self, mlflow: Any) -> None:
        mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(run_name=self.run_dir.name)
        self.run_id = run.info.run_id
        mlflow.log_params(flat_params(self.params))
        mlflow.set_tag("tlkit.run_dir", str(self.run_dir.resolve()))

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "epoch_end":
            metrics = {k: float(v) for k, v in info.items()
                       if k.startswith(("train_", "val_")) and isinstance(v, (int, float))
                       and not isinstance(v, bool)}
            metrics["phase"] = float(info.get("phase", 0))

            def log(mlflow: Any) -> None:
                if self.run_id is None:
                    self._start(mlflow)
                mlflow.log_metrics(metrics, step=int(info["epoch"]))

            self._guarded(f"log epoch {info['epoch']}", log)
        if self.forward is not None:
            self.forward(kind, info)

    def finish(self, summary: dict[str, Any] | None, interrupted: bool = False) -> bool:
        """Log the outcome and close the MLflow run (FAILED without a summary, KILLED when
        ``interrupted``); whether all of it was logged. Never raises for the service: a fit
        that failed keeps its own error, one that succeeded its results."""
        if summary is None:
            if self.run_id is None or self.broken is not None:
                return False  # no MLflow run was opened, or the service is gone: nothing to end
            status = "KILLED" if interrupted else "FAILED"
            # a stop must stay quick: one attempt, a short wait
            return self._guarded("end the MLflow run", lambda m: m.end_run(status=status),
                                 retries=0, seconds=CHECK_SECONDS)

        def log(mlflow: Any) -> None:
            if self.run_id is None:
                self._start(mlflow)
            for split in ("val", "test", "target_test"):
                for k, v in (summary.get(split) or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        mlflow.log_metric(f"{split}_{k}_final", float(v))
            mlflow.log_dict(summary, "summary.json")
            for entry in sorted(self.run_dir.iterdir()):
                if entry.name in ("checkpoints", ".lock") or entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    mlflow.log_artifacts(str(entry), f"run/{entry.name}")
                else:
                    mlflow.log_artifact(str(entry), "run")
            mlflow.end_run()

        return self._guarded("log the run's results", log)


def tracker(cfg: Config, out: Path, forward: Event | None) -> MlflowLog | None:
    """The tracker the config asks for (``tracking.mlflow``: a ``Tracker``), already contacted
    (its ``check``: a UserError when it cannot be used), or None."""
    if cfg.tracking.mlflow is None:
        return None
    ml = MlflowLog(cfg.tracking.mlflow.uri, cfg.tracking.mlflow.experiment, out,
                   cfg.model_dump(mode="json"), forward=forward)
    ml.check()
    return ml
