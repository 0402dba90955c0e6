"""data.task question_answering end to end on a tiny BERT: the config's refusals, a fit on a
handful of synthetic SQuAD-format questions (windows, the start / end loss, exact match and
F1 per question), predict --question / --context and --data, the hf export as a stock
AutoModelForQuestionAnswering that answers with predict's span, and a killed run resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from cli_runner import kill_9_when, run_cli
from tlkit.cli import main
from tlkit.config import validate

PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin"]
PLACES = ["Paris", "Oslo", "Lima", "Cairo"]
CONTEXT = "Yesterday {p} travelled to {c} by train. The weather was fine."


def _squad(path: Path, n: int = 40, seed: int = 0) -> Path:
    """``n`` paragraphs, two questions each (who travelled, where to): the answer is always
    the second word or the fifth, an easy span to learn."""
    rng = np.random.default_rng(seed)
    paragraphs = []
    for i in range(n):
        p, c = str(rng.choice(PEOPLE)), str(rng.choice(PLACES))
        context = CONTEXT.format(p=p, c=c)
        paragraphs.append({"context": context, "qas": [
            {"id": f"{i}-where", "question": "Where did the traveller go?",
             "answers": [{"text": c, "answer_start": context.index(c)}]},
            {"id": f"{i}-who", "question": "Who travelled?",
             "answers": [{"text": p, "answer_start": context.index(p)}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "trips",
                                                            "paragraphs": paragraphs}]}))
    return path


def _raw(tmp: Path, bert: Path, **data: Any) -> dict[str, Any]:
    return {"transfer_config": {"source_model": f"hf:{bert}", "pretrained_weights": "packaged",
                                "freeze_strategy": "none", "epochs": 2, "batch_size": 8,
                                "head_lr": 1e-2, "backbone_lr": 1e-3, "warmup_steps": 0,
                                "early_stopping_patience": None, "device": "cpu"},
            "data": {"source": str(_squad(tmp / "trips.json")), "task": "question_answering",
                     "max_length": 32, "doc_stride": 8, "val_fraction": 0.2,
                     "test_fraction": 0.2, **data}}


def _cfg(tmp: Path, bert: Path, **data: Any) -> Path:
    path = tmp / "qa.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp, bert, **data)))
    return path


@pytest.mark.parametrize("change,said", [
    ({"transfer_config": {"freeze_strategy": "contrastive"}},
     "cannot train question answering"),
    ({"transfer_config": {"freeze_strategy": "lp_ft"}}, "choose none, top_n_unfrozen"),
    ({"transfer_config": {"freeze_strategy": "all_frozen"}}, "with head_solver: sgd"),
    ({"transfer_config": {"head": {"type": "mlp"}}}, "set head.type: linear"),
    ({"transfer_config": {"pooling": "cls"}}, "remove pooling"),
    ({"adaptation": {"method": "none", "target": {"source": "x.csv"}}},
     "remove the adaptation section"),
    ({"data": {"doc_stride": 16}}, "below half of data.max_length"),
])
def test_a_question_answering_config_is_refused_with_the_fix(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str],
        change: dict[str, Any], said: str) -> None:
    raw = _raw(tmp_path, tiny_bert_dir)
    for section, keys in change.items():
        raw.setdefault(section, {}).update(keys)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["fit", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr()[1]
    assert said in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2, err


def test_doc_stride_is_refused_outside_question_answering_and_defaults_inside() -> None:
    base = {"transfer_config": {"source_model": "minilm-l6"},
            "data": {"source": "rotten_tomatoes", "doc_stride": 64}}
    with pytest.raises(Exception, match="data.doc_stride cuts long contexts"):
        validate(base)
    base["data"] = {"source": "squad", "task": "question_answering"}
    with pytest.raises(Exception, match="set freeze_strategy: none"):
        validate(base)  # the default strategy, all_frozen, solves a pooled head
    base["transfer_config"]["head_solver"] = "sgd"
    validate(base)  # all_frozen trains its head by SGD
    base["transfer_config"] = {"source_model": "minilm-l6", "freeze_strategy": "none"}
    cfg = validate(base)
    assert (cfg.data.max_length, cfg.data.doc_stride) == (384, 128)


def test_windows_of_one_question_are_scored_as_one_answer(tiny_bert_dir: Path) -> None:
    """A context longer than a window gives several windows; the loss is the mean of the start
    and end cross-entropies, and the metrics count questions, not windows."""
    from tlkit.backbones.base import TextPreprocessing
    from tlkit.data import build_collate, build_dataset
    from tlkit.data.answers import answers_data
    from tlkit.qa.squad import QAExample
    from tlkit.train.evaluate import SpanLoss, _scored

    context = " ".join(["filler words here"] * 6) + " and then Erin travelled to Oslo."
    example = QAExample("q", "Who travelled?", context,
                        (("Erin", context.index("Erin")),), False)
    prep = TextPreprocessing(tokenizer=str(tiny_bert_dir), max_length=24)
    ds: Any = build_dataset(answers_data("x", [example]), prep, doc_stride=4)
    assert len(ds) > 1 and ds.windows["example_index"] == [0] * len(ds)
    inputs, targets = build_collate(prep)([ds[i] for i in range(len(ds))])
    assert targets.shape == (len(ds), 2) and inputs["input_ids"].shape[0] == len(ds)
    # logits that point at the gold tokens where a window holds the answer
    logits = torch.zeros(len(ds), inputs["input_ids"].shape[1], 2)
    for w, (s, e) in enumerate(targets.tolist()):
        logits[w, s, 0] = logits[w, e, 1] = 20.0
    assert float(SpanLoss()(logits, targets)) < 1e-6
    scored = _scored(logits.numpy(), targets.numpy(), "question_answering", None, ds)
    assert scored["exact_match"] == scored["f1"] == 100.0 and scored["questions"] == 1


def test_the_span_layer_starts_as_berts_qa_outputs(tmp_path: Path, tiny_bert_dir: Path
                                                   ) -> None:
    """Weights N(0, 0.02^2) and zero biases, as AutoModelForQuestionAnswering's qa_outputs:
    PyTorch's default uniform start cost 11.4 F1 points in bench/qa.py's one epoch."""
    from tlkit.assemble import assemble

    cfg = validate(_raw(tmp_path, tiny_bert_dir))
    torch.manual_seed(0)
    head = assemble(cfg.transfer_config, 2, "text", 32, task="question_answering").model.head
    linear = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert torch.count_nonzero(linear.bias) == 0
    # PyTorch's default would be uniform: std 1 / sqrt(3 x inputs), 0.10 for 32 inputs
    assert 0.01 < float(linear.weight.detach().std()) < 0.03


def _fit(tmp: Path, bert: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    run = tmp / "run"
    assert main(["fit", str(_cfg(tmp, bert)), "--out", str(run)]) == 0
    capsys.readouterr()
    return run


@pytest.mark.slow
def test_a_question_answering_run_learns_the_spans_and_predict_answers(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fit(tmp_path, tiny_bert_dir, capsys)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "question_answering"
    test = summary["test"]
    assert test["questions"] == 16 and {"exact_match", "f1", "loss"} <= set(test)
    assert test["exact_match"] > 80 and test["f1"] >= test["exact_match"], test
    assert json.loads((run / "model" / "model.json").read_text())["qa"] == {"doc_stride": 8}
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr()[0])["f1"] == pytest.approx(test["f1"])
    context = CONTEXT.format(p="Dave", c="Cairo")
    assert main(["predict", str(run), "--question", "Who travelled?", "--context",
                 context]) == 0
    row = json.loads(capsys.readouterr()[0])
    assert row["answer"] == "Dave" and context[row["start"]:row["end"]] == "Dave"
    assert 0 < row["score"] <= 1
    # a file of questions without answers: one row each
    questions = tmp_path / "ask.jsonl"
    questions.write_text("".join(json.dumps({"question": q, "context": context}) + "\n"
                                 for q in ("Who travelled?", "Where did the traveller go?")))
    assert main(["predict", str(run), "--data", str(questions)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr()[0].splitlines()]
    assert [r["answer"] for r in rows] == ["Dave", "Cairo"]
    assert [r["id"] for r in rows] == ["line 1", "line 2"]
    # what does not apply is refused with the fix
    assert main(["predict", str(run), "Who travelled?"]) == 2
    assert "give --question Q --context C" in capsys.readouterr()[1]
    assert main(["predict", str(run), "--question", "Who?"]) == 2
    assert "give both --question and --context" in capsys.readouterr()[1]


@pytest.mark.slow
def test_the_scratch_baseline_gives_a_verdict_in_points_of_squad_f1(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fit --baseline on a question-answering run: the same BERT from random weights on the
    same questions, and a paired verdict over the test questions' F1, with exact match
    beside it; both runs' per-question scores average to their summaries' figures."""
    from tlkit.predictions import question_scores

    run = tmp_path / "run"
    assert main(["fit", str(_cfg(tmp_path, tiny_bert_dir)), "--out", str(run),
                 "--baseline"]) == 0
    err = capsys.readouterr()[1]
    assert "against training from scratch:" in err
    summary = json.loads((run / "summary.json").read_text())
    b = summary["baseline"]
    scratch = json.loads((run / "baseline" / "seed-0" / "summary.json").read_text())
    em, f1 = question_scores(run)
    s_em, s_f1 = question_scores(run / "baseline" / "seed-0")
    assert len(f1) == len(s_f1) == summary["test"]["questions"] == 16
    assert 100 * f1.mean() == pytest.approx(summary["test"]["f1"])
    assert 100 * em.mean() == pytest.approx(summary["test"]["exact_match"])
    assert 100 * s_f1.mean() == pytest.approx(scratch["test"]["f1"])
    assert b["transfer_accuracy"] == pytest.approx(f1.mean())
    assert b["scratch_accuracies"] == [pytest.approx(s_f1.mean())]
    assert b["margin"] == pytest.approx(f1.mean() - s_f1.mean())
    assert b["low"] <= b["margin"] <= b["high"]
    assert b["transfer_exact_match"] == pytest.approx(summary["test"]["exact_match"])
    assert b["scratch_exact_match"] == [pytest.approx(scratch["test"]["exact_match"])]
    assert "16 test questions" in b["method"] and b["measure"].startswith("F1")
    assert b["verdict"] in b["text"]
    page = (run / "report.html").read_text()
    assert "test exact match" in page and "Transfer against training from scratch" in page
    assert "against training from scratch" in (run / "README.md").read_text()
    # a classical baseline is refused: there is no classical reader
    raw = _raw(tmp_path, tiny_bert_dir)
    raw["diagnostics"] = {"baselines": ["classical"]}
    bad = tmp_path / "classical.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["fit", str(bad), "--out", str(tmp_path / "c"), "--baseline"]) == 2
    assert "set baselines: [scratch]" in capsys.readouterr()[1]


@pytest.mark.slow
def test_the_hf_export_is_a_stock_question_answering_model_with_predicts_span(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The exported folder is loaded by AutoModelForQuestionAnswering, its logits decoded as
    the question-answering pipeline does (the best start + end over the context's tokens), and
    answered through ``transformers.pipeline("question-answering", model=FOLDER)`` itself: in
    transformers 4.57.6, which set-up installs apart (transformers 5 removed that pipeline),
    in a child process. Both give predict's span."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertForQuestionAnswering

    raw = _raw(tmp_path, tiny_bert_dir)
    raw["transfer_config"]["epochs"] = 1  # whatever span the model picks
    cfg = tmp_path / "one.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "hf"]) == 0
    capsys.readouterr()
    folder = run / "export" / "hf"
    model = AutoModelForQuestionAnswering.from_pretrained(str(folder)).eval()
    assert isinstance(model, BertForQuestionAnswering)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for p, c in (("Bob", "Lima"), ("Erin", "Paris")):
        context = CONTEXT.format(p=p, c=c)
        for question in ("Who travelled?", "Where did the traveller go?"):
            assert main(["predict", str(run), "--question", question, "--context",
                         context]) == 0
            ours = json.loads(capsys.readouterr()[0])
            enc = tokenizer(question, context, return_offsets_mapping=True,
                            return_tensors="pt")
            offsets = enc.pop("offset_mapping")[0].tolist()
            with torch.no_grad():
                out = model(**enc)
            starts, ends = out.start_logits[0].tolist(), out.end_logits[0].tolist()
            inside = [t for t, s in enumerate(enc.sequence_ids(0)) if s == 1]
            _, first, last = max((starts[a] + ends[b], a, b) for a in inside for b in inside
                                 if a <= b < a + 30)
            assert (offsets[first][0], offsets[last][1]) == (ours["start"], ours["end"])
            assert context[offsets[first][0]:offsets[last][1]] == ours["answer"]
    card = (run / "README.md").read_text()
    assert "AutoModelForQuestionAnswering" in card and "question-answering" in card
    # the pipeline itself, where transformers still has it
    older = Path(sys.prefix) / "transformers4"
    assert (older / "transformers").is_dir(), (
        f"{older} is missing: make setup-test installs transformers 4.57.6 there")
    asked = [(q, CONTEXT.format(p=p, c=c)) for p, c in (("Carol", "Oslo"), ("Alice", "Cairo"))
             for q in ("Who travelled?", "Where did the traveller go?")]
    script = ("import json, sys, transformers\n"
              "qa = transformers.pipeline('question-answering', model=sys.argv[1], device=-1)\n"
              "print(transformers.__version__)\n"
              "for q, c in json.loads(sys.argv[2]):\n"
              "    print(json.dumps(qa(question=q, context=c)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(folder), json.dumps(asked)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(older)})
    assert done.returncode == 0, done.stderr
    version, *answers = done.stdout.splitlines()
    assert version == "4.57.6"
    for (question, context), line in zip(asked, answers, strict=True):
        theirs = json.loads(line)
        assert main(["predict", str(run), "--question", question, "--context", context]) == 0
        ours = json.loads(capsys.readouterr()[0])
        assert (theirs["start"], theirs["end"], theirs["answer"]) == (
            ours["start"], ours["end"], ours["answer"])


@pytest.mark.slow
def test_a_question_answering_run_killed_with_sigkill_resumes_to_the_same_weights(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    from safetensors.torch import load_file

    cfg = _cfg(tmp_path, tiny_bert_dir)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_cli("fit", str(cfg), "--out", str(whole))
    assert r.returncode == 0, r.stderr
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
