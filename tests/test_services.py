"""External services (``tracking.mlflow``) fail fast and before the work: the tracker is
contacted at the start, once, with a short timeout; a URI that cannot be used is exit 2 naming
the URI, the cause and the fix, before anything of the run is written; Ctrl-C and SIGTERM stop
the wait at once (130 / 143) and leave a run that ``fit --resume`` finishes; a server that dies
during the run costs seconds, not minutes, and the fit's results stand (the log says why MLflow
has less). The servers are tiny ones in a thread of the test: one that speaks just enough of
MLflow's REST API for the start-up check, then dies or stops answering; one that accepts
connections and never answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tlkit.cli import main
from tlkit.errors import UserError

pytest.importorskip("mlflow")

CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: top_n_unfrozen
  top_n: 1
  epochs: 2
  batch_size: 16
  min_steps: 0
  early_stopping_patience: null
  device: cpu
  cache: {disk: false}
data:
  source: digits
  image_size: 32
  limit: 80
tracking:
  mlflow: {uri: 'URI', experiment: tiny}
"""


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)


def config(tmp: Path, uri: str) -> Path:
    p = tmp / "c.yaml"
    p.write_text(CFG.replace("URI", uri))
    return p


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Silent:
    """Accepts connections and never answers; ``on_accept`` runs at each one."""

    def __init__(self, on_accept: Any = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        self.on_accept = on_accept
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.on_accept is not None:
                self.on_accept()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


class FakeMlflow:
    """Just enough of MLflow's REST API for the start-up check (the experiment exists);
    ``die()`` stops it (connections refused), ``hang()`` keeps accepting and never answers."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                body = json.dumps({"experiment": {
                    "experiment_id": "1", "name": "tiny", "lifecycle_stage": "active",
                    "artifact_location": "mlflow-artifacts:/1"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.silent: Silent | None = None

    def die(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def hang(self) -> None:
        self.die()
        s = Silent.__new__(Silent)
        s.sock = socket.socket()
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.sock.bind(("127.0.0.1", self.port))
        s.sock.listen(16)
        s.conns, s.on_accept, s.uri = [], None, self.uri
        threading.Thread(target=s._loop, daemon=True).start()
        self.silent = s


@pytest.fixture
def fake_mlflow() -> Iterator[FakeMlflow]:
    f = FakeMlflow()
    yield f
    if f.silent is not None:
        f.silent.close()
    else:
        f.die()


def refused(capsys: pytest.CaptureFixture[str], cfg: Path, out: Path) -> str:
    t0 = time.perf_counter()
    code = main(["fit", str(cfg), "--out", str(out)])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and took < 15, (took, err)
    assert not out.exists()  # before the run directory was made: nothing to clean, or resume
    (line,) = [x for x in err.splitlines() if "error:" in x]
    return line


# --------------------------------------------------------------------------------------------------
# the start-up check: every way a URI cannot be used is exit 2 before any work
# --------------------------------------------------------------------------------------------------


def _uris(tmp: Path) -> dict[str, tuple[str, str]]:
    """uri -> (a part of the cause the message must give, a part of the fix)."""
    (tmp / "afile").write_text("a user's file\n")
    return {
        f"http://127.0.0.1:{free_port()}": ("connection refused", "start the tracking server"),
        "htp://x": ("did you mean http://", "correct tracking.mlflow.uri"),
        # .invalid never resolves (RFC 2606)
        "http://no-such-host.invalid:5000": ("does not resolve", "start the tracking server"),
        "foo://bar": ("scheme 'foo'", "remove tracking.mlflow"),
        "http://": ("names no host", "correct tracking.mlflow.uri"),
        "http://127.0.0.1:port": ("malformed", "correct tracking.mlflow.uri"),
        "not a uri": ("neither a URI", "correct tracking.mlflow.uri"),
        "sqlite:///mlflow.db": ("full mlflow package", "remove tracking.mlflow"),
        f"file://{tmp / 'afile'}": ("not a directory", "a folder that can be written"),
        str(tmp / "afile" / "mlruns"): ("not a directory", "a folder that can be written"),
    }


@pytest.mark.parametrize("which", range(10))
def test_an_unusable_tracking_uri_is_exit_2_naming_it_its_cause_and_the_fix_before_any_work(
        which: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, (cause, fix) = list(_uris(tmp_path).items())[which]
    if uri.startswith("sqlite") and __import__("importlib").util.find_spec("sqlalchemy"):
        pytest.skip("the full mlflow package is installed here: sqlite is a store")
    line = refused(capsys, config(tmp_path, uri), tmp_path / "run")
    assert repr(uri) in line and cause in line and fix in line, line
    assert (tmp_path / "afile").read_text() == "a user's file\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_tracking_folder_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = refused(capsys, config(tmp_path, str(ro / "mlruns")), tmp_path / "run")
    finally:
        ro.chmod(0o755)
    assert "cannot be written" in line or "permission" in line.lower()


def test_a_server_that_accepts_and_never_answers_is_refused_within_seconds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.tracking

    monkeypatch.setattr(tlkit.tracking, "CHECK_SECONDS", 1)
    # MLflow's own defaults (7 retries, 120 s each) as a user might have set them: the check
    # still makes one attempt of at most CHECK_SECONDS
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    silent = Silent()
    try:
        t0 = time.perf_counter()
        line = refused(capsys, config(tmp_path, silent.uri), tmp_path / "run")
        assert time.perf_counter() - t0 < 8
    finally:
        silent.close()
    assert "accepted the connection but did not answer within 1 s" in line
    assert "start the tracking server" in line
    # the user's settings are theirs again afterwards
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"


def test_the_python_api_refuses_an_unreachable_tracker_before_any_work(tmp_path: Path) -> None:
    import tlkit

    uri = f"http://127.0.0.1:{free_port()}"
    raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                               "pretrained_weights": "none", "epochs": 1},
           "data": {"source": "digits", "image_size": 32, "limit": 80},
           "tracking": {"mlflow": {"uri": uri}}}
    with pytest.raises(UserError, match="connection refused"):
        tlkit.fit(raw, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_waiting_on_the_tracker_stops_the_fit_within_seconds(
        sig: int, code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.tracking

    monkeypatch.setattr(tlkit.tracking, "CHECK_SECONDS", 60)  # a long wait, cut by the signal
    # the signal comes once the fit waits on the server (its handler is installed by then)
    silent = Silent(on_accept=lambda: threading.Timer(0.3, os.kill,
                                                      (os.getpid(), sig)).start())
    try:
        t0 = time.perf_counter()
        got = main(["fit", str(config(tmp_path, silent.uri)), "--out", str(tmp_path / "run")])
        took = time.perf_counter() - t0
    finally:
        silent.close()
    err = capsys.readouterr().err
    assert got == code and took < 10, (got, took, err)
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing to resume from, nothing in the way


# --------------------------------------------------------------------------------------------------
# during the run: a server that dies costs seconds, and the fit's results stand
# --------------------------------------------------------------------------------------------------


def _epoch(i: int) -> dict[str, Any]:
    return {"epoch": i, "phase": 1, "train_loss": 0.5, "val_loss": 0.4}


@pytest.mark.parametrize("how,retries", [
    ("die", 0), ("hang", 0),
    # tlkit's own bounds (two retries, backoff 1 s then 2 s), not MLflow's 7 and 120 s
    pytest.param("die", None, marks=pytest.mark.slow),
    pytest.param("hang", None, marks=pytest.mark.slow)])
def test_a_tracker_that_dies_mid_run_costs_seconds_once_and_is_said(
        how: str, retries: int | None, fake_mlflow: FakeMlflow, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.tracking
    from tlkit.tracking import MlflowLog

    monkeypatch.setattr(tlkit.tracking, "RUN_SECONDS", 1)
    if retries is not None:
        monkeypatch.setattr(tlkit.tracking, "RUN_RETRIES", retries)
    events: list[tuple[str, dict[str, Any]]] = []
    ml = MlflowLog(fake_mlflow.uri, "tiny", tmp_path / "run", {"a": 1},
                   forward=lambda k, i: events.append((k, i)))
    ml.check()
    assert any("get-by-name" in r for r in fake_mlflow.requests)
    getattr(fake_mlflow, how)()
    t0 = time.perf_counter()
    ml("epoch_end", _epoch(0))
    first = time.perf_counter() - t0
    ml("epoch_end", _epoch(1))  # not tried again: the service is gone
    assert ml.finish({"test": {"accuracy": 0.9}}) is False
    assert ml.finish(None) is False
    total = time.perf_counter() - t0
    # at most three tries (1 s then 2 s of backoff, and jitter) of RUN_SECONDS each
    assert first < 12 and total - first < 1, (first, total)
    said = [i["what"] for k, i in events if k == "stage"]
    assert len(said) == 1 and said[0].startswith(f"MLflow: could not log epoch 0 at "
                                                 f"{fake_mlflow.uri}")
    assert ("connection refused" if how == "die" else "did not answer") in said[0]
    assert [i["epoch"] for k, i in events if k == "epoch_end"] == [0, 1]  # passed on


@pytest.mark.slow
def test_a_fit_whose_tracker_dies_mid_run_finishes_with_its_results_and_says_so(
        fake_mlflow: FakeMlflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, fake_mlflow.uri)
    real_check = __import__("tlkit.tracking", fromlist=["MlflowLog"]).MlflowLog.check

    def check_then_die(self: Any) -> None:
        real_check(self)
        fake_mlflow.die()  # answered the check, gone before the first epoch ends

    mp = pytest.MonkeyPatch()
    mp.setattr("tlkit.tracking.MlflowLog.check", check_then_die)
    try:
        t0 = time.perf_counter()
        code = main(["fit", str(cfg), "--out", str(tmp_path / "run"), "--no-report"])
        took = time.perf_counter() - t0
    finally:
        mp.undo()
    err = capsys.readouterr().err
    assert code == 0, err
    assert (tmp_path / "run" / "summary.json").is_file() and took < 120
    assert "MLflow: could not log epoch 0" in err and "logged to MLflow" not in err
    assert "MLflow: could not log epoch 0" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("then", ["another store", "no tracking"])
def test_a_run_stopped_while_waiting_on_the_tracker_mid_run_resumes_and_finishes(
        then: str, fake_mlflow: FakeMlflow, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.tracking

    monkeypatch.setattr(tlkit.tracking, "RUN_SECONDS", 60)
    real_check = tlkit.tracking.MlflowLog.check

    def check_then_hang(self: Any) -> None:
        real_check(self)
        fake_mlflow.hang()
        assert fake_mlflow.silent is not None  # the first epoch's end waits: SIGTERM then
        fake_mlflow.silent.on_accept = lambda: threading.Timer(
            0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()

    monkeypatch.setattr(tlkit.tracking.MlflowLog, "check", check_then_hang)
    cfg, run = config(tmp_path, fake_mlflow.uri), tmp_path / "run"
    t0 = time.perf_counter()
    code = main(["fit", str(cfg), "--out", str(run), "--no-report"])
    err = capsys.readouterr().err
    assert code == 143 and "Traceback" not in err, err
    assert time.perf_counter() - t0 < 120
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "summary.json").exists()
    monkeypatch.setattr(tlkit.tracking.MlflowLog, "check", real_check)
    # the server is gone: the resume logs to a local store, or (the message's other fix)
    # without tracking; where a run is logged is not part of what it computes
    if then == "another store":
        cfg = config(tmp_path, str(tmp_path / "mlruns"))
    else:
        cfg.write_text(CFG.split("tracking:")[0])
    code = main(["fit", str(cfg), "--out", str(run), "--resume", "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "resumed at epoch 1" in err and (run / "summary.json").is_file()
    assert ("logged to MLflow" in err) == (then == "another store")
