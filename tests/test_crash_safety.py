"""Crashes never lose work: kill -9 at random moments, SIGINT and SIGTERM while a checkpoint
is written, a full disk, a second writer. The checkpoint on disk is always whole, a resume
continues, nothing is left half-written. Each case is in docs/reliability.md.

Fits run in this process (``user_runs.cli``) or, to be killed, in forked children and fresh
interpreters."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from user_runs import cli, config, default_config, error_line

from tlkit.cli import main
from tlkit.config import dump_config, load_config
from tlkit.errors import UserError
from tlkit.files import atomic_write
from tlkit.rundir import RunDir, claim
from tlkit.train.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


# ==================================================================================================
# kill -9, SIGINT, SIGTERM
# ==================================================================================================


def checkpoint_write_seen(run: Path, running: Callable[[], bool], timeout: float) -> bool:
    """Until a checkpoint's temporary file exists (a write in progress), while ``running()``."""
    deadline = time.time() + timeout
    while time.time() < deadline and running():
        ck = run / "checkpoints"
        if ck.is_dir() and any(f.name.startswith((".last.pt.tmp", ".best.safetensors.tmp"))
                               for f in ck.iterdir()):
            return True
        time.sleep(0.002)
    return False


def _fit_in_child(args: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os._exit(main(args))


def _start(args: list[str]) -> multiprocessing.process.BaseProcess:
    p = multiprocessing.get_context("fork").Process(target=_fit_in_child, args=(args,))
    p.start()
    return p


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_run_that_cannot_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import timm  # noqa: F401 - imported before the forks, so the children train at once

    import tlkit.assemble  # noqa: F401
    import tlkit.run  # noqa: F401

    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    cfg = config(tmp_path, epochs=3, limit=160)
    run = tmp_path / "run"
    args = ["fit", str(cfg), "--out", str(run), "--checkpoint-every", "1", "--no-report"]
    # during a checkpoint write (first, while most of the run is still ahead, so a write is
    # always seen), then two random moments of the resumed runs (a resumed run may also end
    # before its moment comes: then nothing is killed)
    plans = [("during_write", None), ("at", rng.uniform(0.05, 1.2)), ("at", rng.uniform(0.3, 2))]
    killed = []
    for i, (how, when) in enumerate(plans):
        proc = _start(args + (["--resume"] if i else []))
        if how == "at":
            proc.join(timeout=when)
        else:
            assert checkpoint_write_seen(run, proc.is_alive, 60), \
                f"no checkpoint write seen ({seed})"
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(how)
        proc.join()
        last = run / "checkpoints" / "last.pt"
        if last.exists():  # whatever the moment, the checkpoint on disk is whole
            load_checkpoint(last)
    assert killed, f"no run was killed (seed {seed})"
    code, err = cli(capsys, *args, "--resume")
    assert code == 0, f"seed {seed}, kills {plans}: {err}"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2], f"seed {seed}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and np.isfinite(summary["test"]["loss"])


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, epochs=1, limit=120)
    run = tmp_path / "run"
    claim(run, "run")  # what a kill leaves: the marker and the config
    (run / "config.yaml").write_text(dump_config(load_config(cfg)))
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume", "--no-report")
    assert code == 0, err
    assert "nothing to resume" in err and (run / "summary.json").is_file()


@pytest.mark.slow  # two fits in fresh interpreters, each stopped mid-write: about 30 s
@pytest.mark.parametrize("sig,code,said", [("SIGINT", 130, "interrupted"),
                                           ("SIGTERM", 143, "terminated")])
def test_a_signal_during_a_checkpoint_write_ends_cleanly_and_leaves_no_temporary_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sig: str, code: int,
        said: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tlkit.files import LEFTOVER
    from tlkit.train.checkpoint import load_checkpoint

    cfg = default_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("  epochs: 1\n", "  epochs: 4\n"))
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TLKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "tlkit.cli", "fit", str(cfg), "--out",
                             str(run), "--checkpoint-every", "1", "--no-report"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert checkpoint_write_seen(run, lambda: proc.poll() is None, 120), \
            "no checkpoint write seen"
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert said in err and "internal error" not in err and "Traceback" not in err
    leftovers = [p.name for p in run.rglob("*") if LEFTOVER.match(p.name)]
    assert leftovers == []
    load_checkpoint(run / "checkpoints" / "last.pt")  # whole, and its checksum matches
    code2, err2 = cli(capsys, "fit", cfg, "--out", run, "--resume", "--no-report")
    assert code2 == 0, err2


@pytest.mark.slow  # a fit: a few seconds
def test_leftovers_of_a_killed_writer_are_removed_on_the_next_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tlkit.rundir import claim

    cfg = default_config(tmp_path)
    run = tmp_path / "run"
    claim(run, "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".last.pt.tmp4242").write_bytes(b"x" * 1000)  # a SIGKILL's leftover
    (run / ".summary.json.tmp77").write_text("{")
    (run / "model.tmp").mkdir()
    (run / "model.tmp" / "model.safetensors").write_bytes(b"half")
    (run / "notes.tmp1").write_text("a name that is not tlkit's pattern stays")
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume", "--no-report")
    assert code == 0, err
    assert "removed 3 temporary file(s)" in err
    assert not (run / "checkpoints" / ".last.pt.tmp4242").exists()
    assert not (run / ".summary.json.tmp77").exists() and not (run / "model.tmp").exists()
    assert (run / "notes.tmp1").is_file()


def test_a_signal_inside_an_atomic_write_waits_for_the_rename(tmp_path: Path) -> None:
    import os
    import signal

    from tlkit.files import atomic_write

    target = tmp_path / "f.txt"
    target.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("new")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert target.read_text() == "new"  # the rename happened before the interrupt
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# ==================================================================================================
# A full disk, a second writer
# ==================================================================================================


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, epochs=1, limit=120)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    real_save = torch.save
    seen: dict[str, Any] = {"calls": 0}

    def save(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        seen["calls"] += 1
        if seen["calls"] == 4:  # three checkpoints are written; the disk fills on the fourth
            seen["before"] = last.read_bytes()
            f.write(b"half a checkpoint")
            f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    code, err = cli(capsys, "fit", cfg, "--out", run, "--checkpoint-every", "1", "--no-report")
    assert code == 2
    msg = error_line(err)
    assert f"no space left on device writing {last}" in msg
    assert "the previous checkpoint is intact" in msg and "--resume" in msg
    assert last.read_bytes() == seen["before"]
    assert load_checkpoint(last)["state"]["step"] == 3
    assert not [f for f in last.parent.iterdir() if ".tmp" in f.name]
    monkeypatch.undo()  # space freed: the same command with --resume finishes the run
    code, err = cli(capsys, "fit", cfg, "--out", run, "--checkpoint-every", "1", "--no-report",
                    "--resume")
    assert code == 0, err
    assert "resumed at epoch 0, batch 3, step 3" in err


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
])
def test_a_full_disk_in_any_run_directory_write_is_one_message(
        tmp_path: Path, error: Exception) -> None:
    target = tmp_path / "best.safetensors"
    target.write_bytes(b"previous")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"part")
        raise error

    with pytest.raises(UserError, match="no space left on device writing .*best.safetensors; "
                                        "the previous checkpoint is intact"):
        atomic_write(target, write)
    assert target.read_bytes() == b"previous"
    assert [f.name for f in tmp_path.iterdir()] == ["best.safetensors"]


def test_a_full_disk_appending_metrics_is_a_user_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.append_metrics({"epoch": 0})

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(UserError, match="no space left on device writing .*metrics.jsonl"):
        run.append_metrics({"epoch": 1})
    monkeypatch.undo()
    assert run.metrics_rows()[0] == {"epoch": 0}


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    run = RunDir(Path(path))
    claim(run.path, "run")  # as fit does, before it locks
    run.lock()
    ready.set()
    release.wait(60)
    os._exit(0)


def test_a_second_fit_into_a_run_directory_in_use_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    run = tmp_path / "run"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(run), ready, release))  # another fit
    holder.start()
    try:
        assert ready.wait(30)
        for extra in ([], ["--resume"]):
            code, err = cli(capsys, "fit", cfg, "--out", run, *extra)
            assert code == 2
            assert "is in use by another tlkit process" in error_line(err)
        assert sorted(f.name for f in run.iterdir()) == [".lock", ".tlkit"]  # nothing written
    finally:
        release.set()
        holder.join()
    code, err = cli(capsys, "fit", cfg, "--out", run, "--no-report")  # free again
    assert code == 0, err
