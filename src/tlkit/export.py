"""Export a finished run's model (backbone + head) to ONNX or TorchScript, and check it.

The exported graph takes the *preprocessed* input, as ``tlkit predict`` feeds the model: images
as a float tensor (batch, 3, H, W), already resized and normalised; text as the tokenizer's
``input_ids`` and ``attention_mask`` (and ``token_type_ids`` where the tokenizer gives them),
int64 (batch, sequence). The batch axis (and the sequence axis for text) is dynamic. Beside the
file, ``<file>.json`` names the inputs and the output, and carries the preprocessing, the labels
and the tokenizer (a folder beside it), so a consumer can run the model without tlkit.

After writing, the exported model runs (onnxruntime, or ``torch.jit.load``) against the PyTorch
model on real examples; a difference above ``TOLERANCE`` is an error.

ONNX goes through ``torch.onnx.export(dynamo=True)``, the torch.export-based exporter: it is
torch's default and maintained one (the TorchScript-based ``dynamo=False`` exporter is
deprecated and due for removal), and it exports both the timm CNNs and the BERT-like encoders
here with symbolic batch and sequence dimensions. Should it fail on some model, the legacy
exporter is tried, and the JSON says which one wrote the file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.data import build_collate, build_dataset
from tlkit.errors import UserError, require
from tlkit.lora import merge_lora
from tlkit.outputs import (MARKER, check_output, claim, existing, folder_kind, new_id,
                           run_inputs, sha256_of)
from tlkit.run.inference import data_for
from tlkit.rundir import RunDir
from tlkit.saved import load_model
from tlkit.train.batches import batches_of

FORMATS: tuple[str, ...] = ("onnx", "torchscript", "hf", "timm", "peft")
FOLDER_FORMATS = ("hf", "timm", "peft")  # tlkit.ecosystem: a folder the library loads
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "hf": "", "timm": "", "peft": ""}
TOLERANCE = 1e-4
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "outputs"
CHECK_BATCH = 64
# Two texts of different lengths: the example the graph is traced on has padding, so a branch
# that skips the attention mask when nothing is padded is never the one recorded.
_EXAMPLE_TEXTS = ("a short one", "a longer example sentence, so that the other one is padded")


@dataclass
class ExportResult:
    path: Path
    meta_path: Path
    exporter: str
    check_data: str
    n_checked: int
    max_abs_diff: float


class _ImageModel(nn.Module):
    """The run's model on a plain tensor of preprocessed images."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class _TextModel(nn.Module):
    """The run's model on positional token tensors (exporters want positional inputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.model(inputs)


def default_output(run_dir: Path, fmt: str) -> Path:
    if fmt in FOLDER_FORMATS:
        return Path(run_dir) / "export" / fmt
    return Path(run_dir) / "export" / f"model{SUFFIX[fmt]}"


def description_path(path: Path) -> Path:
    """model.onnx -> model.onnx.json (an ONNX and a TorchScript export can share a folder); the
    folder hf -> hf.json."""
    return path.with_name(path.name + ".json")


def tokenizer_path(path: Path) -> Path:
    """model.onnx -> model.tokenizer: where a text model's tokenizer goes beside the file."""
    return path.with_name(path.stem + ".tokenizer")


def _check_args(run_dir: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}; "
                        "use one of those with --format")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; give the --out folder of a "
                        "finished `tlkit fit`")


def _inputs(saved: Any) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """The graph's input names, and an example batch of two to export on (a batch of one would
    fix the batch size at 1 in the graph)."""
    prep = saved.preprocessing
    if prep.kind == "image":
        g = torch.Generator().manual_seed(0)
        return ["images"], (torch.randn(2, 3, prep.input_size, prep.input_size, generator=g),)

    collate: Any = build_collate(prep)
    encoded, _ = collate([(t, torch.tensor(0)) for t in _EXAMPLE_TEXTS])
    names = [k for k in TEXT_INPUTS if k in encoded]
    return names, tuple(encoded[k].to(torch.int64) for k in names)


def _wrap(model: nn.Module, kind: str) -> nn.Module:
    return (_ImageModel(model) if kind == "image" else _TextModel(model)).eval()


@contextlib.contextmanager
def _quiet() -> Any:
    # Exporters warn (tracer warnings, deprecations) and print progress; none of it is ours.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str],
                 path: Path) -> str:
    external = _onnx_external(module)  # else one file
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence")
    shapes = [{0: batch} if x.dim() == 4 else {0: batch, 1: seq} for x in example]
    try:
        with _quiet():
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=[OUTPUT], dynamic_shapes=shapes, dynamo=True,
                              external_data=external, verbose=False)
        return f"torch.onnx.export(dynamo=True), torch {torch.__version__}"
    except Exception as e:  # noqa: BLE001 - any exporter failure: try the legacy one
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    axes = {n: ({0: "batch"} if x.dim() == 4 else {0: "batch", 1: "sequence"})
            for n, x in zip(names, example, strict=True)}
    axes[OUTPUT] = {0: "batch"}
    try:
        with _quiet():
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=[OUTPUT], dynamic_axes=axes, dynamo=False,
                              opset_version=17)
    except Exception as e2:  # noqa: BLE001
        raise UserError(
            f"neither ONNX exporter could export this model (torch.export: {first}; "
            f"legacy: {(str(e2).strip().splitlines() or [''])[0][:200]}); try --format "
            "torchscript") from None
    return (f"torch.onnx.export(dynamo=False), torch {torch.__version__} (the dynamo exporter "
            f"failed: {first})")


def _export_torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> str:
    # torch.jit.trace, not torch.jit.script: scripting compiles the Python source, which the
    # timm and transformers models (dynamic kwargs, dataclass outputs, Python-side config) do
    # not support; tracing records the operations one forward runs, which is all inference
    # needs. Its limit, control flow that depends on the input's values, is why the example has
    # padding and why the export is checked against PyTorch on real data.
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))
    return f"torch.jit.trace, torch {torch.__version__}"


class _Runner:
    """Runs the exported file on a batch of the inputs the PyTorch model takes."""

    def __init__(self, fmt: str, path: Path, names: list[str]) -> None:
        self.fmt, self.names = fmt, names
        if fmt == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        else:
            with _quiet():  # torch 2.14 calls TorchScript deprecated; it still runs
                self.module = torch.jit.load(str(path), map_location="cpu").eval()

    def __call__(self, inputs: Any) -> np.ndarray:
        if isinstance(inputs, torch.Tensor):
            tensors = [inputs]
        else:
            tensors = [inputs[k].to(torch.int64) for k in self.names]
        if self.fmt == "onnx":
            feed = {n: t.numpy() for n, t in zip(self.names, tensors, strict=True)}
            return np.asarray(self.session.run([OUTPUT], feed)[0])
        with torch.no_grad():
            return self.module(*tensors).float().numpy()


def _check(saved: Any, runner: Callable[[Any], np.ndarray], data: Any, limit: int | None
           ) -> tuple[int, float]:
    ds: Any = build_dataset(data, saved.preprocessing)
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


def _description(saved: Any, fmt: str, path: Path, names: list[str], exporter: str
                 ) -> dict[str, Any]:
    prep = dict(saved.meta["preprocessing"])
    if prep.get("kind") == "text":
        tok = tokenizer_path(path)
        if tok.exists():
            # tlkit's own tokenizer folder of an earlier export (check_output proved it before
            # any work: a folder it did not write is refused then)
            check_output(tok, "export", nested=True)
            shutil.rmtree(tok)
        claim(tok, "export", what="tokenizer")  # marked before anything is copied into it
        shutil.copytree(Path(saved.preprocessing.tokenizer), tok, dirs_exist_ok=True)
        prep["tokenizer"] = tok.name  # relative to this file's folder
        inputs: list[dict[str, Any]] = [{"name": n, "dtype": "int64",
                                         "shape": ["batch", "sequence"]} for n in names]
    else:
        size = int(prep["input_size"])
        inputs = [{"name": "images", "dtype": "float32", "shape": ["batch", 3, size, size]}]
    n_out = int(saved.meta["head"]["num_outputs"])
    meaning = {"single_label": "logits; softmax gives the class probabilities",
               "multi_label": "logits; sigmoid gives each label's probability",
               "regression": "the predicted values"}.get(saved.task, "the model's outputs")
    return {
        "format": fmt, "file": path.name, "exporter": exporter, "made_by": "tlkit",
        "inputs": inputs,
        "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": ["batch", n_out],
                     "meaning": meaning}],
        "task": saved.task, "labels": saved.classes,
        "preprocessing": prep,
    }


def _export_folder(run_dir: Path, saved: Any, fmt: str, out: Path, spec: str, check_data: Any,
                   check_split: str | None) -> ExportResult:
    """An export the ecosystem's own loaders read (``tlkit.ecosystem``): a folder, checked
    against the run's model through those loaders."""
    import yaml

    from tlkit.ecosystem import export_folder

    if out.exists():
        # tlkit's own earlier export (check_output proved it before any work): replaced whole
        check_output(out, "export", nested=True)
        shutil.rmtree(out)
    raw = yaml.safe_load(RunDir(run_dir).config.read_text()) if RunDir(run_dir).config.is_file() \
        else {}
    claim(out, "export", format=fmt, run=str(run_dir))  # marked before the export writes
    try:
        with _quiet():
            runner = export_folder(saved, fmt, out, raw or {})
    except UserError:
        if out.exists() and not any(p.name != MARKER for p in out.iterdir()):
            shutil.rmtree(out)
        raise
    n, diff = _check(saved, runner, check_data, None if check_split else CHECK_BATCH)
    meta_path = description_path(out)
    meta_path.write_text(json.dumps({
        "format": fmt, "file": out.name, "exporter": f"tlkit.ecosystem ({fmt})",
        "made_by": "tlkit", "task": saved.task, "labels": saved.classes,
        "check": {"data": spec, "n": n, "max_abs_diff": diff, "tolerance": TOLERANCE}},
        indent=2) + "\n")
    if not diff <= TOLERANCE:
        raise UserError(f"the {fmt} export differs from PyTorch by up to {diff:.3g} on {n} "
                        f"examples of {spec} (tolerance {TOLERANCE:g}); the folder is {out}, "
                        "but do not trust it: try --format onnx")
    if RunDir(run_dir).summary.is_file() and out.resolve().is_relative_to(run_dir.resolve()):
        from tlkit.report.model_card import write_card

        write_card(run_dir)
    return ExportResult(out, meta_path, f"tlkit.ecosystem ({fmt})", spec, n, diff)


def _check_writable(out: Path) -> None:
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


def _onnx_external(module: nn.Module) -> bool:
    """ONNX's protobuf limit is 2 GB: a bigger model's weights go to a file beside it."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) > 1_800_000_000


def export_run(run_dir: Path, fmt: str = "onnx", out: Path | None = None,
               data: str | None = None, check_split: str | None = None,
               overwrite: bool = False) -> ExportResult:
    """Export the model of ``run_dir`` and check it against PyTorch.

    The check runs on the first ``CHECK_BATCH`` examples of ``data`` (a split name or a source,
    as ``tlkit predict --data`` takes it; default the validation split), or on every example
    of ``check_split``. Raises UserError if the outputs differ by more than ``TOLERANCE``.
    ``overwrite``: replace an existing file at ``out`` that tlkit cannot prove it exported.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else default_output(run_dir, fmt)
    _check_writable(out)
    _check_args(run_dir, fmt)
    check_outputs(run_dir, fmt, out, data, overwrite)  # before the model loads
    if fmt == "onnx":
        require(("onnx", "onnxscript", "onnxruntime"), "export", "ONNX export")
    if data is not None and check_split is not None:
        raise UserError("give --data or --check-split, not both")
    if check_split is not None and check_split not in ("train", "val", "test"):
        raise UserError(f"--check-split {check_split!r} is not one of train, val, test")
    run = RunDir(run_dir)
    saved = load_model(run.model)
    if saved.task == "token_classification":
        raise UserError("export does not take token-classification runs yet (their outputs are "
                        "per word, gathered at each word's first sub-word); use tlkit predict "
                        "or tlkit.load(RUN_DIR) on this run")
    saved.model.to("cpu").eval()
    spec = check_split or data or "val"
    check_data = data_for(run, spec, saved.classes)
    if check_data.modality != saved.preprocessing.kind:
        raise UserError(f"the model takes {saved.preprocessing.kind} but {spec} holds "
                        f"{check_data.modality}")

    if fmt in FOLDER_FORMATS:
        return _export_folder(run_dir, saved, fmt, out, spec, check_data, check_split)
    exported = copy.deepcopy(saved.model)
    if saved.meta.get("lora"):
        merge_lora(exported)  # plain layers: what a runtime without PEFT can run
    names, example = _inputs(saved)
    module = _wrap(exported, saved.preprocessing.kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name, renamed once checked and described: a file at ``out`` is
    # whole, and its description (with its checksum) proves it tlkit's to the next export. An
    # ONNX model over 2 GB keeps its weights in a file named after it: written in place.
    direct = fmt == "onnx" and _onnx_external(module)
    written = out if direct else out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        if fmt == "onnx":
            exporter = _export_onnx(module, example, names, written)
        else:
            exporter = _export_torchscript(module, example, written)
        n, diff = _check(saved, _Runner(fmt, written, names), check_data,
                         None if check_split else CHECK_BATCH)
        desc = _description(saved, fmt, out, names, exporter)
        desc["check"] = {"data": spec, "n": n, "max_abs_diff": diff, "tolerance": TOLERANCE}
        desc["sha256"] = sha256_of(written)
        desc["id"] = new_id()
        meta_path = description_path(out)
        meta_path.write_text(json.dumps(desc, indent=2, default=str) + "\n")
        if written != out:
            os.replace(written, out)
    finally:
        if written != out and written.exists():
            written.unlink()
    if not diff <= TOLERANCE:
        raise UserError(
            f"the exported model differs from PyTorch by up to {diff:.3g} on {n} examples of "
            f"{spec} (tolerance {TOLERANCE:g}); the file is {out}, but do not trust it: try "
            f"--format {'torchscript' if fmt == 'onnx' else 'onnx'}")
    if run.summary.is_file() and out.resolve().is_relative_to(run_dir.resolve()):
        from tlkit.report.model_card import write_card

        write_card(run_dir)  # the card lists the run's exports and how to load each
    return ExportResult(out, meta_path, exporter, spec, n, diff)
