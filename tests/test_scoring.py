"""Batch scoring (`tlkit predict RUN --data FILE_OR_FOLDER --out ...`): inputs without labels,
one row per input with an id and calibrated probabilities, bad rows reported, not fatal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlkit.cli import main
from tlkit.diagnose.calibration import tune_thresholds

IMAGE_CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: top_n_unfrozen
  top_n: 2
  head_lr: 1e-2
  backbone_lr: 3e-3
  warmup_steps: 0
  epochs: 1
  batch_size: 16
  early_stopping_patience: null
  device: cpu
data:
  source: digits
  image_size: 32
  limit: 120
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("scoring_text")
    rng = np.random.default_rng(0)
    rows = ["text,label"]
    for i in range(80):
        word = str(rng.choice(["great", "fine"] if i % 2 else ["awful", "dull"]))
        rows.append(f"the film was {word},{'pos' if i % 2 else 'neg'}")
    (tmp / "train.csv").write_text("\n".join(rows) + "\n")
    raw = {"transfer_config": {"source_model": f"hf:{tiny_bert_dir}",
                               "pretrained_weights": "packaged", "freeze_strategy": "none",
                               "epochs": 1, "batch_size": 16, "head_lr": 1e-2,
                               "warmup_steps": 0, "early_stopping_patience": None,
                               "device": "cpu"},
           "data": {"source": str(tmp / "train.csv"), "max_length": 16, "val_fraction": 0.25}}
    run = tmp / "run"
    fit_run(validate(raw), run)
    return run


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_a_text_only_csv_is_scored_one_row_per_input_with_calibrated_probabilities(
        text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = [f"the film was {w}" for w in ("great", "awful", "fine", "dull")] * 30
    texts[7] = ""  # a bad row: reported by id, the others scored
    src = tmp_path / "texts.csv"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([["text"], *[[t] for t in texts]])
    code, _, err = cli(capsys, "predict", text_run, "--data", src, "--out", tmp_path / "p.csv")
    assert code == 0, err
    got = pd.read_csv(tmp_path / "p.csv", keep_default_na=False, na_values=[""])
    assert len(got) == len(texts) and list(got["id"]) == list(range(1, len(texts) + 1))
    assert got.loc[7, "error"] == "empty text" and "1 row(s) could not be scored" in err
    ok = got.drop(index=7)
    probs = ok[["p_neg", "p_pos"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert set(ok["label"]) <= {"neg", "pos"}
    # calibrated: the raw probabilities divided by the run's validation temperature
    t = json.loads((text_run / "summary.json").read_text())["scoring"]["temperature"]
    assert t != pytest.approx(1.0, abs=1e-3)
    code, _, err = cli(capsys, "predict", text_run, "--data", src, "--out",
                       tmp_path / "raw.jsonl", "--no-calibration")
    assert code == 0, err
    raw = [json.loads(x) for x in (tmp_path / "raw.jsonl").read_text().splitlines()]
    raw_p = np.array([[r["probabilities"]["neg"], r["probabilities"]["pos"]]
                      for r in raw if "error" not in r])
    assert np.allclose(_softmax(np.log(raw_p) / t), probs, atol=1e-4)


@pytest.mark.slow
def test_a_flat_image_folder_is_scored_with_a_bad_file_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tiny.yaml").write_text(IMAGE_CFG)
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "tiny.yaml"), "--out", str(run)]) == 0
    capsys.readouterr()
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    code, _, err = cli(capsys, "predict", run, "--data", folder, "--out", tmp_path / "p.parquet")
    assert code == 0, err
    got = pd.read_parquet(tmp_path / "p.parquet")
    assert sorted(got["id"]) == sorted([f"{i:02d}.png" for i in range(12)] + ["broken.png"])
    bad = got[got["id"] == "broken.png"].iloc[0]
    assert isinstance(bad["error"], str) and bad["error"]
    ok = got[got["error"].isna()]
    p = ok[[c for c in got.columns if c.startswith("p_")]].to_numpy()
    assert len(ok) == 12 and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert (ok["label"] == [c[2:] for c in np.array(got.columns[2:-1])[p.argmax(axis=1)]]).all()


def test_predict_refuses_an_unknown_output_ending_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "predict", tmp_path / "nothing", "--data", tmp_path,
                       "--out", tmp_path / "p.xlsx")
    assert code == 2 and ".csv, .jsonl or .parquet" in err
    assert not (tmp_path / "p.xlsx").exists()


def test_thresholds_are_tuned_per_class_on_validation() -> None:
    # class 0 is separable at 0.3; class 1 at 0.7; class 2 has no positive: 0.5
    probs = np.array([[0.35, 0.8, 0.1], [0.32, 0.75, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.4]])
    y = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    t = tune_thresholds(probs, y)
    assert 0.2 < t[0] <= 0.3 and 0.6 < t[1] <= 0.75 and t[2] == 0.5
