"""Leakage between the splits: the same data given for two splits is refused before anything
trains (``diagnostics.allow_overlap: true`` runs anyway), and the inputs the splits share are
counted in the log and in summary.json's ``data.overlap``."""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tlkit.cli import main
from tlkit.config import DataConfig
from tlkit.data.fingerprint import check_identical, describe_overlap, identical_inputs, overlap_of
from tlkit.data.sources import load_source
from tlkit.data.splits import make_splits
from tlkit.data.types import LabelledData
from tlkit.errors import UserError

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "eta"]


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` distinct (text, label) rows."""
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    while len(out) < n:
        label = ["pos", "neg"][len(out) % 2]
        out.setdefault(f"{label} {' '.join(rng.choice(WORDS, 5))} {seed}", label)
    return list(out.items())


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows),
                    encoding="utf-8")
    return path


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, 255 - value, value // 2)).save(path)


def _image_folder(root: Path, per_class: int, start: int) -> Path:
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            _png(root / name / f"{name}{start + i}.png", (start + i) * 7 + c * 3)
    return root


# --------------------------------------------------------------------------------------------------
# The same data given for two splits
# --------------------------------------------------------------------------------------------------


def _spellings(tmp: Path) -> dict[str, tuple[str, str]]:
    """(data.source, data.test) pairs naming the same data, each spelled another way."""
    a = _csv(tmp / "reviews.csv", _rows(40, 0))
    shutil.copy(a, tmp / "copy.csv")
    os.symlink(a, tmp / "link.csv")
    os.link(a, tmp / "hard.csv")
    (tmp / "sub").mkdir()
    return {
        "the same path": (str(a), str(a)),
        "relative and absolute": ("reviews.csv", str(a)),
        "with ./ and ..": ("./reviews.csv", "sub/../reviews.csv"),
        "through a symbolic link": ("reviews.csv", "link.csv"),
        "through a hard link": ("reviews.csv", "hard.csv"),
        "a byte-identical copy": ("reviews.csv", "copy.csv"),
    }


@pytest.mark.parametrize("how", ["the same path", "relative and absolute", "with ./ and ..",
                                 "through a symbolic link", "through a hard link",
                                 "a byte-identical copy"])
def test_the_same_file_for_two_splits_is_refused_however_it_is_spelled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.chdir(tmp_path)
    source, test = _spellings(tmp_path)[how]
    cfg = DataConfig(source=source, test=test)
    with pytest.raises(UserError) as e:
        check_identical(cfg, allow=False)
    msg = str(e.value)
    assert "data.source and data.test" in msg and "allow_overlap: true" in msg
    assert "tested on the rows it trains on" in msg and "Fix:" in msg
    # allowed: said, not refused
    assert [f.first + " " + f.second for f in check_identical(cfg, allow=True)] == \
        ["data.source data.test"]


def test_every_pair_of_the_three_keys_is_compared(tmp_path: Path) -> None:
    a = _csv(tmp_path / "a.csv", _rows(30, 0))
    b = _csv(tmp_path / "b.csv", _rows(30, 1))
    # validation and test the same file, the source another: model selection on the test rows
    found = identical_inputs(DataConfig(source=str(a), validation=str(b), test=str(b)))
    assert [(f.first, f.second) for f in found] == [("data.validation", "data.test")]
    with pytest.raises(UserError, match="best epoch on its test rows"):
        check_identical(DataConfig(source=str(a), validation=str(b), test=str(b)), allow=False)
    # all three the same: the three pairs, in one message
    with pytest.raises(UserError) as e:
        check_identical(DataConfig(source=str(a), validation=str(a), test=str(a)), allow=False)
    assert str(e.value).count(" and data.") == 3
    # other files, or a file of other bytes of the same size: nothing to refuse
    c = tmp_path / "c.csv"
    c.write_bytes(a.read_bytes()[:-2] + b"x\n")
    assert c.stat().st_size == a.stat().st_size
    assert identical_inputs(DataConfig(source=str(a), validation=str(b), test=str(c))) == []


def test_identical_image_folders_and_one_packaged_set_are_refused(tmp_path: Path) -> None:
    train = _image_folder(tmp_path / "train", 4, 0)
    copy = tmp_path / "copy"
    shutil.copytree(train, copy)
    os.symlink(train, tmp_path / "link")
    for test in (str(train), str(tmp_path / "link"), str(copy)):
        with pytest.raises(UserError, match="allow_overlap"):
            check_identical(DataConfig(source=str(train), test=test), allow=False)
    found = identical_inputs(DataConfig(source=str(train), test=str(copy)))
    assert "folders of identical files" in found[0].what and "8 files" in found[0].what
    # one image changed, or one more: other folders
    _png(copy / "cat" / "cat0.png", 200)
    assert identical_inputs(DataConfig(source=str(train), test=str(copy))) == []
    # a packaged set named twice
    with pytest.raises(UserError, match="packaged set 'digits'"):
        check_identical(DataConfig(source="digits", test="digits"), allow=False)


def test_fit_with_the_same_file_for_every_split_exits_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path / "reviews.csv", _rows(40, 0))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n  source_model: minilm-l6\n"
                   f"data:\n  source: {data}\n  validation: {data}\n  test: {data}\n")
    code = main(["fit", str(cfg), "--out", str(tmp_path / "run"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "data.source and data.validation name the same file" in err
    assert "allow_overlap" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@pytest.mark.parametrize("command", [["plan"], ["advise", "--table-only"],
                                     ["compare", "--no-advise", "--strategies", "all_frozen"],
                                     ["rank", "--backbones", "minilm-l6"], ["probe"]])
def test_every_command_that_measures_refuses_the_same_file_for_two_splits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """plan, advise, compare, rank and probe refuse what fit refuses, before any measuring
    (before: advise's and compare's trials trained and tested on the same rows)."""
    data = _csv(tmp_path / "reviews.csv", _rows(40, 0))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n  source_model: minilm-l6\n"
                   f"data:\n  source: {data}\n  test: {data}\n")
    extra = ["--out", str(tmp_path / "cmp")] if command[0] == "compare" else []
    code = main([command[0], str(cfg), *command[1:], *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "data.source and data.test name the same file" in err and "allow_overlap" in err
    assert not (tmp_path / "cmp").exists()


def test_the_api_refuses_one_dataframe_given_for_two_splits(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    import tlkit

    frame = pd.DataFrame(_rows(40, 0), columns=["text", "label"])
    config = {"transfer_config": {"source_model": "minilm-l6"},
              "data": {"source": frame, "test": frame.copy()}}
    with pytest.raises(UserError, match="allow_overlap"):
        tlkit.fit(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# Rows shared between the splits
# --------------------------------------------------------------------------------------------------


def test_rows_shared_with_a_given_test_file_are_counted_after_normalisation(
        tmp_path: Path) -> None:
    train_rows = _rows(60, 0)
    fresh = _rows(20, 1)
    # five of the training texts again, written another way: case, spacing, Unicode form
    again = [(train_rows[0][0].upper(), "pos"),
             ("  " + train_rows[1][0].replace(" ", "\t  "), "neg"),
             (train_rows[2][0], "neg"),  # the same input with another label is shared too
             (train_rows[3][0] + " café", "pos"), (train_rows[4][0], "neg")]
    source = _csv(tmp_path / "train.csv", train_rows[:3] + [(train_rows[3][0] + " café", "pos")]
                  + train_rows[4:])
    test = _csv(tmp_path / "test.csv",
                fresh + [(unicodedata.normalize("NFD", t), lab) for t, lab in again])
    cfg = DataConfig(source=str(source), test=str(test), val_fraction=0.2)
    splits = make_splits(load_source(cfg), cfg)
    found = overlap_of(splits)
    def norm(t: str) -> str:
        return " ".join(unicodedata.normalize("NFC", t).split()).casefold()

    in_train = {norm(t) for t in splits.train.inputs}
    expected = sum(norm(t) in in_train for t, _ in again)
    assert found["train-test"]["rows"] == expected > 0
    assert found["train-test"]["of"] == 25
    assert found["train-val"]["rows"] == 0  # the source's rows are distinct
    # each of the five is in training or validation (the cut put some there)
    assert found["train-test"]["rows"] + found["val-test"]["rows"] == 5
    assert 1 <= len(found["train-test"]["examples"]) <= 3
    assert "NFC" in found["compared"] and "case folded" in found["compared"]
    said = describe_overlap(found)
    assert said is not None and f"{expected} of 25 test rows" in said


def test_duplicate_rows_in_one_source_are_counted_across_the_cuts(tmp_path: Path) -> None:
    rows = _rows(50, 0)
    source = _csv(tmp_path / "dup.csv", rows + rows[:25])  # half the rows twice
    cfg = DataConfig(source=str(source), val_fraction=0.2, test_fraction=0.2)
    splits = make_splits(load_source(cfg), cfg)
    found = overlap_of(splits)
    train, val, test = (set(s.inputs) for s in (splits.train, splits.val, splits.test))
    assert found["train-test"]["rows"] == sum(t in train for t in splits.test.inputs) > 0
    assert found["train-val"]["rows"] == sum(t in train for t in splits.val.inputs)
    assert found["val-test"]["rows"] == sum(t in val for t in splits.test.inputs)
    # distinct rows: nothing shared, and nothing for the log to say
    clean = _csv(tmp_path / "clean.csv", rows)
    cfg = DataConfig(source=str(clean), val_fraction=0.2, test_fraction=0.2)
    none = overlap_of(make_splits(load_source(cfg), cfg))
    assert [none[p]["rows"] for p in ("train-val", "train-test", "val-test")] == [0, 0, 0]
    assert describe_overlap(none) is None
    assert test  # (used above)


def _data(inputs: list[Any], modality: str = "text") -> LabelledData:
    return LabelledData("x", modality, "single_label", inputs,  # type: ignore[arg-type]
                        np.zeros(len(inputs), np.int64), ["a"])


class _Splits:
    def __init__(self, train: LabelledData, val: LabelledData, test: LabelledData | None) -> None:
        self.train, self.val, self.test = train, val, test


def test_pairs_words_and_images_are_compared_as_what_they_are(tmp_path: Path) -> None:
    # sentence pairs: the pair, in order
    pairs = _Splits(_data([("A cat", "sits"), ("a dog", "runs")]),
                    _data([("a  CAT", "sits"), ("runs", "a dog")]), None)
    found = overlap_of(pairs)
    assert found["train-val"]["rows"] == 1 and "train-test" not in found
    assert found["train-val"]["examples"] == ["a  CAT ||| sits"]
    # tagged sentences: their words
    words = _Splits(_data([["EU", "rejects", "German"]]), _data([["eu", "rejects", "german"]]),
                    _data([["EU", "rejects"]]))
    assert overlap_of(words)["train-val"]["rows"] == 1
    assert overlap_of(words)["train-test"]["rows"] == 0
    # image files: by content, whatever their names; arrays by their pixels
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    shutil.copy(tmp_path / "a.png", tmp_path / "renamed.png")
    files = _Splits(_data([tmp_path / "a.png", tmp_path / "b.png"], "image"),
                    _data([tmp_path / "renamed.png"], "image"), None)
    found = overlap_of(files)
    assert found["train-val"]["rows"] == 1 and "SHA-256" in found["compared"]
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    arrays = _Splits(_data([pixels], "image"), _data([pixels.copy(), pixels[::-1].copy()], "image"),
                     None)
    assert overlap_of(arrays)["train-val"]["rows"] == 1


@pytest.mark.slow  # a fit of a tiny model: a few seconds
def test_allow_overlap_runs_and_reports_the_overlap_in_the_log_and_summary(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path / "reviews.csv", _rows(40, 0))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n"
                   f"  source_model: hf:{tiny_bert_dir}\n  freeze_strategy: all_frozen\n"
                   "  cache: {disk: false}\n"
                   f"data:\n  source: {data}\n  test: {data}\n  max_length: 16\n"
                   "diagnostics:\n  allow_overlap: true\n")
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run"), "--no-report"]) == 0
    err = capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    overlap = summary["data"]["overlap"]
    sizes = summary["data"]["sizes"]  # every test row is a training or a validation row
    assert (overlap["train-test"]["rows"], overlap["train-test"]["of"]) == (sizes["train"], 40)
    assert (overlap["val-test"]["rows"], overlap["train-val"]["rows"]) == (sizes["val"], 0)
    assert len(overlap["train-test"]["examples"]) == 3
    assert overlap["identical_files"] == ["data.source and data.test name the same file "
                                          f"({str(data)!r})"]
    assert "data overlap: " in err and f"{sizes['train']} of 40 test rows" in err
    assert err.index("data overlap") < err.index("training")  # before training
    # evaluate reads the run as before
    assert main(["evaluate", str(tmp_path / "run")]) == 0
