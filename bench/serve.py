"""Serving a fitted run cheaply: PyTorch fp32 against its ONNX fp32 and int8 exports.

For each run (by default the quickstart, MiniLM on Rotten Tomatoes, and the Fashion-MNIST
example, MobileNetV2 at 96 px, both fitted here first from examples/*.yaml): the run's model in
PyTorch fp32 (as ``tlkit predict`` runs it on a CPU), ``tlkit export --format onnx`` in ONNX
Runtime, and ``tlkit export --format onnx --quantize int8`` (dynamic for text, static for images).
Each on the same test split: accuracy, agreement with PyTorch's predictions, latency at batch 1
(median and p95 over ``--latency`` examples) and throughput at batch 64 (examples per second over
the split, after one warm-up batch), with the ratios to PyTorch fp32. Inputs are preprocessed
(tokenised, resized) once beforehand: the figures are the model's own cost.

    .venv/bin/python bench/serve.py                          # fits both examples first
    .venv/bin/python bench/serve.py --run quickstart=runs/quickstart   # an existing run

Then the run's distilled student (``tlkit distill RUN``, its defaults: a truncated copy of
the teacher; ``--unlabelled NAME=FILE`` gives it unlabelled inputs; ``--student NAME=DIR`` an
existing one): PyTorch fp32 and ONNX int8, on the same test split through its own
preprocessing, agreement with the teacher's PyTorch fp32 predictions.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import common

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"quickstart": "examples/quickstart.yaml", "fashion_mnist": "examples/fashion_mnist.yaml"}


def _fit(name: str, where: Path) -> Path:
    run = where / name
    print(f"[bench] serve: fitting {EXAMPLES[name]}", file=sys.stderr, flush=True)
    subprocess.run([str(Path(sys.executable).parent / "tlkit"), "fit",
                    str(ROOT / EXAMPLES[name]), "--out", str(run)], check=True,
                   stdout=subprocess.DEVNULL)
    return run


def _batches(saved: Any, data: Any, size: int, limit: int | None) -> list[tuple[Any, Any]]:
    from tlkit.data import build_collate, build_dataset
    from tlkit.train.batches import batches_of

    ds: Any = build_dataset(data, saved.preprocessing)
    collate: Any = build_collate(saved.preprocessing)
    n = len(ds) if limit is None else min(limit, len(ds))
    return [collate([ds[i] for i in idx]) for idx in batches_of(range(n), size)]


def _measure(predict: Callable[[Any], np.ndarray], big: list[tuple[Any, Any]],
             single: list[tuple[Any, Any]]) -> dict[str, Any]:
    predict(big[0][0])  # warm-up
    t0 = time.perf_counter()
    outs = [predict(x) for x, _ in big]
    seconds = time.perf_counter() - t0
    n = sum(len(o) for o in outs)
    predict(single[0][0])
    lat = []
    for x, _ in single:
        t = time.perf_counter()
        predict(x)
        lat.append(1000 * (time.perf_counter() - t))
    logits = np.concatenate(outs)
    y = np.concatenate([np.asarray(t) for _, t in big])
    return {"pred": logits.argmax(axis=1), "y": y, "throughput": n / seconds,
            "p50_ms": statistics.median(lat), "p95_ms": float(np.percentile(lat, 95)), "n": n}


def _rows_of(run: Path, tag: str, name: str, args: argparse.Namespace, tmp: Path
             ) -> tuple[dict[str, Callable[[Any], np.ndarray]], Any, Any]:
    """A run's predictors (PyTorch fp32, then its ONNX exports; ``tag`` prefixes the labels)
    with the test batches its own preprocessing makes (batch 64, and batch 1)."""
    import torch

    from tlkit.errors import UserError
    from tlkit.export import export_run
    from tlkit.export.onnx import onnx_runner
    from tlkit.export.run import _inputs
    from tlkit.run.inference import data_for
    from tlkit.rundir import RunDir
    from tlkit.saved import load_model

    saved = load_model(RunDir(run).model)
    saved.model.to("cpu").eval()
    data = data_for(RunDir(run), "test", saved.classes)
    big = _batches(saved, data, 64, args.limit)
    single = _batches(saved, data, 1, args.latency)
    names, _ = _inputs(saved)

    def torch_predict(x: Any) -> np.ndarray:
        with torch.no_grad():
            return saved.model(x).float().numpy()

    rows: dict[str, Callable[[Any], np.ndarray]] = {f"{tag}PyTorch fp32": torch_predict}
    exports = (("ONNX fp32", None), ("ONNX int8", "int8")) if not tag else (
        (("ONNX int8", "int8"),))
    for label, quant in exports:
        out = tmp / name / f"{tag.strip(' :')}model{'.int8' if quant else ''}.onnx"
        print(f"[bench] serve: {name}, exporting {tag}{label}", file=sys.stderr, flush=True)
        try:
            export_run(run, "onnx", out, quantize=quant)
        except UserError as e:  # tlkit's int8 check refused the file: kept, measured, said
            if not out.is_file():
                raise
            print(f"[bench] serve: {e}", file=sys.stderr, flush=True)
            label += " (refused by tlkit's check)"
        rows[f"{tag}{label}"] = onnx_runner(out, names)
    return rows, big, single


def run_one(name: str, run: Path, args: argparse.Namespace, tmp: Path,
            student: Path | None = None) -> list[dict[str, Any]]:
    """The run's rows, then its student's (``student``: a ``tlkit distill`` run of it), each
    on the same test split through its own preprocessing; agreement is with the run's
    PyTorch fp32 predictions."""
    plans = [_rows_of(run, "", name, args, tmp)]
    if student is not None:
        plans.append(_rows_of(student, "student: ", name, args, tmp))
    results = []
    base_pred = None
    for rows, big, single in plans:
        for label, predict in rows.items():
            print(f"[bench] serve: {name}, {label}", file=sys.stderr, flush=True)
            m = _measure(predict, big, single)
            if base_pred is None:
                base_pred = m["pred"]
            results.append({"run": name, "row": label, "n": m["n"],
                            "accuracy": float((m["pred"] == m["y"]).mean()),
                            "agreement": float((m["pred"] == base_pred).mean()),
                            "throughput": m["throughput"], "p50_ms": m["p50_ms"],
                            "p95_ms": m["p95_ms"]})
    return results


def _distill(name: str, run: Path, where: Path, unlabelled: str | None) -> Path:
    """``tlkit distill RUN`` with its defaults (a truncated copy of the teacher), and the
    unlabelled inputs where given."""
    out = where / f"{name}-student"
    print(f"[bench] serve: distilling {name}", file=sys.stderr, flush=True)
    subprocess.run([str(Path(sys.executable).parent / "tlkit"), "distill", str(run), "--out",
                    str(out), "--no-report", *(["--unlabelled", unlabelled] if unlabelled
                                               else [])], check=True, stdout=subprocess.DEVNULL)
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    head = ["run", "row", "accuracy", "vs PyTorch", "agreement", "batch 1 p50 ms",
            "batch 1 p95 ms", "batch 64 ex/s", "throughput ratio", "latency ratio"]
    body = []
    for r in rows:
        base = next(b for b in rows if b["run"] == r["run"] and b["row"] == "PyTorch fp32")
        body.append([r["run"], r["row"], f"{r['accuracy']:.4f}",
                     f"{100 * (r['accuracy'] - base['accuracy']):+.2f} pt",
                     f"{100 * r['agreement']:.1f}%", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
                     f"{r['throughput']:.0f}", f"{r['throughput'] / base['throughput']:.2f}x",
                     f"{base['p50_ms'] / r['p50_ms']:.2f}x"])
    n = {r["run"]: r["n"] for r in rows}
    return "\n".join([
        common.table(head, body, {2, 3, 4, 5, 6, 7, 8, 9}), "", "Notes:",
        "- each run's own test split (" + ", ".join(f"{k}: {v:,} examples" for k, v in n.items())
        + f"); latency over the first {args.latency} examples one at a time; inputs "
        "preprocessed beforehand (the model's cost only). Ratios: to PyTorch fp32 of the same "
        "run (throughput: higher is better; latency ratio: PyTorch's p50 over the row's).",
        f"- machine: {common.machine_line(args.threads)}; ONNX Runtime with its default threads.",
        f"- command: {common.command_line(__file__, argv)}"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                   help="an existing run directory (repeatable); default: fit both examples")
    p.add_argument("--student", action="append", default=[], metavar="NAME=DIR",
                   help="an existing `tlkit distill` run of run NAME (repeatable); default: "
                   "distill each run here with tlkit distill's defaults")
    p.add_argument("--unlabelled", action="append", default=[], metavar="NAME=FILE",
                   help="unlabelled inputs for the distillation of run NAME (--unlabelled of "
                   "tlkit distill)")
    p.add_argument("--no-student", action="store_true", help="no student rows")
    p.add_argument("--latency", type=int, default=200, help="examples timed at batch 1")
    p.add_argument("--limit", type=int, default=None, help="test examples (default: all)")
    p.add_argument("--threads", type=int, default=2)
    common.add_replay_flags(p)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if common.replayed(args, argv, lambda saved, av: report(saved["rows"], args, av)):
        return 0
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        runs = dict(r.split("=", 1) for r in args.run) if args.run else {
            name: str(_fit(name, tmp / "runs")) for name in EXAMPLES}
        students = dict(r.split("=", 1) for r in args.student)
        unlabelled = dict(r.split("=", 1) for r in args.unlabelled)
        for name, run in runs.items():
            if not args.no_student and name not in students:
                students[name] = str(_distill(name, Path(run), tmp / "runs",
                                              unlabelled.get(name)))
        rows = [row for name, run in runs.items()
                for row in run_one(name, Path(run), args, tmp / "exports",
                                   None if args.no_student else Path(students[name]))]
    text = report(rows, args, argv)
    print(text)
    common.save_json(args.json, {"rows": rows, "table": text, "argv": argv})
    return 0


if __name__ == "__main__":
    sys.exit(main())
