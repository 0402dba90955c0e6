"""Evaluate and predict with a finished run (its model/ folder and its config)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import yaml

from tlkit.config import Config, DataConfig, parse_yaml, validate
from tlkit.data import build_collate, build_dataset, load_source, make_splits
from tlkit.data.sources import IMAGE_COLUMNS, TEXT_COLUMNS, with_given_splits
from tlkit.data.answers import WindowDataset, answers_data, doc_stride_of
from tlkit.data.types import PAIR_SEPARATOR, is_pair
from tlkit.data.packaged import is_packaged
from tlkit.data.tokens import entities, read_words, to_labelled
from tlkit.errors import UserError
from tlkit.files import atomic_write
from tlkit.metrics import probabilities, subgroup_metrics
from tlkit.qa.scoring import answers_of
from tlkit.qa.squad import QAExample, read_qa
from tlkit.run.scoring import (Calibration, Scored, Writer, input_rows, open_out, out_format,
                               records, score_chunk, score_file)
from tlkit.rundir import RunDir
from tlkit.saved import load_model, model_device
from tlkit.token_rows import predicted, sentence_bounds
from tlkit.train.evaluate import evaluate_split, predict_outputs


# --------------------------------------------------------------------------------------------------
# evaluate / predict
# --------------------------------------------------------------------------------------------------


def _run_config(run: RunDir) -> Config:
    if not run.config.is_file():
        raise UserError(f"{run.path} is not a run directory (no config.yaml)")
    return validate(parse_yaml(run.config.read_text(), str(run.config)), str(run.config))


def data_for(run: RunDir, spec: str | None, classes: list[str] | None) -> Any:
    """The labelled data to evaluate: the run's own split (train / val / test, default test),
    or another source (a path or packaged name) read with the run's data settings."""
    if not run.path.is_dir():
        raise UserError(f"run directory {run.path} does not exist")
    cfg = _run_config(run)
    if spec in (None, "test", "val", "train"):
        data = with_given_splits(load_source(cfg.data, classes=classes), cfg.data)
        split = getattr(make_splits(data, cfg.data), spec or "test")
        if split is None:
            raise UserError(f"{run.path} has no test split (data.test_fraction is 0); give "
                            "--data val, or a file or folder to evaluate on")
        return split
    dcfg = DataConfig.model_validate({**cfg.data.model_dump(), "source": spec})
    return load_source(dcfg, classes=classes)


def _mixed_precision_of(path: Path) -> bool:
    """Whether the run trained and tested in mixed precision (its config says; a model/ folder
    moved without its config runs in fp32): evaluate and predict then compute as fit did, so
    evaluate reproduces fit's test metrics."""
    cfg_path = RunDir(Path(path)).config
    if not cfg_path.is_file():
        return False
    try:
        raw = yaml.safe_load(cfg_path.read_text())
        return bool(raw.get("transfer_config", {}).get("mixed_precision", False))
    except Exception:  # noqa: BLE001 - an unreadable config: the safe default
        return False


def evaluate_run(path: Path, spec: str | None = None) -> dict[str, Any]:
    run = RunDir(path)
    saved = load_model(run.model)
    data = data_for(run, spec, saved.classes)
    device = model_device()
    saved.model.to(device)
    ds = build_dataset(data, saved.preprocessing, doc_stride=doc_stride_of(saved.meta))
    metrics, outputs, targets = evaluate_split(
        saved.model, ds, build_collate(saved.preprocessing), saved.task, 64, device,
        saved.classes, _mixed_precision_of(path), return_outputs=True)
    if data.groups is not None:  # the run's config names data.group_column
        metrics["subgroups"] = subgroup_metrics(outputs, targets, data.groups, saved.task,
                                                saved.classes)
    return {"run": str(path), "data": spec or "test", "n": len(ds), **metrics}


def predict_run(path: Path, inputs: Sequence[Any] = (), spec: str | None = None,
                calibrated: bool = True, bad_inputs: Literal["raise", "row"] = "raise"
                ) -> list[dict[str, Any]]:
    """Predictions for ``inputs`` (texts, sentence pairs or image files) or for a split or
    packaged set (``spec``), each row with its input, label(s) and probabilities, calibrated as
    ``tlkit.run.scoring`` says. Each input goes through ``tlkit.data.cells``; one that the
    model cannot read (an empty text, a list, one text for a pair model, a missing image) is
    a ``UserError`` naming it (``bad_inputs="raise"``, the command line) or a row with its
    ``error`` and no prediction (``"row"``, the Python API: every input has its row)."""
    saved = load_model(Path(path) / "model")
    kind = saved.preprocessing.kind
    if saved.task == "token_classification":
        return _predict_entities(saved, Path(path), inputs, spec, calibrated, bad_inputs)
    if saved.task == "question_answering":
        if inputs or spec is None:
            raise UserError("a question-answering run answers a question about a context: "
                            "give --question Q --context C, or --data FILE (SQuAD JSON or "
                            "JSON lines of questions with their contexts)")
        return _predict_answers(saved, Path(path), _questions(Path(path), spec))
    device = model_device()
    saved.model.to(device)
    cal = Calibration.of(_summary_of(Path(path)), calibrated)
    if spec is None:
        if not inputs:
            raise UserError("give inputs to predict (texts or image files) or --data SPEC")
        rows = input_rows(list(inputs), kind, pairs=saved.pairs is not None)
        if bad_inputs == "raise":
            _raise_first_bad(rows)
        scored = score_chunk(saved, rows, cal, 64, device, _mixed_precision_of(Path(path)),
                             key="input")
        if bad_inputs == "raise":  # an image that fails to decode: named like a bad cell
            _raise_first_bad([(r["input"], None, r.get("error")) for r in scored])
        return scored
    data = data_for(RunDir(path), spec, saved.classes)
    shown = [PAIR_SEPARATOR.join(x) if is_pair(x) else str(x)
             if not isinstance(x, np.ndarray) else f"#{i}" for i, x in enumerate(data.inputs)]
    if data.modality != kind:
        raise UserError(f"the model takes {kind} but the inputs are {data.modality}")
    ds = build_dataset(data, saved.preprocessing)
    outputs, _ = predict_outputs(saved.model, ds, build_collate(saved.preprocessing), 64, device,
                                 _mixed_precision_of(Path(path)))
    return records(outputs, saved.task, saved.classes, cal, shown, key="input")


def _raise_first_bad(rows: Sequence[tuple[Any, Any, str | None]]) -> None:
    """The command line's inputs are typed by the user: the first that cannot be read is a
    UserError naming it (exit 2), before any is scored."""
    bad = [(i, r) for i, r in enumerate(rows) if r[2] is not None]
    if bad:
        i, (value, _, why) = bad[0]
        more = f" (and {len(bad) - 1} more input(s))" if len(bad) > 1 else ""
        raise UserError(f"input {i + 1} ({value!r}) cannot be read: {why}{more}")


def _predict_entities(saved: Any, path: Path, inputs: Sequence[Any], spec: str | None,
                      calibrated: bool, bad_inputs: Literal["raise", "row"] = "raise"
                      ) -> list[dict[str, Any]]:
    """A token-classification model's entities: for each text (split into words at white
    space) or each sentence of a split or token file, the entities with their word span
    (``start``, ``end``: word indices, end exclusive), their character span in the text, and
    a score (the mean calibrated probability of their words' tags); with each word's tag.
    A token file is read for its words only (its tags, if any, play no part: scoring needs no
    labels); an input that is not a text is handled as ``predict_run``'s ``bad_inputs`` says."""
    errors: dict[int, dict[str, Any]] = {}
    if spec is not None and is_unlabelled_source(spec):
        words = read_words(Path(spec).expanduser())
        data = to_labelled(spec, [(w, ["O"] * len(w)) for w in words], saved.classes)
        texts = [" ".join(w) for w in words]
    elif spec is not None:
        data = data_for(RunDir(path), spec, saved.classes)
        texts = [" ".join(words) for words in data.inputs]
    else:
        if not inputs:
            raise UserError("give texts to tag, or --data SPEC (a split, or a token file)")
        rows = input_rows(list(inputs), "text", pairs=False)
        if bad_inputs == "raise":
            _raise_first_bad(rows)
        errors = {i: {"input": value, "error": why}
                  for i, (value, _, why) in enumerate(rows) if why is not None}
        texts = [item for _, item, why in rows if why is None]
        data = to_labelled("inputs", [(t.split(), ["O"] * len(t.split())) for t in texts],
                           saved.classes)
    tagged: list[dict[str, Any]] = []
    if texts:
        device = model_device()
        saved.model.to(device)
        outputs, targets = predict_outputs(saved.model, build_dataset(data, saved.preprocessing),
                                           build_collate(saved.preprocessing), 64, device,
                                           _mixed_precision_of(path))
        cal = Calibration.of(_summary_of(path), calibrated)
        probs = probabilities(outputs / cal.temperature, "token_classification")
        tags = predicted(outputs, targets, saved.classes)
        for text, words_of, (a, b) in zip(texts, data.inputs, sentence_bounds(targets),
                                          strict=True):
            names = [saved.classes[t] for t in tags[a:b]]
            score = probs[np.arange(a, b), tags[a:b]]
            spans = _char_spans(text, cast(list[str], words_of))
            tagged.append({"input": text, "entities": [
                {"type": e.type, "text": text[spans[e.start][0]:spans[e.end - 1][1]],
                 "start": e.start, "end": e.end, "char_start": spans[e.start][0],
                 "char_end": spans[e.end - 1][1],
                 "score": round(float(score[e.start:e.end].mean()), 6)}
                for e in entities(names)], "tags": names})
    good = iter(tagged)
    return [errors[i] if i in errors else next(good) for i in range(len(tagged) + len(errors))]


def predict_answers(path: Path, question: str | None, context: str | None
                    ) -> list[dict[str, Any]]:
    """A question-answering run's answer to ``question`` about ``context`` (``tlkit predict
    RUN --question Q --context C``), one row as ``_predict_answers`` gives it."""
    saved = load_model(Path(path) / "model")
    if saved.task != "question_answering":
        raise UserError(f"--question and --context ask a question-answering run; {path} is a "
                        f"{saved.task} run: give its inputs as arguments, or --data")
    if not (question or "").strip() or not (context or "").strip():
        raise UserError("give both --question and --context, each a non-empty text")
    example = QAExample(id="0", question=str(question), context=str(context), answers=(),
                        impossible=True)
    return _predict_answers(saved, Path(path), [example])


def _questions(path: Path, spec: str) -> list[QAExample]:
    """The questions of ``predict --data``: a SQuAD JSON or JSON-lines file (answers not
    read), else a split of the run's data or a packaged set."""
    if is_unlabelled_source(spec):
        return read_qa(Path(spec).expanduser(), questions_only=True)
    return [x for x in data_for(RunDir(path), spec, None).inputs if isinstance(x, QAExample)]


def _predict_answers(saved: Any, path: Path, examples: Sequence[QAExample]
                     ) -> list[dict[str, Any]]:
    """Each question's answer: the best span over all windows of its context (the run's
    max_length and doc_stride), as its ``answer`` text, its ``start`` and ``end`` characters
    in the context (``context[start:end] == answer``; None where no span was found) and its
    ``score``, the span's probability among the question's best candidate spans."""
    data = build_dataset(answers_data("inputs", examples), saved.preprocessing,
                         doc_stride=doc_stride_of(saved.meta))
    assert isinstance(data, WindowDataset)
    device = model_device()
    saved.model.to(device)
    outputs, _ = predict_outputs(saved.model, data, build_collate(saved.preprocessing), 64,
                                 device, _mixed_precision_of(path))
    return [{"id": e.id, "question": e.question, "answer": p.text, "start": p.start,
             "end": p.end, "score": round(p.probability, 6)}
            for e, p in zip(examples, answers_of(data.examples, data.windows, outputs),
                            strict=True)]


def _char_spans(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Each word's (start, end) character offsets in ``text``, found left to right."""
    spans, at = [], 0
    for w in words:
        start = text.find(w, at)
        start = at if start < 0 else start
        spans.append((start, start + len(w)))
        at = start + len(w)
    return spans


def is_unlabelled_source(spec: str) -> bool:
    """Whether ``predict --data spec`` names a file or folder to score (not a split of the run
    or a packaged set)."""
    if spec in ("train", "val", "test") or is_packaged(spec):
        return False
    return Path(spec).expanduser().exists()


def score_run(path: Path, spec: str, out: Path | None, calibrated: bool = True,
              progress: Any = None) -> Scored:
    """Score every input of the file or folder ``spec`` (labels not needed) with the run's
    model, streaming them to ``out`` (.csv, .jsonl or .parquet; None: JSON lines on stdout)."""
    import sys

    fmt = out_format(out) if out is not None else "jsonl"
    saved = load_model(Path(path) / "model")
    if saved.task in ("token_classification", "question_answering"):
        # a token file (CoNLL, JSON lines): its entities; a question file: its answers
        if fmt != "jsonl":
            what = ("entities per sentence" if saved.task == "token_classification"
                    else "answers with their spans")
            raise UserError(f"a {saved.task.replace('_', '-')} model's predictions are "
                            f"{what}; write them to a .jsonl file (--out FILE.jsonl)")
        rows = (_predict_entities(saved, Path(path), (), spec, calibrated)
                if saved.task == "token_classification"
                else _predict_answers(saved, Path(path), _questions(Path(path), spec)))
        if out is None:
            sys.stdout.write(dumps_jsonl(rows))
        else:
            atomic_write(out, lambda tmp: tmp.write_text(dumps_jsonl(rows)))
        return Scored(rows=len(rows))
    columns = input_columns(Path(path))
    cal = Calibration.of(_summary_of(Path(path)), calibrated)
    device = model_device()
    saved.model.to(device)
    source = Path(spec).expanduser()
    mixed = _mixed_precision_of(Path(path))

    def run(stream: Any) -> Scored:
        writer = Writer(stream, fmt, saved.task, saved.classes)
        done = score_file(saved, source, writer, cal, columns.text, columns.image, 64, device,
                          mixed, progress, pair_column=columns.pair)
        writer.close()
        return done

    if out is None:
        return run(sys.stdout)
    result: list[Scored] = []

    def to_file(tmp: Path) -> None:
        with open_out(tmp, fmt) as f:
            result.append(run(f))

    atomic_write(out, to_file)
    return result[0]


class InputColumns(NamedTuple):
    """The columns a run reads its inputs from in a table or a DataFrame."""

    kind: str  # the model's inputs: "text" or "image"
    text: str | None  # data.text_column (None: the usual names are looked for)
    image: str | None  # data.image_column (likewise)
    pair: str | None  # a sentence-pair model's second column, else None

    @property
    def first(self) -> list[str]:
        """The first input column's candidates, in order."""
        named = self.image if self.kind == "image" else self.text
        return [named] if named else list(IMAGE_COLUMNS if self.kind == "image"
                                          else TEXT_COLUMNS)


def input_columns(path: Path) -> InputColumns:
    """The columns the run in ``path`` reads its inputs from: its config's data.text_column
    or data.image_column, and a pair model's two columns from its model.json (so that they
    hold for a model/ folder moved without its config too)."""
    cfg = _run_config(RunDir(path)) if RunDir(path).config.is_file() else None
    text = cfg.data.text_column if cfg is not None else None
    image = cfg.data.image_column if cfg is not None else None
    try:
        meta = json.loads((Path(path) / "model" / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    prep = meta.get("preprocessing")
    kind = str(prep.get("kind", "text")) if isinstance(prep, dict) else "text"
    pairs = meta.get("pairs")
    if not isinstance(pairs, dict):
        return InputColumns(kind, text, image, None)
    return InputColumns(kind, text or pairs.get("text_column"), image,
                        pairs.get("text_pair_column"))


def _summary_of(path: Path) -> dict[str, Any]:
    """The run's summary.json, checked (a damaged one is a UserError naming the field: its
    calibration is never dropped without a word)."""
    from tlkit.summary_json import read_summary

    return read_summary(path)


def dumps_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)
