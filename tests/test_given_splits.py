"""A user's own validation and test files, no internal test split, and long-tailed labels: a run
trains on them and says where each split came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlkit.cli import main

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]


def _csv(path: Path, labels: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = ["text,label"]
    for label in labels:
        rows.append(f"{label} {' '.join(rng.choice(WORDS, 4))},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _long_tail() -> list[str]:
    """100 labels over 52 classes: 4 classes with 13 examples each, 48 with one."""
    return [f"c{k:02d}" for k in range(4) for _ in range(13)] + [f"c{k:02d}" for k in range(4, 52)]


def _config(tmp: Path, bert: Path, data: str) -> Path:
    cfg = tmp / "c.yaml"
    cfg.write_text(
        "transfer_config:\n"
        f"  source_model: hf:{bert}\n  freeze_strategy: all_frozen\n  epochs: 2\n"
        "  batch_size: 32\n  cache: {disk: false}\n"
        f"data:\n{data}  max_length: 16\n")
    return cfg


def _fit(tmp: Path, cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    code = main(["fit", str(cfg), "--out", str(tmp / "run"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((tmp / "run" / "summary.json").read_text()), err


def test_fifty_two_classes_in_a_hundred_rows_with_a_given_test_file(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = _csv(tmp_path / "train.csv", _long_tail(), 0)
    test = _csv(tmp_path / "test.csv", [f"c{k:02d}" for k in range(52)] * 2, 1)
    cfg = _config(tmp_path, tiny_bert_dir, f"  source: {train}\n  test: {test}\n")
    summary, err = _fit(tmp_path, cfg, capsys)
    assert summary["data"]["num_classes"] == 52
    assert summary["data"]["sizes"]["test"] == 104  # the given file, whole
    assert summary["data"]["origins"]["test"] == str(test)
    assert "accuracy" in summary["test"] and "[tlkit] test " in err
    # the 48 classes with one example all train; validation is stratified over the other four
    assert len(summary["data"]["train_only_classes"]) == 48
    assert "stay in training only" in err
    assert summary["data"]["sizes"]["train"] + summary["data"]["sizes"]["val"] == 100


def test_a_given_validation_file_and_no_test_split(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = ["pos", "neg"] * 20
    train = _csv(tmp_path / "train.csv", labels, 0)
    val = _csv(tmp_path / "val.csv", labels[:10], 1)
    cfg = _config(tmp_path, tiny_bert_dir,
                  f"  source: {train}\n  validation: {val}\n  test_fraction: 0\n")
    summary, err = _fit(tmp_path, cfg, capsys)
    assert summary["data"]["sizes"] == {"train": 40, "val": 10, "test": 0}
    assert summary["data"]["origins"]["validation"] == str(val)
    assert summary["test"] is None and "validation (no test split)" in err
    # evaluate: the run's validation split, or another file; the missing test split is said
    assert main(["evaluate", str(tmp_path / "run"), "--data", "val"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 10
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "has no test split" in capsys.readouterr().err
