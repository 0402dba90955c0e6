"""The command line, nothing else: parse, call the library, print, map errors to exit codes.

Exit 0 on success; 2 on a user error (one message, no traceback); 1 on an internal error.
Heavy imports (torch, timm, transformers) happen inside the commands, after the config is valid.

Over 450 lines on purpose: every command's arguments and its few lines of calls sit in this one
file, so the command-line contract (DESIGN.md) reads in one place; the work is in the library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlkit import strategies
from tlkit.errors import Terminated, UserError, raise_terminated
from tlkit.progress import Reporter


def _quiet_env() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def cmd_plan(args: argparse.Namespace) -> int:
    from tlkit.config import load_config

    cfg = load_config(args.config, args.set or [])
    _splits_apart(cfg)
    from tlkit.assemble import assemble
    from tlkit.data import load_source, make_splits, num_outputs_of
    from tlkit.adapt.alignment import aligns
    from tlkit.plan import format_plan
    from tlkit.plan.apply import batchnorm_trains
    from tlkit.plan.length import length_for

    from tlkit.config import AUTO

    if cfg.transfer_config.freeze_strategy == AUTO:
        from tlkit.select.candidates import candidates

        print("freeze_strategy auto: fit chooses among "
              f"{', '.join(candidates())} (the fine-tuning ones at auto's rates where the config "
              "leaves them unset; successive halving on the validation loss where the "
              "validation split can tell trials apart), within "
              f"auto_budget {cfg.transfer_config.auto_budget:g} x the default fit's time; "
              "`tlkit plan --set transfer_config.freeze_strategy=NAME` shows a candidate's plan")
        data = load_source(cfg.data)
        if data.modality == "image":  # the size every candidate runs at (the pixels' aside)
            from tlkit.backbones.registry import load_backbone

            tc = cfg.transfer_config
            _print_image_size(cfg, make_splits(data, cfg.data),
                              load_backbone(tc.source_model, tc.pretrained_weights))
        return 0
    # the data first (cheap, and the run's length depends on its size), then the model
    data = load_source(cfg.data)
    splits = make_splits(data, cfg.data)
    student = None
    if cfg.distill is not None:  # a student's plan: its own backbone (tlkit distill)
        from tlkit.distillation.build import student_of

        student = student_of(cfg, splits)
        print(f"distillation from {cfg.distill.teacher}: the student is {student.said}")
    asm = assemble(cfg.transfer_config, num_outputs_of(splits.train), task=splits.train.task,
                   max_length=cfg.data.max_length,
                   backbone=None if student is None else student.backbone)
    tc = cfg.transfer_config
    batchnorm = not aligns(cfg.adaptation) and batchnorm_trains(
        asm.model, asm.groups, asm.plan, tc.freeze_norm_stats)
    print(format_plan(asm.plan, length_for(splits.train, tc, batchnorm)))
    if data.modality == "image":
        _print_image_size(cfg, splits, asm.model.backbone)
    elif getattr(asm.model.backbone, "length_said", None):
        print(asm.model.backbone.length_said)  # the text length, and why
    return 0


def _print_image_size(cfg: Any, splits: Any, backbone: Any) -> None:
    """The size the images run at, and why (data.image_size, else the images' own size)."""
    from tlkit.data.resolution import image_size_for

    print(image_size_for(backbone, cfg.data.image_size, splits.train.inputs).describe())


def _splits_apart(cfg: Any) -> None:
    """Refuse, as fit does, a config whose training, validation and test sets are the same
    data (diagnostics.allow_overlap lets it go on), before a command plans or measures on it."""
    from tlkit.data.fingerprint import check_identical

    target = cfg.adaptation.target
    check_identical(cfg.data, cfg.diagnostics.allow_overlap,
                    None if target is None else target.test)


def cmd_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.config import load_config

    cfg = load_config(args.config, args.set or [])
    if args.test_limit is not None and args.test_limit < 1:
        raise UserError(f"--test-limit {args.test_limit}: give at least 1 test example")
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    from tlkit.outputs import check_output

    if os.environ.get("RANK", "0") == "0":  # before the log or TensorBoard write anything
        check_output(out, "run", inputs=config_inputs(args.config, cfg))
    if args.baseline:
        from tlkit.select.variants import check_baselines

        check_baselines(cfg)
    from tlkit.distributed import is_main_process, launched
    from tlkit.tracking import tracker

    # an external service is contacted now, briefly: before the model loads or the run
    # directory is written, so that a fit that could not log is refused before it trains
    ml = tracker(cfg, out, None) if is_main_process() else None
    from tlkit.run.after_fit import fit_and_finish

    if args.tensorboard:
        from tlkit.errors import require

        require(("tensorboard",), "tensorboard", "fit --tensorboard")
    if args.baseline and launched():
        raise UserError("--baseline runs on one process: fit on several, then run the "
                        "baseline without torchrun / accelerate launch")
    rep = Reporter(str(out / "train.log"))
    # a service that failed during the run was said in the log; the results stand (exit 0)
    fit_and_finish(cfg, out, event=rep, say=rep.line, tracker=ml, resume=args.resume,
                   checkpoint_every=args.checkpoint_every,
                   tensorboard=args.tensorboard and is_main_process(), baseline=args.baseline,
                   report=not args.no_report, test_limit=args.test_limit)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.distillation.config import student_config

    cfg = student_config(args.run_dir, student=args.student, layers=args.layers,
                         unlabelled=args.unlabelled, unlabelled_limit=args.unlabelled_limit,
                         temperature=args.temperature, alpha=args.alpha, epochs=args.epochs,
                         overrides=args.set or [])
    out = Path(args.out)
    from tlkit.outputs import check_output
    from tlkit.outputs import config_inputs as named

    # never the teacher's run directory, nor the data either reads
    check_output(out, "run", inputs=[Path(args.run_dir), *named(cfg.model_dump())])
    from tlkit.run.after_fit import fit_and_finish

    rep = Reporter(str(out / "train.log"))
    fit_and_finish(cfg, out, event=rep, say=rep.line, tracker=None, resume=args.resume,
                   checkpoint_every=args.checkpoint_every, report=not args.no_report)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.outputs import check_output, run_inputs
    from tlkit.report import write_report
    from tlkit.report.model_card import write_card

    run = Path(args.run_dir)
    check_output(Path(args.out) if args.out else run / "report.html", "page",
                 inputs=run_inputs(run), own=run, overwrite=args.overwrite)
    print(write_report(run, args.out))
    if args.out is None:  # the report went into the run directory: the card goes beside it
        write_card(Path(args.run_dir))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.run import evaluate_run

    print(json.dumps(evaluate_run(Path(args.run_dir), args.data), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.run import is_unlabelled_source, predict_run, score_run
    from tlkit.run.scoring import Writer, check_out_file, open_out, out_format

    out = Path(args.out) if args.out else None
    fmt = out_format(out) if out is not None else "jsonl"  # a bad ending: refused before work
    if out is not None:
        from tlkit.outputs import existing, run_inputs

        run = Path(args.run_dir)
        check_out_file(out, inputs=[*run_inputs(run), *existing([args.data, *args.inputs])],
                       own=run, overwrite=args.overwrite)
    calibrated = not args.no_calibration
    if args.question is not None or args.context is not None:  # question answering
        if args.inputs or args.data is not None:
            raise UserError("--question and --context ask one question; give them without "
                            "inputs or --data (a file of questions goes alone in --data)")
        if out is not None and fmt != "jsonl":
            raise UserError("a question-answering model's predictions are answers with their "
                            "spans; write them to a .jsonl file (--out FILE.jsonl)")
        from tlkit.run import dumps_jsonl, predict_answers

        text = dumps_jsonl(predict_answers(Path(args.run_dir), args.question, args.context))
        if out is None:
            sys.stdout.write(text)
        else:
            from tlkit.files import atomic_write

            atomic_write(out, lambda tmp: tmp.write_text(text))
        return 0
    if args.data is not None and not args.inputs and is_unlabelled_source(args.data):
        with _progress("scoring") as advance:
            done = score_run(Path(args.run_dir), args.data, out, calibrated, advance)
        where = f" to {out}" if out is not None else ""
        print(f"[tlkit] scored {done.rows:,} rows of {args.data}{where}", file=sys.stderr)
        if done.errors:
            shown = "; ".join(f"{i}: {why}" for i, why in done.errors[:5])
            print(f"[tlkit] {len(done.errors)} row(s) could not be scored (written with their "
                  f"error): {shown}{' ...' if len(done.errors) > 5 else ''}", file=sys.stderr)
        return 0
    rows = predict_run(Path(args.run_dir), args.inputs, args.data, calibrated)
    if out is None:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        return 0
    from tlkit.files import atomic_write

    first = rows[0] if rows else {}
    task = ("single_label" if "label" in first else "multi_label" if "labels" in first
            else "regression")

    def write(tmp: Path) -> None:
        with open_out(tmp, fmt) as f:
            w = Writer(f, fmt, task, list(first.get("probabilities", {})))
            w.write(rows if fmt == "jsonl" else [{"id": r.pop("input"), **r} for r in rows])
            w.close()

    atomic_write(out, write)
    return 0


@contextlib.contextmanager
def _progress(what: str) -> Any:
    """A rows-done bar on stderr when it is a terminal (rich); yields the advance function."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(f"{what} {{task.completed:,}} rows"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda n: bar.advance(task, n)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.export import TOLERANCE, export_run

    r = export_run(Path(args.run_dir), args.format, Path(args.out) if args.out else None,
                   data=args.data, check_split=args.check_split, overwrite=args.overwrite,
                   quantize=args.quantize)
    print(f"exported {r.path} ({r.exporter}); description {r.meta_path}")
    if r.quantized is not None:
        print(r.quantized.line())
        return 0
    print(f"max abs difference from PyTorch: {r.max_abs_diff:.3g} on {r.n_checked} examples "
          f"of {r.check_data} (tolerance {TOLERANCE:g})")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from tlkit.backbones import list_backbones

    rows = list_backbones()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'modality':<8}  {'offline':<7}  {'how':<22}  about")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['modality']:<8}  {'yes' if r['offline'] else 'no':<7}  "
              f"{r['how']:<22}  {r['about']}")
    print("\nAlso: timm:NAME, hf:PATH_OR_ID, torchvision:NAME (with pretrained_weights: a local "
          "file or folder, none, or a hub tag where a hub is reachable).")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from tlkit.data import list_packaged

    rows = list_packaged()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'modality':<8}  {'task':<20}  {'classes':>7}  {'train':>7}  "
          f"{'val':>7}  {'test':>7}  {'installed':<9}  about")
    for r in rows:
        # "split": the run cuts the split (data.val_fraction, data.test_fraction)
        val, test = (r[k] if r[k] is not None else "split" for k in ("val_size", "test_size"))
        classes = "-" if r["task"] in ("regression", "question_answering") \
            else r["num_classes"]
        print(f"{r['name']:<{w}}  {r['modality']:<8}  {r['task']:<20}  {classes:>7}  "
              f"{r['train_size']:>7}  {val:>7}  {test:>7}  "
              f"{'yes' if r['installed'] else 'no':<9}  "
              f"{r['description']}" + ("" if r["installed"] else f"  ({r['install']})"))
    print("\nAlso: a folder with one subfolder per class, or a .csv / .jsonl / .parquet file; "
          "for token_classification a CoNLL or JSON-lines file; for question_answering a "
          "SQuAD-format JSON or JSON-lines file.")
    return 0


def config_inputs(config: str, cfg: Any) -> list[Path]:
    """What a command on ``config`` reads: the YAML file and the files its keys name (the
    output rule never writes over them)."""
    from tlkit.outputs import config_inputs as named

    return [Path(config), *named(cfg.model_dump())]


def _check_results(args: argparse.Namespace, cfg: Any, kind: str) -> None:
    """A command's --json (and --html) files, checked by the output rule before any work."""
    from tlkit.outputs import check_output

    read = config_inputs(args.config, cfg)
    if args.json:
        check_output(Path(args.json), kind, flag="--json", inputs=read, overwrite=args.overwrite)
    if getattr(args, "html", None):
        check_output(Path(args.html), "page", flag="--html", inputs=read,
                     overwrite=args.overwrite)


def _write_json(path: str | None, obj: object, kind: str) -> None:
    if path:
        from tlkit.outputs import write_json

        write_json(path, obj, kind)


def _sequence_only(cfg: Any, command: str) -> None:
    """Refuse a token-classification config where a command scores whole sequences."""
    if cfg.data.task == "token_classification":
        raise UserError(f"tlkit {command} scores one label per example; data.task "
                        "token_classification is not supported by it yet: use tlkit fit "
                        "(with --baseline for the verdict) for token classification")
    if cfg.data.task == "question_answering":
        raise UserError(f"tlkit {command} scores one label per example; data.task "
                        "question_answering is not supported by it yet: use tlkit fit for "
                        "question answering")


def _diagnostic_config(args: argparse.Namespace, command: str) -> Any:
    """rank / probe / advise: the config, with its splits apart, a sequence task and the
    result files checked before anything loads."""
    from tlkit.config import load_config

    cfg = load_config(args.config, args.set or [])
    _splits_apart(cfg)
    _sequence_only(cfg, command)
    _check_results(args, cfg, command)
    return cfg


def cmd_rank(args: argparse.Namespace) -> int:
    from tlkit.diagnose.rank import format_rank, parse_candidates

    cfg = _diagnostic_config(args, "rank")
    candidates = parse_candidates(args.backbones)
    from tlkit.diagnose.rank import rank

    result = rank(cfg, candidates, probe=args.probe, log=Reporter().line)
    print(format_rank(result))
    _write_json(args.json, result, "rank")
    if args.html:
        from tlkit.report import write_rank_page

        write_rank_page(result, args.html)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    cfg = _diagnostic_config(args, "probe")
    from tlkit.diagnose.probe_run import format_probe_run, probe_run

    result = probe_run(cfg, log=Reporter().line)
    print(format_probe_run(result))
    _write_json(args.json, result, "probe")
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    cfg = _diagnostic_config(args, "advise")
    from tlkit.run import fit_run
    from tlkit.select.advise import format_advice, gather, measure, measure_adaptation, recommend

    rep = Reporter()
    ev = gather(cfg, log=rep.line)
    adv = recommend(ev, cfg.transfer_config)
    if not args.table_only:  # the pick fit's freeze_strategy auto would make, by its trials
        adv = measure(cfg, adv, log=rep.line)
        adv = measure_adaptation(cfg, adv, fit_run, log=rep.line)
    print(format_advice(adv, ev, args.config))
    from dataclasses import asdict

    _write_json(args.json, {"advice": adv.to_dict(), "evidence": asdict(ev)}, "advise")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.config import load_config

    cfg = load_config(args.config, args.set or [])
    _splits_apart(cfg)
    _sequence_only(cfg, "compare")
    from tlkit.run import fit_run
    from tlkit.select.compare import compare, format_leaderboard

    names = ([s.strip() for s in args.strategies.split(",") if s.strip()]
             if args.strategies else [*strategies.names(), "auto"])
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-compare"
    from tlkit.outputs import check_output

    check_output(out, "compare", inputs=config_inputs(args.config, cfg))  # before advise
    rep = Reporter()
    advice = None
    if not args.no_advise:
        from tlkit.select.advise import format_advice, gather, recommend

        ev = gather(cfg, log=rep.line)
        advice = recommend(ev, cfg.transfer_config)
        rep.line(format_advice(advice, ev, args.config))
    result = compare(cfg, out, names, fit_run, advice, resume=args.resume,
                     test_limit=args.test_limit, log=rep.line)
    text = format_leaderboard(result)
    print(text)
    (out / "leaderboard.md").write_text(text + "\n")
    _write_json(str(out / "compare.json"), result, "compare result")
    from tlkit.report import write_compare_page

    write_compare_page(result, out / "compare.html")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlkit.config import load_config

    cfg = load_config(args.config, args.set or [])
    from tlkit.outputs import check_output

    check_output(Path(args.out), "pretrain", inputs=config_inputs(args.config, cfg))
    from tlkit.adapt.pretrain import pretrain

    result = pretrain(cfg, Path(args.out), log=Reporter().line, resume=args.resume,
                      checkpoint_every=args.checkpoint_every)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlkit", description="Transfer learning with measurements.",
        epilog="freeze strategies (transfer_config.freeze_strategy):\n" + strategies.describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    _config_commands(sub)
    _run_commands(sub)
    _listing_commands(sub)
    return p


Subparsers = Any  # argparse's _SubParsersAction, a private class


def _overwrite_flag(sp: argparse.ArgumentParser, help_: str) -> None:
    """The output rule's one way past a refusal (tlkit.outputs): an existing file the user
    names, never an input, a folder or a file in a run directory."""
    sp.add_argument("--overwrite", action="store_true", help=help_)


def _test_limit_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--test-limit", type=int, default=None, metavar="N",
                    help="test on a fixed subset of N test examples (drawn with data.seed, "
                    "stratified for single-label; summary.json's test_limit says so): faster "
                    "on a large test set, such as SQuAD's dev questions")


def _config_commands(sub: Subparsers) -> None:
    """The commands that read a config: plan, fit, pretrain, rank, probe, advise, compare."""
    def with_config(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="YAML config with transfer_config and data sections")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. --set transfer_config.head_lr=3e-4")
        return sp

    with_config("plan", "print the freeze / learning-rate table of every phase; no training"
                ).set_defaults(func=cmd_plan)
    sp = with_config("fit", "train: adapt the backbone to the data; writes a run directory")
    sp.add_argument("--out", help="run directory (default runs/<config name>)")
    sp.add_argument("--resume", action="store_true", help="continue the run in --out (from "
                    "its last checkpoint; from the beginning if it has none yet)")
    sp.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                    help="write checkpoints/last.pt every STEPS optimizer steps (default: every "
                    "two minutes), and at the end of each epoch")
    _test_limit_flag(sp)
    sp.add_argument("--baseline", action="store_true",
                    help="also train the baselines of diagnostics.baselines on the same splits "
                    "and give a verdict against each: the same architecture from scratch "
                    "(diagnostics.baseline_seeds times; single-label, token classification "
                    "and question answering, whose verdict is in SQuAD F1) and a classical "
                    "model (TF-IDF or raw pixels + logistic regression, ridge for regression)")
    sp.add_argument("--tensorboard", action="store_true",
                    help="also write TensorBoard event files to RUN_DIR/tensorboard/ (losses, "
                    "validation metrics, learning rates, phase)")
    sp.add_argument("--no-report", action="store_true",
                    help="do not write RUN_DIR/report.html at the end")
    sp.set_defaults(func=cmd_fit)
    sp = with_config("pretrain", "continued self-supervised pretraining on the unlabelled "
                     "data of adaptation.target (text: masked-LM, or contrastive SimCSE for "
                     "sentence encoders; images: SimCLR on the top groups); writes a backbone")
    sp.add_argument("--out", required=True, help="folder for the pretrained backbone (then "
                    "source_model: hf:FOLDER for text, pretrained_weights: "
                    "FOLDER/backbone.safetensors for images)")
    sp.add_argument("--resume", action="store_true",
                    help="continue a killed pretraining from OUT/checkpoints/last.pt")
    sp.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                    help="save a checkpoint every STEPS optimizer steps (default: every two "
                    "minutes and at each epoch's end)")
    sp.set_defaults(func=cmd_pretrain)
    sp = with_config("rank", "transferability scores of candidate backbones; no fine-tuning")
    sp.add_argument("--backbones", required=True, metavar="A,B,...",
                    help="candidates: backbone names, NAME@none for a random initialisation, "
                    "NAME@PATH for other weights")
    sp.add_argument("--probe", action="store_true",
                    help="also a linear probe per candidate, and Kendall's tau against it")
    sp.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    sp.add_argument("--html", metavar="FILE", help="also write the result as an HTML page")
    _overwrite_flag(sp, "replace the --json / --html files if they exist and tlkit cannot "
                    "tell it wrote them (never an input of the command, nor a file in a run "
                    "directory)")
    sp.set_defaults(func=cmd_rank)
    sp = with_config("probe", "a linear probe at each layer group (and divergence to "
                     "diagnostics.reference where given)")
    sp.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    _overwrite_flag(sp, "replace the --json file if it exists and tlkit cannot tell it wrote it")
    sp.set_defaults(func=cmd_probe)
    sp = with_config("advise", "recommended strategy and settings, with the evidence")
    sp.add_argument("--json", metavar="FILE", help="also write the advice and evidence as JSON")
    _overwrite_flag(sp, "replace the --json file if it exists and tlkit cannot tell it wrote it")
    sp.add_argument("--table-only", action="store_true",
                    help="advise from the probes and the concept's table alone, without the "
                    "trials of freeze_strategy auto")
    sp.set_defaults(func=cmd_advise)
    sp = with_config("compare", "every strategy, a from-scratch baseline and a classical one "
                     "(TF-IDF or raw pixels + logistic regression) under one budget: a "
                     "leaderboard")
    sp.add_argument("--strategies", metavar="A,B,...",
                    help=f"strategies to run (default: {', '.join(strategies.names())}, auto: "
                    "the pick of freeze_strategy auto's trials); the scratch and classical baselines "
                    "always run")
    sp.add_argument("--out", help="folder for the runs (default runs/<config name>-compare)")
    sp.add_argument("--resume", action="store_true",
                    help="finish a compare in --out: finished runs are kept")
    sp.add_argument("--no-advise", action="store_true", help="do not run advise first")
    _test_limit_flag(sp)
    sp.set_defaults(func=cmd_compare)


def _run_commands(sub: Subparsers) -> None:
    """The commands on a finished run directory: evaluate, predict, distill, report,
    export."""
    sp = sub.add_parser("evaluate", help="metrics of a finished run as JSON")
    sp.add_argument("run_dir")
    sp.add_argument("--data", help="train | val | test (default) of the run's data, or another "
                    "source (path or packaged name)")
    sp.set_defaults(func=cmd_evaluate)
    sp = sub.add_parser("predict", help="predictions of a finished run as JSON lines")
    sp.add_argument("run_dir")
    sp.add_argument("inputs", nargs="*", help="texts, or image files; for a sentence-pair "
                    "model each input is its two texts joined by '|||', e.g. 'A man sleeps. "
                    "||| A person rests.'")
    sp.add_argument("--data", help="a CSV / TSV / JSONL / Parquet file or a folder of images to "
                    "score (labels not needed; streamed), a split of the run's data "
                    "(train/val/test) or a packaged set")
    sp.add_argument("--out", help="write the predictions here: .csv, .jsonl or .parquet (default: "
                    "JSON lines on stdout)")
    sp.add_argument("--question", help="question answering: the question to answer about "
                    "--context (a question-answering run only)")
    sp.add_argument("--context", help="question answering: the text the answer is a span of")
    sp.add_argument("--no-calibration", action="store_true",
                    help="raw probabilities: no temperature (single-label) and threshold 0.5 "
                    "(multi-label) in place of those fitted on the run's validation split")
    _overwrite_flag(sp, "replace the --out file if it exists (never the --data file, nor a "
                    "file in a run directory)")
    sp.set_defaults(func=cmd_predict)
    _distill_command(sub)
    sp = sub.add_parser("report", help="write RUN_DIR/report.html: one self-contained page with "
                        "the plan, the curves and the diagnostics of a finished run")
    sp.add_argument("run_dir")
    sp.add_argument("--out", metavar="FILE", help="write the page here instead (for a run "
                    "directory that is read-only)")
    _overwrite_flag(sp, "replace the --out file if it exists and is not a page tlkit wrote")
    sp.set_defaults(func=cmd_report)
    sp = sub.add_parser("export", help="the run's model as ONNX, TorchScript, or a "
                        "transformers / timm / PEFT folder, checked against PyTorch")
    sp.add_argument("run_dir")
    sp.add_argument("--format", required=True, choices=["onnx", "torchscript", "hf", "timm",
                                                         "peft"],
                    help="onnx / torchscript: one file; hf: a folder transformers loads "
                    "(AutoModelForSequenceClassification, trust_remote_code=True); timm: a "
                    "folder timm.create_model('local-dir:FOLDER', pretrained=True) loads; "
                    "peft: a LoRA run's adapter folder for PeftModel.from_pretrained")
    sp.add_argument("--out", help="file to write (default RUN_DIR/export/model.onnx or .pt); a "
                    "JSON describing inputs, preprocessing and labels goes beside it")
    check = sp.add_mutually_exclusive_group()
    check.add_argument("--data", help="check on the first 64 examples of this split "
                       "(train/val/test) or source (default: val)")
    check.add_argument("--check-split", choices=["train", "val", "test"],
                       help="check on every example of this split of the run's data")
    sp.add_argument("--quantize", choices=["int8"], default=None,
                    help="onnx only: quantize the file with ONNX Runtime (text: dynamic; "
                    "images: static, calibrated on the validation split), checked by accuracy "
                    "and agreement with PyTorch on the test split (default RUN_DIR/export/"
                    "model.int8.onnx)")
    _overwrite_flag(sp, "replace the --out file (onnx, torchscript) if it exists and tlkit "
                    "cannot tell it exported it; never a folder, the run, or a file in a run "
                    "directory")
    sp.set_defaults(func=cmd_export)


def _distill_command(sub: Subparsers) -> None:
    """tlkit distill: a student trained on a finished run's outputs."""
    sp = sub.add_parser("distill", help="train a smaller student on a finished run's outputs "
                        "(knowledge distillation); writes the student's run directory")
    sp.add_argument("run_dir", help="the teacher: a finished run directory")
    sp.add_argument("--out", required=True, help="the student's run directory")
    sp.add_argument("--student", metavar="NAME", help="a registry backbone (see `tlkit "
                    "backbones`) as the student, with its pretrained weights (default: a "
                    "truncated copy of the teacher with its trained weights: half the encoder "
                    "layers of a transformer, the first block of each stage of a CNN)")
    sp.add_argument("--layers", type=int, metavar="N", help="encoder layers the truncated "
                    "transformer student keeps (default: half the teacher's)")
    sp.add_argument("--unlabelled", metavar="FILE_OR_FOLDER", help="inputs without labels the "
                    "teacher labels for the student (a table's text or image column, or a "
                    "folder of images; default: the teacher's adaptation.target, if any)")
    sp.add_argument("--unlabelled-limit", type=int, metavar="N",
                    help="use a seeded sample of N unlabelled inputs")
    sp.add_argument("--temperature", type=float, metavar="T",
                    help="softmax temperature of the soft targets (default 2)")
    sp.add_argument("--alpha", type=float, metavar="A", help="weight of the soft targets' loss; "
                    "1 - A weighs the labels' (default 0.5)")
    sp.add_argument("--epochs", type=int, help="the student's epochs (default: the teacher's)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the student's config, e.g. --set "
                    "transfer_config.backbone_lr=5e-5")
    sp.add_argument("--resume", action="store_true", help="continue the student in --out")
    sp.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                    help="write checkpoints/last.pt every STEPS optimizer steps")
    sp.add_argument("--no-report", action="store_true",
                    help="do not write OUT/report.html at the end")
    sp.set_defaults(func=cmd_distill)


def _listing_commands(sub: Subparsers) -> None:
    """What is known and available here: backbones, datasets."""
    sp = sub.add_parser("backbones", help="known backbones and which load offline here")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_backbones)
    sp = sub.add_parser("datasets", help="packaged data sets and whether each is installed")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_datasets)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C: temporary files go
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        if args.command != "fit" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("only `tlkit fit` runs on several processes (torchrun / "
                            "accelerate launch); run this command on one")
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"tlkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (| head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"tlkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"tlkit {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except Exception:  # noqa: BLE001 - an internal error: keep the traceback for a bug report
        traceback.print_exc()
        print(f"tlkit {args.command}: internal error (a bug in tlkit; please report it with the "
              "traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
