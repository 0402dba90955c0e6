"""Never touch a user's files: ``fit`` and ``compare`` refuse a non-empty folder tlkit did not
create and leave it byte for byte as it was; an empty folder becomes a marked run directory.
Each case is in docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from user_runs import checksum, cli, default_config, error_line

from tlkit.rundir import MARKER


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


def test_fit_into_a_users_folder_is_refused_and_leaves_it_byte_for_byte_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = default_config(tmp_path)
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
    cfg = default_config(project, name="train.yaml")
    before = checksum(project)
    monkeypatch.chdir(project)
    code, err = cli(capsys, "fit", "train.yaml", "--out", ".")
    assert code == 2 and "tlkit did not create" in error_line(err)
    assert checksum(project) == before
    assert cfg.is_file()


@pytest.mark.slow  # a fit: a few seconds
def test_an_empty_folder_becomes_a_marked_run_directory_that_resume_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = default_config(tmp_path)
    out = tmp_path / "empty"
    out.mkdir()
    code, err = cli(capsys, "fit", cfg, "--out", out, "--no-report")
    assert code == 0, err
    assert (out / MARKER).is_file() and (out / "summary.json").is_file()
    code, err = cli(capsys, "fit", cfg, "--out", out)  # a finished run: --resume or elsewhere
    assert code == 2 and "already holds a run" in error_line(err)


def test_compare_into_a_users_folder_is_refused_before_measuring_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = default_config(tmp_path)
    mine = users_folder(tmp_path / "mine")
    before = checksum(mine)
    for extra in ([], ["--resume"]):
        code, err = cli(capsys, "compare", cfg, "--out", mine, *extra)
        assert code == 2 and "tlkit did not create" in error_line(err)
        assert checksum(mine) == before
