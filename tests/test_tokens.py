"""Token classification (named entities): sub-word label alignment, the loss and entity
metrics over word rows, and a fit / evaluate / predict / kill -9 resume on a tiny BERT."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cli_runner import kill_9_when, run_cli
from tlkit.cli import main
from tlkit.data.collate import TextCollate, load_tokenizer
from tlkit.data.sources import load_source
from tlkit.errors import UserError
from tlkit.token_rows import KEPT, START, TAG, TokenLoss, token_metrics

PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin"]
PLACES = ["Paris", "Oslo", "Lima", "Cairo"]
FILLER = ["the", "met", "in", "at", "visited", "works", "for", "today", "and", "went", "to"]


def _conll(path: Path, n: int, seed: int = 0) -> Path:
    """Sentences whose entities are names from fixed lists: people (PER), places (LOC) and
    two-word companies (ORG: 'Acme Corp'), among filler words."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        for _ in range(int(rng.integers(3, 9))):
            r = rng.random()
            if r < 0.15:
                lines.append(f"{rng.choice(PEOPLE)} B-PER")
            elif r < 0.25:
                lines.append(f"{rng.choice(PLACES)} B-LOC")
            elif r < 0.32:
                lines += [f"{rng.choice(['Acme', 'Globex'])} B-ORG", "Corp I-ORG"]
            else:
                lines.append(f"{rng.choice(FILLER)} O")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def _settings(source: Path | str, **extra: object) -> SimpleNamespace:
    base = dict(source=str(source), task="token_classification", text_column=None,
                text_pair_column=None, image_column=None, label_column=None, limit=None,
                val_fraction=0.1, test_fraction=0.1, seed=0, image_size=None, max_length=None,
                on_bad_image="skip", label_separator="|", group_column=None, validation=None,
                test=None)
    base.update(extra)
    return SimpleNamespace(**base)


def test_a_word_split_into_sub_words_takes_its_label_on_the_first_and_cut_words_are_left_out(
        tiny_bert_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_bert_dir))
    words = ["Alice", "visited", "Tyrannosaurus", "today"]
    pieces = [tok.tokenize(w) for w in words]
    assert len(pieces[2]) > 1, "the test needs a word of several sub-words"
    tags = torch.tensor([1, 0, 3, 0])
    inputs, rows = TextCollate(tok, 32)([(words, tags), (["Bob"], torch.tensor([1]))])
    assert rows.shape == (5, 3)  # one row per word, not per sub-word
    assert rows[:, TAG].tolist() == [1, 0, 3, 0, 1]
    assert rows[:, KEPT].tolist() == [1] * 5 and rows[:, START].tolist() == [1, 0, 0, 0, 1]
    length = inputs["input_ids"].shape[1]
    ids = inputs["input_ids"].reshape(-1)[inputs["word_positions"]]
    # each word's row points at its first sub-word: after [CLS], word i starts where the
    # sub-words of the words before it end
    firsts = [tok.convert_tokens_to_ids(p[0]) for p in pieces] + \
        [tok.convert_tokens_to_ids(tok.tokenize("Bob")[0])]
    assert ids.tolist() == firsts
    assert inputs["word_positions"][-1] == length + 1  # the second sentence's first word
    # max_length cuts the sentence after the first sub-word of the third word: that word
    # keeps its label; the word beyond is a row too, left out of the loss
    _, cut = TextCollate(tok, 5)([(words, tags)])
    assert cut[:, KEPT].tolist() == [1, 1, 1, 0]
    loss = TokenLoss()
    out = torch.zeros(4, 4)
    out[0, 1] = out[1, 0] = out[2, 3] = 10.0  # right on the kept words, uniform on the last
    assert float(loss(out, cut)) < 1e-3
    assert float(loss(out, rows[:4])) > 0.1


def test_entity_metrics_regroup_rows_into_sentences_and_score_exact_spans() -> None:
    classes = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # sentence 1: [Ann Lee]PER went to [Rome]LOC; sentence 2: [Bob]PER
    gold = [1, 2, 0, 0, 3, 1]
    starts = [1, 0, 0, 0, 0, 1]
    pred = [1, 0, 0, 0, 3, 1]  # the PER span cut short: wrong entity; LOC and Bob right
    outputs = np.eye(5)[pred] * 5.0
    targets = np.stack([gold, [1] * 6, starts], axis=1)
    m = token_metrics(outputs, targets, classes)
    assert m["entity_precision"] == pytest.approx(2 / 3) and m["entity_recall"] == pytest.approx(2 / 3)
    assert m["per_type"]["LOC"]["f1"] == 1.0 and m["per_type"]["PER"]["support"] == 2
    assert m["token_accuracy"] == pytest.approx(5 / 6)
    # a word cut off by max_length is predicted O, whatever its row's output
    targets[4, KEPT] = 0
    assert token_metrics(outputs, targets, classes)["per_type"]["LOC"]["recall"] == 0.0


def test_token_files_and_their_mistakes(tmp_path: Path) -> None:
    data = load_source(_settings(_conll(tmp_path / "t.conll", 20)))
    assert data.classes == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert isinstance(data.inputs[0], list) and len(data.inputs[0]) == len(data.targets[0])
    rows = [json.dumps({"tokens": w, "tags": [data.classes[t] for t in y]})
            for w, y in zip(data.inputs, data.targets)]
    (tmp_path / "t.jsonl").write_text("\n".join(rows) + "\n")
    again = load_source(_settings(tmp_path / "t.jsonl"))
    assert again.inputs == data.inputs and all(
        np.array_equal(a, b) for a, b in zip(again.targets, data.targets))
    with pytest.raises(UserError, match="reads a CoNLL file"):
        load_source(_settings(tmp_path / "t.csv"))
    with pytest.raises(UserError, match="data.text_column does not apply"):
        load_source(_settings(tmp_path / "t.conll", text_column="text"))
    (tmp_path / "bad.conll").write_text("Alice PERSON\n")
    with pytest.raises(UserError, match="is not O, B-TYPE or I-TYPE"):
        load_source(_settings(tmp_path / "bad.conll"))


def _cfg(tmp: Path, bert: Path, epochs: int = 3, n: int = 240) -> Path:
    import yaml

    _conll(tmp / "train.conll", n)
    cfg = {"transfer_config": {"source_model": f"hf:{bert}", "pretrained_weights": "packaged",
                               "freeze_strategy": "none", "epochs": epochs, "batch_size": 16,
                               "head_lr": 1e-2, "backbone_lr": 1e-3, "warmup_steps": 0,
                               "early_stopping_patience": None, "device": "cpu"},
           "data": {"source": str(tmp / "train.conll"), "task": "token_classification",
                    "max_length": 32, "val_fraction": 0.15, "test_fraction": 0.15}}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_a_token_run_tags_entities_and_predict_gives_their_spans(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, run = _cfg(tmp_path, tiny_bert_dir), tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(run)]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    test = summary["test"]
    assert test["entity_f1"] > 0.8, test  # the names are easy to learn
    assert set(test["per_type"]) == {"LOC", "ORG", "PER"}
    assert summary["calibration"]["temperature"] > 0 and summary["scoring"]["temperature"] > 0
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr()[0])["entity_f1"] == pytest.approx(test["entity_f1"])
    text = "Carol  visited Oslo with Acme Corp"
    assert main(["predict", str(run), text]) == 0
    row = json.loads(capsys.readouterr()[0].splitlines()[0])
    found = {(e["type"], e["text"]) for e in row["entities"]}
    assert found == {("PER", "Carol"), ("LOC", "Oslo"), ("ORG", "Acme Corp")}, row
    for e in row["entities"]:
        assert text[e["char_start"]:e["char_end"]] == e["text"] and 0 < e["score"] <= 1
        assert " ".join(text.split()[e["start"]:e["end"]]) == e["text"]
    assert len(row["tags"]) == 6
    # a token file scored to JSON lines: one row per sentence
    out = tmp_path / "tagged.jsonl"
    assert main(["predict", str(run), "--data", str(tmp_path / "train.conll"), "--out",
                 str(out)]) == 0
    assert len(out.read_text().splitlines()) == 240
    assert main(["predict", str(run), "--data", str(tmp_path / "train.conll"), "--out",
                 str(tmp_path / "tagged.csv")]) == 2
    assert "write them to a .jsonl file" in capsys.readouterr()[1]


@pytest.mark.slow
def test_a_token_run_killed_with_sigkill_resumes_to_the_same_weights(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    from safetensors.torch import load_file

    cfg = _cfg(tmp_path, tiny_bert_dir, epochs=2, n=120)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli("fit", str(cfg), "--out", str(whole)).returncode == 0
    # killed in the second epoch, after a mid-epoch checkpoint
    kill_9_when(["fit", cfg, "--out", killed, "--checkpoint-every", "1"],
                [killed / "checkpoints" / "last.pt", killed / "metrics.jsonl"])
    r = run_cli("fit", str(cfg), "--out", str(killed), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["test"] == sb["test"]


@pytest.mark.slow
def test_the_activation_cache_serves_token_runs_as_the_full_forward_would(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    """Below the top, cached activations carry each word's position (the trained top gives
    the full forward's losses); with every group frozen, the pooled word rows feed the convex
    head solver."""
    import yaml

    from tlkit.config import validate
    from tlkit.run import fit_run

    raw = yaml.safe_load(_cfg(tmp_path, tiny_bert_dir, epochs=2, n=120).read_text())
    raw["transfer_config"].update(freeze_strategy="top_n_unfrozen", top_n=1)
    losses = {}
    for cache in (True, False):
        raw["transfer_config"]["cache"] = {"enabled": cache, "disk": False}
        run = tmp_path / f"top-{cache}"
        fit_run(validate(raw), run)
        losses[cache] = [json.loads(x)["val_loss"] for x in (run / "metrics.jsonl").open()]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    del raw["transfer_config"]["top_n"]  # only top_n_unfrozen reads it
    raw["transfer_config"].update(freeze_strategy="all_frozen", cache={"enabled": True})
    said: list[str] = []
    summary = fit_run(validate(raw), tmp_path / "frozen",
                      event=lambda kind, info: said.append(str(info.get("what", ""))))
    assert any("fitted to convergence on the cached features" in s for s in said)
    assert any("pooled features of train" in s for s in said)
    assert summary["test"]["entity_f1"] > 0.5


def test_commands_that_score_whole_sequences_refuse_a_token_config_with_the_reason(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, tiny_bert_dir, n=10)
    for command in ("probe", "advise"):
        assert main([command, str(cfg)]) == 2
        err = capsys.readouterr()[1]
        assert "token_classification is not supported" in err and "Traceback" not in err
    import yaml

    from tlkit.config import validate

    raw = yaml.safe_load(cfg.read_text())
    raw["transfer_config"]["freeze_strategy"] = "auto"
    with pytest.raises(Exception, match="freeze_strategy auto is for sequence tasks"):
        validate(raw)
