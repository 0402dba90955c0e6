"""Extractive question answering on SQuAD v1.1: tlkit (``data.task: question_answering``)
against the Hugging Face recipe (``examples/pytorch/question-answering/run_qa.py``:
``AutoModelForQuestionAnswering`` + ``Trainer``, its doc-stride preprocessing and its
post-processing), fully fine-tuning the same MiniLM; exact match and F1 on the same dev
questions, training windows per second, training and test seconds.

Both rows train on the same questions: ``--train`` questions drawn from SQuAD's training set by
tlkit's own functions (tlkit's ``data.limit`` with ``data.seed``), of which ``--val-fraction``
validate and the rest train; both test on the same ``--test`` dev questions (tlkit's
``--test-limit`` subset, drawn with the same seed). Same network: all-MiniLM-L6-v2
(``minilm-l6``, the packaged folder) with a linear layer giving each token a start and an end
logit (tlkit's head with ``dropout: 0``, as ``AutoModelForQuestionAnswering``'s ``qa_outputs``
has none), the mean of the start and end cross-entropies, every parameter trained; AdamW at one
learning rate for all (tlkit: ``freeze_strategy: none``, ``head_lr = backbone_lr``,
``lr_decay_per_layer: 1.0``), weight decay 0.01 (not biases and LayerNorm), a linear schedule
with the same warmup steps, clipping at 1.0, the same batch size and epochs, windows of 384
tokens sharing 128 (``max_length`` / ``doc_stride``), fp32, one pass per epoch, a validation
pass after each epoch. Every answer is the best span over all windows of its question (the 20
best starts and ends of each window, at most 30 tokens), scored by the same code for both rows
(``tlkit.qa.metric.squad_scores``: the official v1.1 exact match and F1).

- tlkit: ``tlkit.run.fit_run`` (what ``tlkit fit CONFIG --test-limit N`` runs); its windows
  are batched by length (``data.group_by_length``, the default) and each batch is cut to its
  longest window; it tests the epoch with the lowest validation loss.
- trainer: the recipe, written out here and independent of tlkit's question-answering code:
  ``prepare_train_features`` / ``prepare_validation_features`` (windows padded to 384 tokens,
  the recipe's default ``pad_to_max_length``; ``default_data_collator``), ``Trainer`` with
  random batches and its default optimizer, ``postprocess_qa_predictions`` (n_best 20,
  max_answer_length 30, over all windows of a question); it tests its last epoch.
- trainer-dynamic (extra, not run unless named): the same with the recipe's
  ``--pad_to_max_length False`` (unpadded windows, ``DataCollatorWithPadding``: each random
  batch padded to its longest).

    .venv/bin/python bench/qa.py                                  # 2,000 questions, 500 dev
    .venv/bin/python bench/qa.py --train 64 --test 32             # a smoke run, a few minutes
    .venv/bin/python bench/qa.py --rows tlkit,trainer,trainer-dynamic --json /tmp/qa.json
    .venv/bin/python bench/qa.py --table-from /tmp/qa.json        # its table again, no training
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import common

ROWS = ["tlkit", "trainer", "trainer-dynamic"]
DEFAULT_ROWS = "tlkit,trainer"
LABELS = {"tlkit": "tlkit (question_answering)",
          "trainer": "HF Trainer + AutoModelForQuestionAnswering (run_qa)",
          "trainer-dynamic": "HF Trainer, run_qa without pad_to_max_length (extra)"}
N_BEST = 20  # run_qa's --n_best_size
MAX_ANSWER_LENGTH = 30  # run_qa's --max_answer_length


def tlkit_raw(args: argparse.Namespace, warmup: int = 0) -> dict[str, Any]:
    return {
        "transfer_config": {
            "source_model": "minilm-l6", "pretrained_weights": "packaged",
            "freeze_strategy": "none", "head": {"type": "linear"}, "dropout": args.dropout,
            "head_lr": args.lr, "backbone_lr": args.lr, "lr_decay_per_layer": 1.0,
            "weight_decay": 0.01, "scheduler": "linear", "warmup_steps": warmup,
            "warmup_ratio": 0.0, "max_grad_norm": 1.0, "mixed_precision": False,
            "early_stopping_patience": None, "epochs": args.epochs,
            "batch_size": args.batch_size, "seed": train_seed(args),
            "min_steps": 0,  # epochs as Trainer counts them: one pass each
            "device": "cpu",
        },
        "data": {"source": "squad", "task": "question_answering", "limit": args.train,
                 "val_fraction": args.val_fraction, "max_length": args.max_length,
                 "doc_stride": args.doc_stride, "seed": args.seed,
                 **({"group_by_length": False} if args.ungrouped else {})},
    }


def train_seed(args: argparse.Namespace) -> int:
    """The seed of the training (the head's initialisation, the batches' order, dropout):
    ``--train-seed``, else ``--seed``, which also draws the questions."""
    return args.seed if args.train_seed is None else args.train_seed


def warmup_of(args: argparse.Namespace, n_windows: int) -> int:
    """``--warmup-ratio`` of the run's optimizer steps (one per batch of training windows),
    rounded up; the same number in every row."""
    steps = math.ceil(n_windows / args.batch_size) * args.epochs
    return max(1, math.ceil(args.warmup_ratio * steps)) if args.warmup_ratio > 0 else 0


# --------------------------------------------------------------------------------------------------
# The Hugging Face recipe (run_qa.py and utils_qa.py), written out
# --------------------------------------------------------------------------------------------------


def squad_records(split: str, ids: list[str]) -> list[dict[str, Any]]:
    """The questions ``ids`` of SQuAD's ``train`` or ``dev`` file, in that order, as the
    ``datasets`` library's squad rows (id, question, context, answers {text, answer_start}),
    read from the JSON file itself (not through tlkit's reader)."""
    from tlkit.data.packaged import data_folder

    path = data_folder() / "squad" / f"{split}-v1.1.json"
    rows: dict[str, dict[str, Any]] = {}
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                rows[qa["id"]] = {
                    "id": qa["id"], "question": qa["question"], "context": para["context"],
                    "answers": {"text": [a["text"] for a in qa["answers"]],
                                "answer_start": [a["answer_start"] for a in qa["answers"]]}}
    return [rows[i] for i in ids]


def _encode(examples: list[dict[str, Any]], tok: Any, max_length: int, stride: int,
            pad: bool) -> Any:
    """run_qa.py's tokenisation of both feature functions: question then context, only the
    context cut, windows of ``max_length`` sharing ``stride`` tokens, with their offsets."""
    questions = [e["question"].lstrip() for e in examples]
    return tok(questions, [e["context"] for e in examples], truncation="only_second",
               max_length=max_length, stride=stride, return_overflowing_tokens=True,
               return_offsets_mapping=True, padding="max_length" if pad else False)


def prepare_train_features(examples: list[dict[str, Any]], tok: Any, max_length: int,
                           stride: int, pad: bool) -> list[dict[str, Any]]:
    """run_qa.py's ``prepare_train_features``: every window of every question, labelled with
    the first answer's first and last token, or the CLS token where the window does not hold
    all of it."""
    enc = _encode(examples, tok, max_length, stride, pad)
    sample_mapping = enc.pop("overflow_to_sample_mapping")
    offset_mapping = enc.pop("offset_mapping")
    features = []
    for i, offsets in enumerate(offset_mapping):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tok.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        answers = examples[sample_mapping[i]]["answers"]
        if len(answers["answer_start"]) == 0:
            start, end = cls_index, cls_index
        else:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start = 0
            while sequence_ids[token_start] != 1:
                token_start += 1
            token_end = len(input_ids) - 1
            while sequence_ids[token_end] != 1:
                token_end -= 1
            if not (offsets[token_start][0] <= start_char
                    and offsets[token_end][1] >= end_char):
                start, end = cls_index, cls_index
            else:
                while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                    token_start += 1
                start = token_start - 1
                while offsets[token_end][1] >= end_char:
                    token_end -= 1
                end = token_end + 1
        features.append({**{k: enc[k][i] for k in enc}, "start_positions": start,
                         "end_positions": end})
    return features


def prepare_validation_features(examples: list[dict[str, Any]], tok: Any, max_length: int,
                                stride: int, pad: bool
                                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """run_qa.py's ``prepare_validation_features``: (the model's inputs per window, and per
    window its question's id and the offsets of its context tokens, None elsewhere)."""
    enc = _encode(examples, tok, max_length, stride, pad)
    sample_mapping = enc.pop("overflow_to_sample_mapping")
    offset_mapping = enc.pop("offset_mapping")
    inputs, meta = [], []
    for i in range(len(enc["input_ids"])):
        sequence_ids = enc.sequence_ids(i)
        meta.append({"example_id": examples[sample_mapping[i]]["id"],
                     "offset_mapping": [o if sequence_ids[k] == 1 else None
                                        for k, o in enumerate(offset_mapping[i])]})
        inputs.append({k: enc[k][i] for k in enc})
    return inputs, meta


def postprocess_qa_predictions(examples: list[dict[str, Any]], features: list[dict[str, Any]],
                               predictions: tuple[Any, Any], n_best_size: int = N_BEST,
                               max_answer_length: int = MAX_ANSWER_LENGTH) -> dict[str, str]:
    """utils_qa.py's ``postprocess_qa_predictions`` for SQuAD v1.1: per question, over all of
    its windows, the ``n_best_size`` highest start and end logits of each window paired into
    spans of context tokens (start <= end, at most ``max_answer_length`` tokens), the span of
    the highest start + end logit is the answer (``"empty"`` where no window has one)."""
    import numpy as np

    all_start_logits, all_end_logits = predictions
    index_of = {e["id"]: i for i, e in enumerate(examples)}
    features_per_example: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(features):
        features_per_example[index_of[f["example_id"]]].append(i)
    answers: dict[str, str] = {}
    for example_index, example in enumerate(examples):
        prelim: list[tuple[float, int, int]] = []  # (score, first character, end)
        for feature_index in features_per_example[example_index]:
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            offset_mapping = features[feature_index]["offset_mapping"]
            start_indexes = np.argsort(start_logits)[-1: -n_best_size - 1: -1].tolist()
            end_indexes = np.argsort(end_logits)[-1: -n_best_size - 1: -1].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if (s >= len(offset_mapping) or e >= len(offset_mapping)
                            or offset_mapping[s] is None or len(offset_mapping[s]) < 2
                            or offset_mapping[e] is None or len(offset_mapping[e]) < 2):
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append((float(start_logits[s] + end_logits[e]),
                                   offset_mapping[s][0], offset_mapping[e][1]))
        best = sorted(prelim, key=lambda x: x[0], reverse=True)[:n_best_size]
        context = example["context"]
        texts = [context[first:end] for _, first, end in best]
        if not texts or (len(texts) == 1 and texts[0] == ""):
            texts.insert(0, "empty")
        answers[example["id"]] = texts[0]
    return answers


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def row_tlkit(args: argparse.Namespace) -> dict[str, Any]:
    common.preimport_tlkit()
    from transformers import AutoTokenizer

    import tlkit.data.answers  # noqa: F401
    import tlkit.data.collate as tcollate
    import tlkit.run.finalize as tfinalize
    from tlkit.backbones.packaged import minilm_folder
    from tlkit.config import validate
    from tlkit.run import fit_run

    # The warmup: --warmup-ratio of the steps over the windows the recipe cuts from the same
    # questions (the count is checked against the windows tlkit trains on, below).
    _, splits = common.splits_as_tlkit(tlkit_raw(args), args.test)
    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    recipe_windows = len(prepare_train_features(
        [{"question": e.question, "context": e.context,
          "answers": {"text": [a[0] for a in e.answers],
                      "answer_start": [a[1] for a in e.answers]}} for e in splits.train.inputs],
        tok, args.max_length, args.doc_stride, pad=False))
    warmup = warmup_of(args, recipe_windows)
    del splits  # fit_run loads its own (the memory is reused, not added to the peak)

    # Count the windows and tokens the training batches carry (the collate is wrapped while an
    # epoch's batches run, from its start to its last optimizer step).
    counting = {"on": False, "windows": 0, "real": 0, "total": 0}
    original = tcollate.TextCollate.__call__

    def counted(self: Any, batch: Any) -> Any:
        out = original(self, batch)
        if counting["on"]:
            mask = out[0]["attention_mask"]
            counting["windows"] += int(mask.shape[0])
            counting["real"] += int(mask.sum())
            counting["total"] += mask.numel()
        return out

    # Time the test split's pass (forward, best spans, exact match and F1): the last
    # evaluate_split of finalize, after the validation split's.
    tests: list[tuple[int, float]] = []
    evaluating = {"on": False}
    original_eval = tfinalize.evaluate_split

    def timed_eval(model: Any, data: Any, *a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = original_eval(model, data, *a, **k)
        if evaluating["on"]:
            tests.append((len(data), time.perf_counter() - t0))
        return out

    tcollate.TextCollate.__call__ = counted
    tfinalize.evaluate_split = timed_eval
    cfg = validate(tlkit_raw(args, warmup), "<bench>")
    marks = common.Marks()
    train_only = 0.0
    epoch_start = 0.0

    def event(kind: str, info: dict[str, Any]) -> None:
        nonlocal train_only, epoch_start
        if kind == "stage" and info.get("what") == "training":
            marks.mark("train")
        elif kind == "stage" and str(info.get("what", "")).startswith("evaluating"):
            marks.mark("test")
            evaluating["on"] = True
        elif kind == "epoch_start":
            epoch_start = marks.mark("epoch")
            counting["on"] = True
        elif kind == "step" and info["batch"] == info["batches"]:
            train_only += marks.mark("last_step") - epoch_start
            counting["on"] = False

    try:
        with tempfile.TemporaryDirectory(prefix="tlkit-bench-") as tmp:
            summary = fit_run(cfg, Path(tmp) / "run", event=event, test_limit=args.test)
            end = marks.mark("end")
    finally:
        tcollate.TextCollate.__call__ = original
        tfinalize.evaluate_split = original_eval
    n = summary["data"]["sizes"]
    test = summary["test"]
    test_windows, test_seconds = tests[-1]
    return {"seconds": end, "train_only_seconds": train_only,
            "train_seconds": marks.at["test"] - marks.at["train"],
            "test_seconds": test_seconds, "setup_seconds": marks.at["train"],
            "windows_trained": counting["windows"],
            "windows_per_second": counting["windows"] / train_only,
            "recipe_windows": recipe_windows, "warmup_steps": warmup,
            "padding_share": 1 - counting["real"] / max(1, counting["total"]),
            "tokens": counting["total"], "exact_match": test["exact_match"], "f1": test["f1"],
            "n_train": n["train"], "n_val": n["val"], "n_test": n["test"],
            "test_windows": test_windows, "best_epoch": summary.get("best_epoch"),
            "optimizer": "torch.optim.AdamW(fused=True)"}


def row_trainer(args: argparse.Namespace, pad: bool = True) -> dict[str, Any]:
    import torch
    from transformers import (AutoModelForQuestionAnswering, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments, default_data_collator)
    from transformers.utils import logging as hf_logging

    from tlkit.backbones.packaged import minilm_folder
    from tlkit.qa.metric import squad_scores  # the same scoring code as tlkit's row

    hf_logging.set_verbosity_error()

    class EpochClock(TrainerCallback):
        """The training part of each epoch: from its start to its last step (the evaluation
        Trainer runs at the epoch's end comes after on_epoch_end)."""

        def __init__(self) -> None:
            self.seconds, self.t0 = 0.0, 0.0

        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            self.seconds += time.perf_counter() - self.t0

    # the same questions as tlkit's row (tlkit's split, seed and test subset), read from the
    # SQuAD files as the datasets library's rows
    _, splits = common.splits_as_tlkit(tlkit_raw(args), args.test)
    train_q = squad_records("train", [e.id for e in splits.train.inputs])
    val_q = squad_records("train", [e.id for e in splits.val.inputs])
    test_q = squad_records("dev", [e.id for e in splits.test.inputs])
    assert all(r["context"] == e.context and r["question"] == e.question
               for r, e in zip(train_q + test_q, splits.train.inputs + splits.test.inputs,
                               strict=True))
    folder = str(minilm_folder())
    marks = common.Marks()
    tok = AutoTokenizer.from_pretrained(folder)
    train = prepare_train_features(train_q, tok, args.max_length, args.doc_stride, pad)
    val = prepare_train_features(val_q, tok, args.max_length, args.doc_stride, pad)
    test_inputs, test_meta = prepare_validation_features(test_q, tok, args.max_length,
                                                         args.doc_stride, pad)
    warmup = warmup_of(args, len(train))
    torch.manual_seed(train_seed(args))
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    tokens = {"windows": 0, "real": 0, "total": 0}

    def count(module: Any, a: Any, kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None:
            tokens["windows"] += int(mask.shape[0])
            tokens["real"] += int(mask.sum())
            tokens["total"] += mask.numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-trainer-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size, learning_rate=args.lr,
            weight_decay=0.01, num_train_epochs=args.epochs, lr_scheduler_type="linear",
            warmup_steps=warmup, max_grad_norm=1.0, eval_strategy="epoch", save_strategy="no",
            logging_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
            seed=train_seed(args), disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=val,
                          data_collator=default_data_collator if pad
                          else DataCollatorWithPadding(tok),
                          callbacks=[clock])
        marks.mark("train")
        trainer.train()
        marks.mark("test")
        pred = trainer.predict(test_inputs)  # type: ignore[arg-type]
        logits: Any = pred.predictions  # (start, end), each (windows, tokens)
        starts, ends = logits
        answers = postprocess_qa_predictions(test_q, test_meta, (starts, ends))
        scores = squad_scores(splits.test.inputs, answers)
        end = marks.mark("end")
        optim = str(targs.optim.value if hasattr(targs.optim, "value") else targs.optim)
    assert tokens["windows"] == len(train) * args.epochs, (tokens["windows"], len(train))
    return {"seconds": end, "train_only_seconds": clock.seconds,
            "train_seconds": marks.at["test"] - marks.at["train"],
            "test_seconds": end - marks.at["test"], "setup_seconds": marks.at["train"],
            "windows_trained": tokens["windows"],
            "windows_per_second": tokens["windows"] / clock.seconds,
            "recipe_windows": len(train), "warmup_steps": warmup,
            "padding_share": 1 - tokens["real"] / max(1, tokens["total"]),
            "tokens": tokens["total"], "exact_match": scores["exact_match"],
            "f1": scores["f1"], "n_train": len(train_q), "n_val": len(val_q),
            "n_test": len(test_q), "test_windows": len(test_inputs),
            "empty_answers": sum(a == "empty" for a in answers.values()),
            "optimizer": optim}


ROW_FUNCS = {"tlkit": row_tlkit, "trainer": row_trainer,
             "trainer-dynamic": lambda a: row_trainer(a, pad=False)}


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    base = results.get("trainer", {})
    head = ["row", "train windows", "windows/s", "/ trainer", "train s", "/ trainer", "test s",
            "/ trainer", "EM", "F1", "padding", "peak RSS MiB"]
    body = []
    for r, res in results.items():
        if "error" in res:
            body.append([LABELS[r], res["error"], *[""] * 10])
            continue
        body.append([
            LABELS[r], f"{res['windows_trained']:,}", common.fmt(res["windows_per_second"], ".2f"),
            common.ratio(res["windows_per_second"], base.get("windows_per_second")),
            common.fmt(res["train_only_seconds"]),
            common.ratio(res["train_only_seconds"], base.get("train_only_seconds")),
            common.fmt(res["test_seconds"]),
            common.ratio(res["test_seconds"], base.get("test_seconds")),
            common.fmt(res["exact_match"], ".2f"), common.fmt(res["f1"], ".2f"),
            f"{res['padding_share']:.1%}", common.fmt(res.get("peak_rss_mib"), ",.0f"),
        ])
    any_res = next((x for x in results.values() if "n_train" in x), {})
    lines = [common.table(head, body, set(range(1, 12))), "", "Notes:"]
    lines.append(
        f"- data: tlkit's packaged squad (SQuAD v1.1), {args.train:,} of its training questions "
        f"(tlkit's data.limit, seed {args.seed}): {any_res.get('n_train', '?'):,} train and "
        f"{any_res.get('n_val', '?'):,} validate; test: {any_res.get('n_test', '?'):,} dev "
        f"questions ({any_res.get('test_windows', '?'):,} windows; tlkit's --test-limit "
        f"{args.test} subset); the same questions for every row.")
    lines.append(
        f"- training: MiniLM-L6 + a linear start / end layer on every token (dropout "
        f"{args.dropout:g} before it), the mean of the start and end cross-entropies, every "
        f"parameter trained, {args.epochs} epoch(s), batch {args.batch_size}, AdamW lr "
        f"{args.lr:g} for all, weight decay 0.01 (not biases and LayerNorm), linear schedule, "
        f"{any_res.get('warmup_steps', '?')} warmup steps ({args.warmup_ratio:g} of the steps), "
        f"clipping 1.0, windows of {args.max_length} tokens sharing {args.doc_stride}, fp32; "
        "a validation pass after each epoch (tlkit tests its lowest validation loss epoch, "
        "Trainer its last).")
    lines.append(
        "- train windows: the windows (training examples) the epochs' batches carried, counted "
        "in the batches; windows/s: those over train s, the seconds of the epochs' batches "
        "(first batch to last optimizer step; tlkit's include its checkpoints), without the "
        "validation. test s: the test windows' forward pass, the best span of each question "
        f"over all its windows (n_best {N_BEST}, max_answer_length {MAX_ANSWER_LENGTH}) and the "
        "scoring (the windows are made before training in every row). / trainer: the row's "
        "figure over the trainer row's. EM, F1: SQuAD v1.1's exact match and F1 (percent), by "
        "tlkit.qa.metric.squad_scores for every row. padding: the share of padding among the "
        "training batches' tokens.")
    ok = {r: x for r, x in results.items() if "windows_trained" in x}
    off = [r for r, x in ok.items() if x["windows_trained"] != x["recipe_windows"] * args.epochs]
    if ok:
        lines.append(
            f"- windows: the recipe's prepare_train_features cuts the training questions into "
            f"{next(iter(ok.values()))['recipe_windows']:,} windows; "
            + ("every row trained on that many per epoch." if not off else
               "rows that trained on another count: " + ", ".join(
                   f"{r} {ok[r]['windows_trained']:,}" for r in off) + "."))
    tl = results.get("tlkit", {})
    if "f1" in tl and "f1" in base:
        lines.append(
            f"- tlkit against the recipe: F1 {tl['f1'] - base['f1']:+.2f} points, EM "
            f"{tl['exact_match'] - base['exact_match']:+.2f}, "
            f"{tl['windows_per_second'] / base['windows_per_second']:.2f}x the training windows "
            f"per second, {tl['test_seconds'] / base['test_seconds']:.2f}x the test seconds.")
    lines += common.closing_notes(results, args.threads, __file__, argv, optimizer=True)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=2000,
                   help="questions drawn from SQuAD's training set (tlkit's data.limit): "
                        "--val-fraction of them validate, the rest train (default 2,000)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test", type=int, default=500,
                   help="dev questions tested (tlkit's --test-limit subset, default 500)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="one rate for every parameter (default 1e-4, examples/qa.yaml's "
                        "backbone_lr)")
    p.add_argument("--warmup-ratio", type=float, default=0.1,
                   help="warmup steps: this share of the optimizer steps, rounded up")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="tlkit's head dropout (default 0: AutoModelForQuestionAnswering has none)")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--train-seed", type=int, default=None,
                   help="the training's seed in every row (the head's initialisation, the "
                        "batches' order, dropout), apart from --seed, which draws the questions "
                        "(default: --seed)")
    p.add_argument("--ungrouped", action="store_true",
                   help="tlkit's batches drawn at random, not by length (data.group_by_length "
                        "false), as the recipe's")
    p.add_argument("--table-from", default=None, metavar="JSON",
                   help="print the table of an earlier run's --json file (no training)")
    common.add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.child:
        return common.child_main(ROW_FUNCS, args)
    argv = list(sys.argv[1:] if argv is None else argv)
    if common.replayed(args, argv, lambda saved, old: report(
            saved["results"], p.parse_args(old), old)):
        return 0
    args.rows = args.rows or DEFAULT_ROWS
    return common.rows_main(__file__, ROWS, args, argv, report)


if __name__ == "__main__":
    raise SystemExit(main())
