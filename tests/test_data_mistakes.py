"""Data a model cannot train or be evaluated on exits 2 naming the cause: empty cells, labels the
model never saw, text for an image backbone and images for a text one, a split left empty. Each
case is in docs/reliability.md."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from user_runs import cli, config, error_line, image_table

from tlkit.cli import main


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


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
    table = image_table(tmp, 40, lambda i: "cat" if i % 2 else "dog")
    cfg = config(tmp, source=str(table), limit=None)
    assert main(["fit", str(cfg), "--out", str(tmp / "run"), "--no-report"]) == 0
    return tmp


def test_labels_the_model_never_saw_exit_2_at_evaluate_and_are_ignored_by_predict(
        image_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = image_table(image_run, 6, lambda i: ["cat", "dog", "zebra"][i % 3], "other.csv")
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
