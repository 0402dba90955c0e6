"""What every export shares: the formats and where each is written, the output rule's checks
before anything loads, and the check of an export against the run's PyTorch model.

A check runs the export on real examples of the run's data through a runner (the exported file
or folder, loaded by its own runtime, on tlkit's collated inputs) and compares its outputs with
the PyTorch model's; a difference above ``TOLERANCE`` is an error.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.data import build_collate, build_dataset
from tlkit.data.answers import doc_stride_of
from tlkit.errors import UserError
from tlkit.outputs import check_output, existing, folder_kind, run_inputs
from tlkit.rundir import RunDir
from tlkit.train.batches import batches_of

FORMATS: tuple[str, ...] = ("onnx", "torchscript", "hf", "timm", "peft")
FOLDER_FORMATS = ("hf", "timm", "peft")  # a folder the library's own loader reads
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "hf": "", "timm": "", "peft": ""}
TOLERANCE = 1e-4
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "outputs"
CHECK_BATCH = 64

Runner = Callable[[Any], np.ndarray]  # the loaded export on a batch of tlkit's collated inputs


@dataclass
class ExportResult:
    path: Path
    meta_path: Path
    exporter: str
    check_data: str
    n_checked: int
    max_abs_diff: float
    quantized: Any = None  # quantize.Quantized: the int8 file's check, where --quantize int8


def require_backbone(saved: Any, fmt: str, kind: str, adapter: str, library: str) -> None:
    """Refuse a run the folder format ``fmt`` cannot hold: it takes ``kind`` runs on an
    ``adapter`` backbone (``library`` names it for the message)."""
    got, on = saved.preprocessing.kind, saved.meta["backbone"].get("adapter")
    if got != kind or on != adapter:
        raise UserError(f"--format {fmt} exports {kind} runs on a {library} backbone; this run "
                        f"is {got} on {on}: use --format onnx or torchscript")


def default_output(run_dir: Path, fmt: str, quantize: str | None = None) -> Path:
    if fmt in FOLDER_FORMATS:
        return Path(run_dir) / "export" / fmt
    return Path(run_dir) / "export" / f"model{'.' + quantize if quantize else ''}{SUFFIX[fmt]}"


def description_path(path: Path) -> Path:
    """model.onnx -> model.onnx.json (an ONNX and a TorchScript export can share a folder); the
    folder hf -> hf.json."""
    return path.with_name(path.name + ".json")


def tokenizer_path(path: Path) -> Path:
    """model.onnx -> model.tokenizer: where a text model's tokenizer goes beside the file."""
    return path.with_name(path.stem + ".tokenizer")


def check_args(run_dir: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}; "
                        "use one of those with --format")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; give the --out folder of a "
                        "finished `tlkit fit`")


def check_writable(out: Path) -> None:
    """Refuse, before anything is exported, a place that cannot be written (a read-only run
    directory: the default is RUN_DIR/export/)."""
    where = out.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not os.access(where, os.W_OK):
        raise UserError(f"cannot write {out}: {where} is read-only; give --out a writable place "
                        "(nothing was written)")


def _modality(run_dir: Path) -> str | None:
    """The run's input kind from model/model.json, read without loading the model (None where
    it cannot be read: load_model says why later)."""
    try:
        meta = json.loads((run_dir / "model" / "model.json").read_text(encoding="utf-8"))
        return str(meta["preprocessing"]["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_outputs(run_dir: Path, fmt: str, out: Path, data: str | None = None,
                  overwrite: bool = False) -> None:
    """Every path the export of ``run_dir`` to ``out`` writes, checked by the output rule
    (``tlkit.outputs``) before the model loads: the file or folder, its description beside it,
    a text model's tokenizer folder. Never the run itself or another run, nor a folder or file
    tlkit did not write (a file: unless ``overwrite``)."""
    inputs = [*run_inputs(run_dir), *existing([data])]
    rule: dict[str, Any] = {"inputs": inputs, "own": run_dir}
    if fmt in FOLDER_FORMATS:
        check_output(out, "export", overwrite=overwrite, **rule)
    else:
        check_output(out, "model", overwrite=overwrite, example=f"model{SUFFIX[fmt]}", **rule)
        tok = tokenizer_path(out)
        if _modality(run_dir) != "image":
            if tok.exists() and folder_kind(tok) != "export":
                raise UserError(f"{tok} exists and is not a tokenizer folder tlkit exported (the "
                                "export writes the tokenizer there); move it, or give --out "
                                "another name (nothing was written)")
            check_output(tok, "export", side_of=out, **rule)
    check_output(description_path(out), "description", side_of=out, **rule)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    # Exporters warn (tracer warnings, deprecations) and print progress; none of it is ours.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def check(saved: Any, runner: Runner, data: Any, limit: int | None) -> tuple[int, float]:
    """(examples checked, the largest absolute difference) between ``runner`` and the run's
    PyTorch model on the first ``limit`` examples of ``data`` (every one where None)."""
    ds: Any = build_dataset(data, saved.preprocessing, doc_stride=doc_stride_of(saved.meta))
    collate: Any = build_collate(saved.preprocessing)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise UserError(f"the data to check the export on ({data.name}) has no examples; give "
                        "another with --data or --check-split")
    worst = 0.0
    with torch.no_grad():
        for idx in batches_of(range(n), CHECK_BATCH):
            inputs, _ = collate([ds[i] for i in idx])
            expected = saved.model(inputs).float().numpy()
            got = runner(inputs)
            if got.shape != expected.shape:
                raise RuntimeError(f"exported model gave shape {got.shape}, PyTorch "
                                   f"{expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    return n, worst


def graph_inputs(inputs: Any, names: list[str]) -> list[torch.Tensor]:
    """A collated batch as the exported graph's positional inputs: the images, or the named
    token tensors as int64."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    return [inputs[k].to(torch.int64) for k in names]


def text_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tokenizer's tensors of a collated text batch, as a transformers model takes them."""
    return {k: v for k, v in inputs.items() if k in TEXT_INPUTS}


def labels(saved: Any) -> dict[int, str]:
    """Output index -> label name (``output_i`` where the run has no class names)."""
    n = int(saved.meta["head"]["num_outputs"])
    names = saved.classes or [f"output_{i}" for i in range(n)]
    return {i: str(c) for i, c in enumerate(names)}


def update_card(run_dir: Path, out: Path) -> None:
    """Rewrite the run's model card, which lists its exports and how to load each, when the
    export sits in a finished run."""
    if RunDir(run_dir).summary.is_file() and out.resolve().is_relative_to(run_dir.resolve()):
        from tlkit.report.model_card import write_card

        write_card(run_dir)
