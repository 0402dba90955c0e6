"""int8: the run's ONNX export quantized by ONNX Runtime, and checked on the test split.

Text models are quantized *dynamically* (weights int8 per output channel ahead of time, each
activation's scale computed as it runs): a transformer's cost is its Linear layers' matrix products, whose
activations vary too much from input to input for one calibrated scale, and ONNX Runtime's
MatMulInteger kernels speed them up on CPUs. Image models are quantized *statically* (QDQ
format, per-channel int8 weights, activation scales calibrated on the run's validation split):
a convolution's dynamic quantization is slow in ONNX Runtime and loses more accuracy, while
static scales let the convolutions run in int8 end to end (ONNX Runtime's own advice).

A quantized model is not the same function as the float one, so the check is not the float
export's tolerance on the outputs: it is how the predictions change on the run's test split
(every example up to ``CHECK_LIMIT``): the accuracy of the PyTorch model and of the int8 file,
and how often their predicted classes agree (for multi-label runs each label's decision at 0.5).
Both go in the file's description and are printed. An agreement under ``MIN_AGREEMENT`` or an
accuracy loss over ``MAX_DROP`` points fails the export (exit 2): the file is kept under its
name, with the figures, but the message says not to trust it.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.data import build_collate, build_dataset
from tlkit.errors import UserError
from tlkit.export.common import CHECK_BATCH, Runner, graph_inputs
from tlkit.train.batches import batches_of

MIN_AGREEMENT = 0.95  # the int8 file's predictions agreeing with PyTorch's, at least
MAX_DROP = 1.0  # points of accuracy the int8 file may lose against PyTorch's
CHECK_LIMIT = 2000  # test examples the check runs on, at most
CALIBRATION = 256  # validation examples whose activations calibrate a static quantization
TASKS = ("single_label", "multi_label")


@dataclass
class Quantized:
    """How the int8 file's predictions compare with the PyTorch model's on ``data``."""

    method: str  # dynamic / static
    data: str
    n: int
    accuracy_fp32: float
    accuracy_int8: float
    agreement: float

    @property
    def drop_points(self) -> float:
        return 100 * (self.accuracy_fp32 - self.accuracy_int8)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_points": round(self.drop_points, 3),
                "min_agreement": MIN_AGREEMENT, "max_drop_points": MAX_DROP}

    def line(self) -> str:
        return (f"int8 ({self.method}) on {self.n} examples of {self.data}: accuracy "
                f"{self.accuracy_int8:.4f} against PyTorch's {self.accuracy_fp32:.4f} "
                f"({-self.drop_points:+.2f} points); predictions agree on "
                f"{100 * self.agreement:.1f}%")

    def failure(self) -> str | None:
        if self.agreement < MIN_AGREEMENT:
            return (f"its predictions agree with PyTorch's on {100 * self.agreement:.1f}% of "
                    f"the examples (at least {100 * MIN_AGREEMENT:g}% expected)")
        if self.drop_points > MAX_DROP:
            return (f"it loses {self.drop_points:.2f} points of accuracy (at most {MAX_DROP:g} "
                    "expected)")
        return None


def refuse_unless_quantizable(saved: Any) -> None:
    """int8 is checked by the predicted classes: runs that predict classes only."""
    if saved.task not in TASKS:
        raise UserError(f"--quantize int8 checks the export by its predicted classes; this run's "
                        f"task is {saved.task}. Export it without --quantize (fp32)")


def method_for(kind: str) -> str:
    return "dynamic" if kind == "text" else "static"


def _calibration_reader(saved: Any, data: Any, names: list[str]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    ds: Any = build_dataset(data, saved.preprocessing)
    collate: Any = build_collate(saved.preprocessing)
    n = min(CALIBRATION, len(ds))
    if n == 0:
        raise UserError(f"static int8 quantization calibrates on the validation split, and "
                        f"{data.name} has no examples; export without --quantize")
    batches = [collate([ds[i] for i in idx])[0] for idx in batches_of(range(n), 32)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.left, None)
            if batch is None:
                return None
            return {k: t.numpy() for k, t in zip(names, graph_inputs(batch, names),
                                                 strict=True)}

    return Reader()


def quantize(fp32: Path, out: Path, kind: str, saved: Any, calibration: Any,
             names: list[str]) -> str:
    """``fp32`` (an ONNX file) quantized to int8 at ``out``; the method's description."""
    from onnxruntime.quantization import (QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)

    with tempfile.TemporaryDirectory(prefix="tlkit-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference and graph clean-up, as ONNX Runtime advises before quantizing;
        # not its symbolic shape inference, which fails on the exported encoders and then
        # writes its partial model into the working directory
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - the optional step failed: quantize the file as is
            prepared = fp32
        if kind == "text":
            # per-channel weight scales: with one scale per matrix the quickstart's MiniLM
            # lost 1.5 points (93.7% agreement), per channel 0.55 (97.9%), at the same speed.
            # MatMul only: the embedding lookups (Gather) do no arithmetic, so int8 tables
            # save memory, not time (239 against 241 examples/s at batch 64), and add their
            # rounding to every token (quickstart: 0.31 points lost against 0.78; bench/README)
            fused = _fused(prepared, Path(tmp) / "fused.onnx", saved)
            quantize_dynamic(str(fused or prepared), str(out), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"])
            return ("onnxruntime quantize_dynamic (MatMul: per-channel int8 weights, dynamic "
                    "activations; embeddings fp32" + ("; after ONNX Runtime's transformer "
                                                      "fusions)" if fused else ")"))
        quantize_static(str(prepared), str(out), _calibration_reader(saved, calibration, names),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return (f"onnxruntime quantize_static (QDQ, per-channel int8 weights, activations calibrated "
            f"on {min(CALIBRATION, len(calibration))} validation examples)")


def _fused(model: Path, out: Path, saved: Any) -> Path | None:
    """``model`` with ONNX Runtime's transformer fusions (bias + GELU, residual + LayerNorm:
    ``onnxruntime.transformers.optimizer`` at its graph level 1), written to ``out``; None
    where they do not apply. Quickstart, int8 afterwards: 266 examples/s at batch 64 against
    224 without (bench/README, serve.py)."""
    config = getattr(getattr(saved.model.backbone, "model", None), "config", None)
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        fused = optimize_model(str(model), model_type="bert",
                               num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                               hidden_size=int(getattr(config, "hidden_size", 0) or 0),
                               opt_level=1)
        fused.save_model_to_file(str(out))
    except Exception:  # noqa: BLE001 - an architecture the fusions do not know: quantize as is
        return None
    return out


def _predicted(logits: np.ndarray, task: str) -> np.ndarray:
    return logits > 0 if task == "multi_label" else logits.argmax(axis=1)


def _correct(pred: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    return (pred == (y > 0.5)).all(axis=1) if task == "multi_label" else pred == y


def compare(saved: Any, runner: Runner, data: Any, spec: str, method: str) -> Quantized:
    """The PyTorch model and the int8 file (``runner``) on ``data``'s first CHECK_LIMIT
    examples: their accuracies and how often their predictions agree."""
    ds: Any = build_dataset(data, saved.preprocessing)
    collate: Any = build_collate(saved.preprocessing)
    n = min(CHECK_LIMIT, len(ds))
    if n == 0:
        raise UserError(f"the int8 check runs on {spec}, which has no examples; give another "
                        "with --data or --check-split")
    agree = right_fp32 = right_int8 = 0.0
    with torch.no_grad():
        for idx in batches_of(range(n), CHECK_BATCH):
            inputs, y = collate([ds[i] for i in idx])
            fp32 = _predicted(saved.model(inputs).float().numpy(), saved.task)
            int8 = _predicted(runner(inputs), saved.task)
            truth = y.numpy()
            agree += float((fp32 == int8).all(axis=1).sum() if saved.task == "multi_label"
                           else (fp32 == int8).sum())
            right_fp32 += float(_correct(fp32, truth, saved.task).sum())
            right_int8 += float(_correct(int8, truth, saved.task).sum())
    return Quantized(method, spec, n, right_fp32 / n, right_int8 / n, agree / n)
