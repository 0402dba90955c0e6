"""ONNX: the run's model as one ``.onnx`` file, run in onnxruntime for the check.

``torch.onnx.export(dynamo=True)``, the torch.export-based exporter, writes it: it is torch's
default and maintained one (the TorchScript-based ``dynamo=False`` exporter is deprecated and due
for removal), and it exports both the timm CNNs and the BERT-like encoders here with symbolic
batch and sequence dimensions. Should it fail on some model, the legacy exporter is tried, and
the description says which one wrote the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.errors import UserError
from tlkit.export.common import OUTPUT, Runner, graph_inputs, quiet


def needs_external_data(module: nn.Module) -> bool:
    """ONNX's protobuf limit is 2 GB: a bigger model's weights go to a file beside it."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) > 1_800_000_000


def export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str],
                path: Path) -> str:
    """Write ``module`` traced on ``example`` to ``path``; which exporter wrote it."""
    big = needs_external_data(module)  # else one file
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence")
    shapes = [{0: batch} if x.dim() == 4 else {0: batch, 1: seq} for x in example]
    try:
        with quiet():
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=[OUTPUT], dynamic_shapes=shapes, dynamo=True,
                              external_data=big, verbose=False)
        return f"torch.onnx.export(dynamo=True), torch {torch.__version__}"
    except Exception as e:  # noqa: BLE001 - any exporter failure: try the legacy one
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    axes = {n: ({0: "batch"} if x.dim() == 4 else {0: "batch", 1: "sequence"})
            for n, x in zip(names, example, strict=True)}
    axes[OUTPUT] = {0: "batch"}
    try:
        with quiet():
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


def onnx_runner(path: Path, names: list[str]) -> Runner:
    """The file at ``path`` in an onnxruntime CPU session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(inputs: Any) -> np.ndarray:
        feed = {n: t.numpy() for n, t in zip(names, graph_inputs(inputs, names), strict=True)}
        return np.asarray(session.run([OUTPUT], feed)[0])

    return run
