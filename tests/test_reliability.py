"""Reliability: a user's run never ends in a traceback for something the user did, and no crash
loses work. Untrusted files (pickles that carry code, YAML tags), kill -9 at random moments, a
full disk, a second writer, NaN losses, out-of-range settings, bad images and tables, unseen
labels, modality mismatches. Each case is in docs/reliability.md.

Fits run in this process through ``tlkit.cli.main`` (the exit code and message a user sees,
without the seconds a fresh interpreter spends importing torch); kills use forked children.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import pickle
import random
import re
import signal
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tlkit.cli import main
from tlkit.config import dump_config, load_config
from tlkit.errors import UserError
from tlkit.rundir import RunDir, claim
from tlkit.files import atomic_write
from tlkit.train.checkpoint import load_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src" / "tlkit"


def config(tmp: Path, source: str = "digits", *, model: str = "timm:test_efficientnet",
           weights: str = "none", epochs: int = 1, limit: int | None = 120,
           tc: str = "", data: str = "", name: str = "c.yaml") -> Path:
    limit_line = f"  limit: {limit}\n" if limit is not None else ""
    text = (
        "transfer_config:\n"
        f"  source_model: {model}\n"
        f"  pretrained_weights: {weights}\n"
        "  freeze_strategy: none\n"
        "  head_lr: 1e-2\n  backbone_lr: 3e-3\n"
        f"  epochs: {epochs}\n"
        "  batch_size: 16\n  early_stopping_patience: null\n"
        "  min_steps: 0\n"  # one pass per epoch: the steps these tests count
        "  cache: {disk: false}\n"
        f"{tc}"
        "data:\n"
        f"  source: {source}\n"
        "  image_size: 32\n"
        f"{limit_line}{data}"
    )
    p = tmp / name
    p.write_text(text)
    return p


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the command line in this process: (exit code, stderr)."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if ": error: " in x]
    assert lines, f"no error message in:\n{err}"
    assert "Traceback" not in err
    return lines[-1]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


class Payload:
    """A pickle that runs a shell command when unpickled (a harmless marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def pickle_with_code(path: Path, marker: Path, kind: str = "torch") -> Path:
    if kind == "torch":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"w": Payload(marker)}, f)
    return path


# ==================================================================================================
# 1. Untrusted files
# ==================================================================================================


def test_src_loads_pickles_only_with_weights_only_and_yaml_only_safely() -> None:
    """Every torch.load in tlkit passes weights_only=True; nothing calls pickle.load, np.load
    with allow_pickle, or yaml.load with an unsafe loader."""
    problems = []
    for f in sorted(SRC.rglob("*.py")):
        text = f.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start(): text.find(")", m.end()) + 1]
            if "weights_only=True" not in call:
                problems.append(f"{f.name}: {call}")
        for bad in ("pickle.load(", "pickle.loads(", "allow_pickle=True", "yaml.unsafe_load",
                    "yaml.full_load", "Loader=yaml.Loader", "Loader=yaml.FullLoader",
                    "Loader=yaml.UnsafeLoader", "weights_only=False"):
            if bad in text:
                problems.append(f"{f.name}: {bad}")
    assert not problems, problems


@pytest.mark.parametrize("kind", ["torch", "plain"])
def test_pretrained_weights_whose_pickle_carries_code_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    marker = tmp_path / "PWNED"
    weights = pickle_with_code(tmp_path / f"evil_{kind}.pth", marker, kind)
    cfg = config(tmp_path, weights=str(weights))
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    msg = error_line(err)
    assert "pickled Python objects" in msg and "refused" in msg and "safetensors" in msg
    if kind == "torch":
        assert "posix.system" in msg  # the offending global is named
    assert not marker.exists(), "the pickle's code ran"


def test_a_hf_folder_whose_pytorch_model_bin_carries_code_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import BertConfig, BertModel

    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=1, intermediate_size=8)).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    pickle_with_code(folder / "pytorch_model.bin", marker)
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(
        f"example {i},{'ab'[i % 2]}\n" for i in range(40)))
    cfg = config(tmp_path, source=str(tmp_path / "t.csv"), model=f"hf:{folder}",
                 weights="packaged", limit=None)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert "pytorch_model.bin holds pickled Python objects" in error_line(err)
    assert not marker.exists()


def _started_run(tmp: Path, cfg: Path) -> Path:
    """A run directory as a fit leaves it: its resolved config and a checkpoint."""
    run = tmp / "run"
    claim(run, "run")  # tlkit's run directory, marked as fit marks it
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(cfg)))
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n')
    return run


def test_resume_refuses_a_checkpoint_whose_pickle_carries_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    run = _started_run(tmp_path, cfg)
    marker = tmp_path / "PWNED"
    pickle_with_code(run / "checkpoints" / "last.pt", marker)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume")
    assert code == 2
    msg = error_line(err)
    assert "last.pt holds pickled Python objects (posix.system)" in msg and "refused" in msg
    assert not marker.exists()
    # nothing already there was lost
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 0}\n'


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint"])
def test_resume_from_a_damaged_checkpoint_is_a_user_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    cfg = config(tmp_path)
    run = _started_run(tmp_path, cfg)
    (run / "checkpoints" / "last.pt").write_bytes(content)
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume")
    assert code == 2
    assert "last.pt" in error_line(err) and "delete it" in error_line(err)


def test_a_state_dict_given_as_a_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "last.pt")
    with pytest.raises(UserError, match="is not a tlkit checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def test_a_yaml_config_with_a_python_tag_is_refused_and_never_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    cfg = config(tmp_path, tc=f"  scheduler: !!python/object/apply:os.system ['touch {marker}']\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert "never builds objects from tags" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="expands to more than"):
        load_config(p)
    assert time.perf_counter() - t0 < 5


# ==================================================================================================
# 2. Crashes: kill -9, a full disk, a second writer
# ==================================================================================================


def _fit_in_child(args: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os._exit(main(args))


def _start(args: list[str]) -> multiprocessing.process.BaseProcess:
    p = multiprocessing.get_context("fork").Process(target=_fit_in_child, args=(args,))
    p.start()
    return p


def _wait_for_a_checkpoint_write(run: Path, proc: Any, timeout: float = 60) -> bool:
    """Until a checkpoint's temporary file exists (a write in progress)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.is_alive():
        ck = run / "checkpoints"
        if ck.is_dir() and any(f.name.startswith((".last.pt.tmp", ".best.safetensors.tmp"))
                               for f in ck.iterdir()):
            return True
        time.sleep(0.002)
    return False


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
            assert _wait_for_a_checkpoint_write(run, proc), f"no checkpoint write seen ({seed})"
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


# ==================================================================================================
# 3. Numbers
# ==================================================================================================


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkit.train import loop

    real = loop.loss_function

    def loss_function(task: str, *args: Any, **kwargs: Any) -> Any:
        fn, calls = real(task, *args, **kwargs), [0]

        class Diverging(torch.nn.Module):
            def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                calls[0] += 1
                loss = fn(out, target)
                return loss * float("nan") if calls[0] >= 5 else loss  # the 5th batch diverges

        return Diverging()

    monkeypatch.setattr(loop, "loss_function", loss_function)
    cfg = config(tmp_path, epochs=1, limit=120)
    run = tmp_path / "run"
    code, err = cli(capsys, "fit", cfg, "--out", run, "--checkpoint-every", "1", "--no-report")
    assert code == 2
    msg = error_line(err)
    assert "the training loss became nan at epoch 0, batch 4 (optimizer step 4)" in msg
    assert "learning rate too high" in msg and "last good checkpoint is kept" in msg
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def _image_table(tmp: Path, n: int, label: Any, name: str = "t.csv") -> Path:
    rng = np.random.default_rng(0)
    (tmp / "imgs").mkdir(exist_ok=True)
    rows = ["path,label"]
    for i in range(n):
        f = tmp / "imgs" / f"{i}.png"
        if not f.exists():
            Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(f)
        rows.append(f"imgs/{i}.png,{label(i)}")
    p = tmp / name
    p.write_text("\n".join(rows) + "\n")
    return p


def test_an_infinite_regression_target_stops_the_run_with_the_cause(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _image_table(tmp_path, 60, lambda i: "inf" if i % 4 == 0 else i / 10)
    cfg = config(tmp_path, source=str(table), limit=None, data="  task: regression\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 2
    msg = error_line(err)
    assert "the training loss became inf at epoch 0" in msg and "bad targets" in msg


@pytest.mark.parametrize("override, where", [
    ("transfer_config.head_lr=1e6", "head_lr"),
    ("transfer_config.head_lr=0", "head_lr"),
    ("transfer_config.backbone_lr=-1e-4", "backbone_lr"),
    ("transfer_config.backbone_lr=100", "backbone_lr"),
    ("transfer_config.head_lr=.nan", "head_lr"),
    ("transfer_config.head_lr=.inf", "head_lr"),
    ("transfer_config.batch_size=0", "batch_size"),
    ("transfer_config.batch_size=10000000", "batch_size"),
    ("transfer_config.batch_size=16.5", "batch_size"),
    ("transfer_config.epochs=0", "epochs"),
    ("transfer_config.epochs=100000", "epochs"),
    ("transfer_config.epochs=-3", "epochs"),
    ("transfer_config.gradient_accumulation_steps=0", "gradient_accumulation_steps"),
    ("transfer_config.warmup_steps=-1", "warmup_steps"),
    ("transfer_config.max_grad_norm=.inf", "max_grad_norm"),
    ("transfer_config.seed=-1", "transfer_config.seed"),
    ("transfer_config.seed=4294967296", "transfer_config.seed"),
    ("data.seed=99999999999999999999", "data.seed"),
    ("data.label_separator=''", "label_separator"),
    ("adaptation.pretrain.lr=2", "adaptation.pretrain.lr"),
    ("diagnostics.scratch_lr=0", "diagnostics.scratch_lr"),
])
def test_rates_batch_sizes_and_epochs_out_of_range_are_refused_when_the_config_loads(
        tmp_path: Path, override: str, where: str) -> None:
    cfg = config(tmp_path)
    with pytest.raises(UserError) as info:
        load_config(cfg, [override])
    assert where in str(info.value)


def test_an_absurd_learning_rate_exits_2_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--set",
                    "transfer_config.head_lr=1e6")
    assert code == 2
    assert "transfer_config.head_lr: Input should be less than or equal to 10" in err
    assert not (tmp_path / "run").exists()


# ==================================================================================================
# 4. Data
# ==================================================================================================


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (400 MP): a decompression bomb, in 100
    bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def bad_image(folder: Path, kind: str) -> Path:
    if kind == "corrupt":
        p = folder / "corrupt.jpg"
        p.write_bytes(os.urandom(2000))
    elif kind == "truncated":
        p = folder / "truncated.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:600])
    elif kind == "zero_byte":
        p = folder / "empty.png"
        p.write_bytes(b"")
    else:
        p = bomb_png(folder / "bomb.png")
    return p


def _folder(tmp: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp / "imgs" / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(
                tmp / "imgs" / c / f"{i}.png")
    return tmp / "imgs"


BAD = ["corrupt", "truncated", "zero_byte", "decompression_bomb"]
REASON = {"corrupt": "UnidentifiedImageError", "truncated": "truncated",
          "zero_byte": "UnidentifiedImageError", "decompression_bomb": "DecompressionBombError"}


@pytest.mark.parametrize("kind", BAD)
def test_a_bad_image_under_on_bad_image_error_exits_2_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    root = _folder(tmp_path)
    bad = bad_image(root / "a", kind)
    cfg = config(tmp_path, source=str(root), limit=None, data="  on_bad_image: error\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    msg = error_line(err)
    assert str(bad) in msg and REASON[kind] in msg and "on_bad_image: skip" in msg


def test_bad_images_under_the_default_skip_are_counted_and_the_run_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path)
    for kind in BAD:
        bad_image(root / "b", kind)
    cfg = config(tmp_path, source=str(root), limit=None,
                 data="  val_fraction: 0.25\n  test_fraction: 0.25\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == summary["data"]["skipped_images"] == 4


def test_a_decompression_bomb_is_refused_without_decoding_it(tmp_path: Path) -> None:
    from tlkit.data.images import image_problem

    t0 = time.perf_counter()
    problem = image_problem(bomb_png(tmp_path / "bomb.png"))
    assert problem is not None and "DecompressionBombError" in problem
    assert time.perf_counter() - t0 < 1  # read from the header, never decoded


def test_odd_mode_images_train_as_rgb_with_nothing_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path, per_class=10)
    Image.new("CMYK", (12, 12), (0, 255, 0, 0)).save(root / "a" / "cmyk.jpg")
    Image.fromarray(np.full((12, 12), 40000, np.uint16)).save(root / "a" / "deep.png")  # I;16
    pal = Image.new("P", (12, 12), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(root / "b" / "palette.png", transparency=0)
    Image.new("RGBA", (12, 12), (0, 0, 255, 128)).save(root / "b" / "rgba.png")
    assert Image.open(root / "a" / "deep.png").mode.startswith("I")
    cfg = config(tmp_path, source=str(root), limit=None, epochs=1,
                 data="  on_bad_image: error\n  val_fraction: 0.25\n  test_fraction: 0.25\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 0


@pytest.mark.parametrize("case, table, expect", [
    ("missing_text", "text,label\nhello,a\n,b\nworld,a\nagain,b\n",
     "column 'text' of .* is empty in 1 row\\(s\\) \\(data rows 2\\)"),
    ("missing_label", "text,label\nhello,a\nthere,\nworld,a\nagain,b\n",
     "column 'label' of .* is empty in 1 row\\(s\\) \\(data rows 2\\)"),
])
def test_csv_rows_with_a_missing_text_or_label_exit_2_naming_the_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, table: str,
        expect: str) -> None:
    (tmp_path / "t.csv").write_text(table)
    cfg = config(tmp_path, source=str(tmp_path / "t.csv"), limit=None)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert re.search(expect, error_line(err)), err


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of a tiny image model on a table of image paths labelled cat / dog."""
    tmp = tmp_path_factory.mktemp("image_run")
    os.environ.setdefault("TLKIT_CACHE", str(tmp / "cache"))
    table = _image_table(tmp, 40, lambda i: "cat" if i % 2 else "dog")
    cfg = config(tmp, source=str(table), limit=None)
    assert main(["fit", str(cfg), "--out", str(tmp / "run"), "--no-report"]) == 0
    return tmp


def test_labels_the_model_never_saw_exit_2_at_evaluate_and_are_ignored_by_predict(
        image_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _image_table(image_run, 6, lambda i: ["cat", "dog", "zebra"][i % 3], "other.csv")
    code, err = cli(capsys, "evaluate", image_run / "run", "--data", other)
    assert code == 2
    msg = error_line(err)
    assert "labels the model was not trained on: 'zebra'" in msg and "cat, dog" in msg
    # predict scores the file's inputs; a label column, whatever it holds, plays no part
    code, err = cli(capsys, "predict", image_run / "run", "--data", other)
    assert code == 0, err
    assert "scored 6 rows" in err


def test_text_data_given_to_an_image_model_at_evaluate_exits_2(
        image_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (image_run / "texts.csv").write_text("text,label\nnice,cat\nbad,dog\n")
    code, err = cli(capsys, "evaluate", image_run / "run", "--data", image_run / "texts.csv")
    assert code == 2
    assert "holds text but the backbone takes images" in error_line(err)


def test_a_split_left_empty_by_limit_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, limit=3)  # digits: 10 classes
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    msg = error_line(err)
    assert "split would be empty" in msg or "fewer than the" in msg
    assert "limit" in msg or "val_fraction" in msg or "add data" in msg


def test_an_image_backbone_given_text_data_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(
        f"review {i},{'ab'[i % 2]}\n" for i in range(40)))
    cfg = config(tmp_path, source=str(tmp_path / "t.csv"), limit=None)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert "is a image backbone but the data is text" in error_line(err)


def test_a_text_backbone_given_image_data_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path) -> None:
    cfg = config(tmp_path, model=f"hf:{tiny_bert_dir}", weights="packaged")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert "is a text backbone but the data is image" in error_line(err)


@pytest.mark.parametrize("kind", BAD)
def test_an_image_damaged_after_the_data_loaded_is_a_user_error(tmp_path: Path, kind: str) -> None:
    """The files were checked when the data loaded; one replaced during training is named."""
    from tlkit.backbones.base import ImagePreprocessing
    from tlkit.data.transforms import ImageTransform

    good = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(good)
    transform = ImageTransform(ImagePreprocessing(input_size=8, resize_size=8))
    assert transform(good).shape == (3, 8, 8)
    bad = bad_image(tmp_path, kind)
    bad.replace(good)
    with pytest.raises(UserError, match="x.png can no longer be read"):
        transform(good)


def test_a_damaged_feature_cache_file_is_computed_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, limit=120).read_text().replace(
        "freeze_strategy: none", "freeze_strategy: all_frozen").replace(
        "cache: {disk: false}", "cache: {disk: true}")
    (tmp_path / "c.yaml").write_text(cfg)
    code, err = cli(capsys, "fit", tmp_path / "c.yaml", "--out", tmp_path / "a", "--no-report")
    assert code == 0, err
    files = list((tmp_path / "cache" / "features").rglob("*.pt"))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:100])  # cut short, as by a crash or a full disk
    code, err = cli(capsys, "fit", tmp_path / "c.yaml", "--out", tmp_path / "b", "--no-report")
    assert code == 0, err
    assert "cannot be used" in err and "computing the features again" in err
