"""``export_run``: the checks of ``tlkit export`` in order, before the model loads, then the export
as a file (ONNX, TorchScript) or a folder (hf, timm, peft), each checked against the run's
PyTorch model before it is trusted.

A file takes the *preprocessed* input, as ``tlkit predict`` feeds the model: images as a float
tensor (batch, 3, H, W), already resized and normalised; text as the tokenizer's ``input_ids``
and ``attention_mask`` (and ``token_type_ids`` where the tokenizer gives them), int64 (batch,
sequence). The batch axis (and the sequence axis for text) is dynamic. Beside the file,
``<file>.json`` names the inputs and the output, and carries the preprocessing, the labels and
the tokenizer (a folder beside it), so a consumer can run the model without tlkit.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlkit.backbones.lora import merge_lora
from tlkit.data import build_collate
from tlkit.errors import UserError, require
from tlkit.export.common import (CHECK_BATCH, FOLDER_FORMATS, OUTPUT, TEXT_INPUTS, TOLERANCE,
                                 ExportResult, Runner, check, check_args, check_outputs,
                                 check_writable, default_output, description_path, quiet,
                                 tokenizer_path, update_card)
from tlkit.export.hf import export_hf
from tlkit.export.onnx import export_onnx, needs_external_data, onnx_runner
from tlkit.export.peft import export_peft
from tlkit.export.quantize import compare, method_for, quantize, refuse_unless_quantizable
from tlkit.export.timm import export_timm
from tlkit.export.torchscript import export_torchscript, torchscript_runner
from tlkit.outputs import MARKER, check_output, claim, new_id, sha256_of
from tlkit.run.inference import data_for
from tlkit.rundir import RunDir
from tlkit.saved import load_model

# Two texts of different lengths: the example the graph is traced on has padding, so a branch
# that skips the attention mask when nothing is padded is never the one recorded.
_EXAMPLE_TEXTS = ("a short one", "a longer example sentence, so that the other one is padded")
# The exporter a folder's description names: the package that writes it, and the format.
_FOLDER_EXPORTER = "tlkit.export ({})"


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
               "regression": "the predicted values",
               "question_answering": "each token's start and end logits (the answer is the "
                                     "best span of context tokens)",
               }.get(saved.task, "the model's outputs")
    shape: list[Any] = (["batch", "sequence", n_out] if saved.task == "question_answering"
                        else ["batch", n_out])
    return {
        "format": fmt, "file": path.name, "exporter": exporter, "made_by": "tlkit",
        "inputs": inputs,
        "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": shape,
                     "meaning": meaning}],
        "task": saved.task, "labels": saved.classes,
        "preprocessing": prep,
    }


def _export_file(run_dir: Path, saved: Any, fmt: str, out: Path, spec: str, check_data: Any,
                 check_split: str | None, int8: bool = False) -> ExportResult:
    """ONNX or TorchScript: one file and its description, checked against the run's model
    (``int8``: the ONNX file quantized, checked by its predictions: tlkit.export.quantize)."""
    exported = copy.deepcopy(saved.model)
    if saved.meta.get("lora"):
        merge_lora(exported)  # plain layers: what a runtime without PEFT can run
    names, example = _inputs(saved)
    module = _wrap(exported, saved.preprocessing.kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name, renamed once checked and described: a file at ``out`` is
    # whole, and its description (with its checksum) proves it tlkit's to the next export. An
    # ONNX model over 2 GB keeps its weights in a file named after it: written in place.
    direct = fmt == "onnx" and needs_external_data(module)
    written = out if direct else out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        quantized = None
        if fmt == "onnx":
            exporter = export_onnx(module, example, names, written)
            if int8:
                fp32 = written.with_name(written.name + ".fp32")
                os.replace(written, fp32)
                try:
                    kind = saved.preprocessing.kind
                    exporter += "; " + quantize(fp32, written, kind, saved,
                                                data_for(RunDir(run_dir), "val", saved.classes),
                                                names)
                finally:
                    fp32.unlink(missing_ok=True)
            runner = onnx_runner(written, names)
        else:
            exporter = export_torchscript(module, example, written)
            runner = torchscript_runner(written, names)
        if int8:
            quantized = compare(saved, runner, check_data, spec,
                                method_for(saved.preprocessing.kind))
            n, diff = quantized.n, float("nan")
        else:
            n, diff = check(saved, runner, check_data, None if check_split else CHECK_BATCH)
        desc = _description(saved, fmt, out, names, exporter)
        desc["check"] = ({"data": spec, "n": n, "int8": quantized.to_dict()} if quantized
                         else {"data": spec, "n": n, "max_abs_diff": diff,
                               "tolerance": TOLERANCE})
        desc["sha256"] = sha256_of(written)
        desc["id"] = new_id()
        meta_path = description_path(out)
        meta_path.write_text(json.dumps(desc, indent=2, default=str) + "\n")
        if written != out:
            os.replace(written, out)
    finally:
        if written != out and written.exists():
            written.unlink()
    if quantized is not None:
        why = quantized.failure()
        if why is not None:
            raise UserError(f"the int8 file {out} is not faithful to the model: {why} "
                            f"({quantized.line()}); do not trust it: export without --quantize")
    elif not diff <= TOLERANCE:
        raise UserError(
            f"the exported model differs from PyTorch by up to {diff:.3g} on {n} examples of "
            f"{spec} (tolerance {TOLERANCE:g}); the file is {out}, but do not trust it: try "
            f"--format {'torchscript' if fmt == 'onnx' else 'onnx'}")
    update_card(run_dir, out)  # the card lists the run's exports and how to load each
    return ExportResult(out, meta_path, exporter, spec, n, diff, quantized)


def _write_folder(saved: Any, fmt: str, out: Path, run_config: dict[str, Any]) -> Runner:
    if fmt == "hf":
        return export_hf(saved, out)
    if fmt == "timm":
        return export_timm(saved, out)
    return export_peft(saved, out, run_config)


def _export_folder(run_dir: Path, saved: Any, fmt: str, out: Path, spec: str, check_data: Any,
                   check_split: str | None) -> ExportResult:
    """hf, timm or peft: a folder the library's own loader reads, checked against the run's
    model through that loader."""
    import yaml

    if out.exists():
        # tlkit's own earlier export (check_output proved it before any work): replaced whole
        check_output(out, "export", nested=True)
        shutil.rmtree(out)
    raw = yaml.safe_load(RunDir(run_dir).config.read_text()) if RunDir(run_dir).config.is_file() \
        else {}
    claim(out, "export", format=fmt, run=str(run_dir))  # marked before the export writes
    try:
        with quiet():
            runner = _write_folder(saved, fmt, out, raw or {})
    except UserError:
        if out.exists() and not any(p.name != MARKER for p in out.iterdir()):
            shutil.rmtree(out)
        raise
    n, diff = check(saved, runner, check_data, None if check_split else CHECK_BATCH)
    exporter = _FOLDER_EXPORTER.format(fmt)
    meta_path = description_path(out)
    meta_path.write_text(json.dumps({
        "format": fmt, "file": out.name, "exporter": exporter,
        "made_by": "tlkit", "task": saved.task, "labels": saved.classes,
        "check": {"data": spec, "n": n, "max_abs_diff": diff, "tolerance": TOLERANCE}},
        indent=2) + "\n")
    if not diff <= TOLERANCE:
        raise UserError(f"the {fmt} export differs from PyTorch by up to {diff:.3g} on {n} "
                        f"examples of {spec} (tolerance {TOLERANCE:g}); the folder is {out}, "
                        "but do not trust it: try --format onnx")
    update_card(run_dir, out)
    return ExportResult(out, meta_path, exporter, spec, n, diff)


def export_run(run_dir: Path, fmt: str = "onnx", out: Path | None = None,
               data: str | None = None, check_split: str | None = None,
               overwrite: bool = False, quantize: str | None = None) -> ExportResult:
    """Export the model of ``run_dir`` and check it against PyTorch.

    The check runs on the first ``CHECK_BATCH`` examples of ``data`` (a split name or a source,
    as ``tlkit predict --data`` takes it; default the validation split), or on every example
    of ``check_split``. Raises UserError if the outputs differ by more than ``TOLERANCE``.
    ``overwrite``: replace an existing file at ``out`` that tlkit cannot prove it exported.
    ``quantize="int8"`` (ONNX only): the file quantized by ONNX Runtime and checked by its
    predictions on the test split (or ``data`` / ``check_split``), tlkit.export.quantize.
    """
    run_dir = Path(run_dir)
    if quantize is not None and quantize != "int8":
        raise UserError(f"--quantize {quantize!r} is not supported; use --quantize int8")
    if quantize is not None and fmt != "onnx":
        raise UserError(f"--quantize int8 quantizes an ONNX file (ONNX Runtime); use --format "
                        f"onnx, not {fmt}")
    out = Path(out) if out is not None else default_output(run_dir, fmt, quantize)
    check_writable(out)
    check_args(run_dir, fmt)
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
    if quantize is not None:
        refuse_unless_quantizable(saved)
    saved.model.to("cpu").eval()
    spec = check_split or data or ("test" if quantize else "val")
    check_data = data_for(run, spec, saved.classes)
    if check_data.modality != saved.preprocessing.kind:
        raise UserError(f"the model takes {saved.preprocessing.kind} but {spec} holds "
                        f"{check_data.modality}")
    if fmt in FOLDER_FORMATS:
        return _export_folder(run_dir, saved, fmt, out, spec, check_data, check_split)
    return _export_file(run_dir, saved, fmt, out, spec, check_data, check_split,
                        int8=quantize is not None)
