"""Sentence pairs (entailment, paraphrase, similarity): `data.text_pair_column` reads two texts
per example, the tokenizer encodes them as one pair, and fit, the cache, the classical baseline,
predict and batch scoring take pairs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tlkit.cli import main
from tlkit.data.collate import TextCollate, load_tokenizer, tokenize
from tlkit.data.sources import load_source
from tlkit.data.types import split_pair
from tlkit.errors import UserError

WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle"]


def _pairs_csv(path: Path, n: int, seed: int = 0, with_labels: bool = True) -> Path:
    """Premise/hypothesis pairs; the label says whether the hypothesis names the premise's
    object: only the pair together tells (each text alone is uninformative)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["premise", "hypothesis", *(["label"] if with_labels else [])])
        for i in range(n):
            a = str(rng.choice(WORDS))
            same = i % 2 == 0
            b = a if same else str(rng.choice([x for x in WORDS if x != a]))
            row = [f"there is a {a} here", f"i see a {b}"]
            w.writerow(row + (["entailed" if same else "not_entailed"] if with_labels else []))
    return path


def _settings(source: Path, **extra: object) -> SimpleNamespace:
    base = dict(source=str(source), task="single_label", text_column="premise",
                text_pair_column="hypothesis", image_column=None, label_column=None,
                limit=None, val_fraction=0.2, test_fraction=0.1, seed=0, image_size=None,
                max_length=None, on_bad_image="skip", label_separator="|", group_column=None,
                validation=None, test=None)
    base.update(extra)
    return SimpleNamespace(**base)


def test_a_pair_column_gives_pairs_and_the_tokenizer_encodes_them_as_one_pair(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    data = load_source(_settings(_pairs_csv(tmp_path / "p.csv", 10)))
    assert data.modality == "text" and isinstance(data.inputs[0], tuple)
    assert data.inputs[0][0].startswith("there is a ") and data.inputs[0][1].startswith("i see")
    tok = load_tokenizer(str(tiny_bert_dir))
    collate = TextCollate(tok, 32)
    enc, _ = collate([(data.inputs[0], torch.tensor(0)), (data.inputs[1], torch.tensor(1))])
    want = tok([data.inputs[0][0], data.inputs[1][0]], [data.inputs[0][1], data.inputs[1][1]],
               padding="longest", truncation=True, max_length=32, return_tensors="pt")
    assert torch.equal(enc["input_ids"], want["input_ids"])
    # segment ids: 0 over [CLS] first [SEP], 1 over second [SEP]; two [SEP]s in each pair
    types = enc["token_type_ids"][0][enc["attention_mask"][0].bool()]
    assert types[0] == 0 and types[-1] == 1 and set(types.tolist()) == {0, 1}
    assert int((enc["input_ids"][0] == tok.sep_token_id).sum()) == 2
    # truncation cuts a long pair to max_length, keeping both texts
    long = ("word " * 50, "other " * 50)
    ids = tokenize(tok, [long], 16)["input_ids"][0]
    assert len(ids) == 16 and ids.count(tok.sep_token_id) == 2


def test_a_missing_pair_column_or_a_pair_column_on_a_packaged_set_is_a_clear_error(
        tmp_path: Path) -> None:
    src = _pairs_csv(tmp_path / "p.csv", 10)
    with pytest.raises(UserError, match="data.text_pair_column 'second' is not a column"):
        load_source(_settings(src, text_pair_column="second"))
    with pytest.raises(UserError, match="needs a CSV / JSONL / Parquet source"):
        load_source(_settings("rotten_tomatoes"))
    assert split_pair("a b ||| c d") == ("a b", "c d")
    with pytest.raises(ValueError):
        split_pair("no separator")


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("pairs")
    _pairs_csv(tmp / "train.csv", 160)
    raw = {"transfer_config": {"source_model": f"hf:{tiny_bert_dir}",
                               "pretrained_weights": "packaged",
                               "freeze_strategy": "top_n_unfrozen", "top_n": 1,
                               "epochs": 2, "batch_size": 16, "head_lr": 1e-2,
                               "backbone_lr": 1e-3, "warmup_steps": 0,
                               "early_stopping_patience": None, "device": "cpu"},
           "data": {"source": str(tmp / "train.csv"), "text_column": "premise",
                    "text_pair_column": "hypothesis", "max_length": 24,
                    "val_fraction": 0.25}}
    run = tmp / "run"
    fit_run(validate(raw), run)
    return run


@pytest.mark.slow
def test_a_pair_run_trains_saves_its_columns_and_predict_takes_pairs(
        pair_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((pair_run / "model" / "model.json").read_text())
    assert meta["pairs"] == {"text_column": "premise", "text_pair_column": "hypothesis"}
    summary = json.loads((pair_run / "summary.json").read_text())
    assert "accuracy" in summary["test"]
    # the command line: two texts joined by |||
    code = main(["predict", str(pair_run), "there is a lemon here ||| i see a lemon"])
    out, _ = capsys.readouterr()
    assert code == 0
    row = json.loads(out.splitlines()[0])
    assert row["input"] == "there is a lemon here ||| i see a lemon"
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    # one text where a pair is needed: exit 2, saying how to write a pair
    code = main(["predict", str(pair_run), "there is a lemon here"])
    _, err = capsys.readouterr()
    assert code == 2 and "'|||'" in err and "Traceback" not in err
    # batch scoring reads both columns; the same pair scores the same either way
    src = _pairs_csv(tmp_path / "unlabelled.csv", 30, seed=3, with_labels=False)
    code = main(["predict", str(pair_run), "--data", str(src), "--out", str(tmp_path / "p.csv")])
    capsys.readouterr()
    assert code == 0
    scored = pd.read_csv(tmp_path / "p.csv")
    assert len(scored) == 30 and scored.get("error", pd.Series(dtype=str)).isna().all()
    first = pd.read_csv(src).iloc[0]
    code = main(["predict", str(pair_run), f"{first.premise} ||| {first.hypothesis}"])
    one = json.loads(capsys.readouterr()[0].splitlines()[0])
    p_cols = [c for c in scored.columns if c.startswith("p_")]
    got = {c[2:]: float(scored.iloc[0][c]) for c in p_cols}
    for k, v in one["probabilities"].items():
        assert got[k] == pytest.approx(v, abs=1e-4)
    # the Python API: a DataFrame with both columns, or a list of (text, text) tuples
    import tlkit

    run = tlkit.load(pair_run)
    frame = run.predict(pd.read_csv(src).head(4))
    listed = run.predict([(first.premise, first.hypothesis)])
    assert len(frame) == 4 and frame.iloc[0]["label"] == listed.iloc[0]["label"]


@pytest.mark.slow
def test_the_classical_baseline_reads_pairs_and_learns_what_only_the_pair_tells(
        tmp_path: Path) -> None:
    from tlkit.diagnose.classical import fit_classical

    data = load_source(_settings(_pairs_csv(tmp_path / "p.csv", 400)))
    n = len(data)
    idx = np.arange(n)
    train, test = data.subset(idx[: 300]), data.subset(idx[300:])
    val = train.subset(np.arange(0))
    result = fit_classical(train, val, test, 2, seed=0)
    acc = result.record("single_label", val, test, data.classes)["test"]["accuracy"]
    assert acc > 0.9  # the shared words: the product features
