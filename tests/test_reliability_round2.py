"""Reliability, round two (issue 18): never touch a user's files, never trust a run's own files,
same data -> same model. Each case is in docs/reliability.md (R2 there).

Fits run in this process through ``tlkit.cli.main``, as in tests/test_reliability.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tlkit.cli import main
from tlkit.rundir import MARKER


def config(tmp: Path, source: str = "digits", *, tc: str = "", data: str = "",
           name: str = "c.yaml") -> Path:
    p = tmp / name
    p.write_text(
        "transfer_config:\n"
        "  source_model: timm:test_efficientnet\n"
        "  pretrained_weights: none\n"
        "  freeze_strategy: none\n"
        "  epochs: 1\n  batch_size: 16\n  min_steps: 0\n  cache: {disk: false}\n"
        f"{tc}"
        "data:\n"
        f"  source: {source}\n"
        "  image_size: 32\n  limit: 120\n"
        f"{data}")
    return p


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if ": error: " in x]
    assert lines, f"no error message in:\n{err}"
    assert "Traceback" not in err
    return lines[-1]


def checksum(folder: Path) -> str:
    """Every path under ``folder`` with its bytes (and nothing else): equal digests mean the
    folder is byte-for-byte the same."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes() if p.is_file() else b"<dir>")
    return h.hexdigest()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


def users_folder(path: Path) -> Path:
    """A project folder of the user's own, holding the file names a run directory uses."""
    (path / "model").mkdir(parents=True)
    (path / "model" / "my_weights.bin").write_bytes(b"the user's own weights")
    (path / "config.yaml").write_text("# my commented config\ntransfer_config: {}\n")
    for name in ("metrics.jsonl", "plan.txt", "report.html", "summary.json"):
        (path / name).write_text(f"the user's {name}\n")
    return path


# ==================================================================================================
# 1. Never touch a user's files
# ==================================================================================================


def test_fit_into_a_users_folder_is_refused_and_leaves_it_byte_for_byte_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    mine = users_folder(tmp_path / "mine")
    before = checksum(mine)
    for extra in ([], ["--resume"], ["--baseline"], ["--tensorboard"]):
        code, err = cli(capsys, "fit", cfg, "--out", mine, *extra)
        assert code == 2, err
        assert "tlkit did not create" in error_line(err) and "choose another --out" in err
        assert checksum(mine) == before, extra


def test_fit_with_out_dot_in_a_project_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = users_folder(tmp_path / "project")
    cfg = config(project, name="train.yaml")
    before = checksum(project)
    monkeypatch.chdir(project)
    code, err = cli(capsys, "fit", "train.yaml", "--out", ".")
    assert code == 2 and "tlkit did not create" in error_line(err)
    assert checksum(project) == before
    assert cfg.is_file()


@pytest.mark.slow  # a fit: a few seconds
def test_an_empty_folder_becomes_a_marked_run_directory_that_resume_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    out = tmp_path / "empty"
    out.mkdir()
    code, err = cli(capsys, "fit", cfg, "--out", out, "--no-report")
    assert code == 0, err
    assert (out / MARKER).is_file() and (out / "summary.json").is_file()
    code, err = cli(capsys, "fit", cfg, "--out", out)  # a finished run: --resume or elsewhere
    assert code == 2 and "already holds a run" in error_line(err)


def test_compare_into_a_users_folder_is_refused_before_measuring_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    mine = users_folder(tmp_path / "mine")
    before = checksum(mine)
    for extra in ([], ["--resume"]):
        code, err = cli(capsys, "compare", cfg, "--out", mine, *extra)
        assert code == 2 and "tlkit did not create" in error_line(err)
        assert checksum(mine) == before
