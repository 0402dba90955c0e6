"""Export of a finished run to ONNX and TorchScript (checked against PyTorch), and TensorBoard
event files from `tlkit fit --tensorboard`, on tiny models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tlkit.cli import main

IMAGE_CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: top_n_unfrozen
  top_n: 2
  head_lr: 1e-2
  backbone_lr: 3e-3
  warmup_steps: 0
  epochs: 2
  batch_size: 16
  early_stopping_patience: null
  device: cpu
data:
  source: digits
  image_size: 32
  limit: 120
"""

DIFF = re.compile(r"max abs difference from PyTorch: (\S+) on (\d+) examples of (\w+)")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm run, trained through the CLI with --tensorboard."""
    tmp = tmp_path_factory.mktemp("image")
    (tmp / "tiny.yaml").write_text(IMAGE_CFG)
    run = tmp / "run"
    assert main(["fit", str(tmp / "tiny.yaml"), "--out", str(run), "--tensorboard"]) == 0
    return run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """A tiny BERT run with LoRA adapters (export merges them), on texts of varied length."""
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    good, bad = ["great", "fine", "lovely", "superb"], ["awful", "dull", "poor", "bad"]
    filler = ["the", "film", "was", "a", "plot", "story", "really", "quite", "long", "and"]
    rows = ["text,label"]
    for i in range(80):
        words = list(rng.choice(filler, int(rng.integers(1, 12))))
        words.append(str(rng.choice(good if i % 2 else bad)))
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{'pos' if i % 2 else 'neg'}")
    csv = tmp / "texts.csv"
    csv.write_text("\n".join(rows) + "\n")
    raw = {"transfer_config": {"source_model": f"hf:{tiny_bert_dir}",
                               "pretrained_weights": "packaged", "freeze_strategy": "lora",
                               "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                               "lr_decay_per_layer": 1.0, "epochs": 1, "batch_size": 16,
                               "head_lr": 1e-2, "backbone_lr": 3e-3, "warmup_steps": 0,
                               "early_stopping_patience": None, "device": "cpu"},
           "data": {"source": str(csv), "max_length": 32}}
    run = tmp / "run"
    fit_run(validate(raw), run)
    # LoRA B starts at zero; one short epoch leaves it small. Give it weight, as longer training
    # would, so that a merge that went wrong would show in the outputs.
    from safetensors.torch import load_file, save_file

    weights_path = run / "model" / "model.safetensors"
    weights = load_file(str(weights_path))
    g = torch.Generator().manual_seed(0)
    for k, v in weights.items():
        if ".lora_B." in k:
            weights[k] = torch.randn(v.shape, generator=g) * 0.05
    save_file(weights, str(weights_path))
    return run


def _assert_agrees(out: str, n: int | None = None, data: str = "val") -> float:
    m = DIFF.search(out)
    assert m, out
    diff, count, where = float(m.group(1)), int(m.group(2)), m.group(3)
    assert diff <= 1e-4 and where == data
    if n is not None:
        assert count == n
    return diff


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.slow
def test_image_run_exports_and_agrees_with_pytorch(image_run, capsys, fmt):
    code, out, err = cli(capsys, "export", str(image_run), "--format", fmt)
    assert code == 0, err
    _assert_agrees(out)
    path = image_run / "export" / ("model.onnx" if fmt == "onnx" else "model.pt")
    assert path.is_file()
    desc = json.loads(path.with_name(path.name + ".json").read_text())
    assert desc["inputs"] == [{"name": "images", "dtype": "float32",
                               "shape": ["batch", 3, 32, 32]}]
    assert desc["labels"] == [str(i) for i in range(10)]
    assert desc["preprocessing"]["mean"] and desc["check"]["max_abs_diff"] <= 1e-4

    # a consumer with only the file: a batch size the export never saw
    from tlkit.saved import load_model

    model = load_model(image_run / "model").model
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        got = ort.InferenceSession(str(path)).run(["outputs"], {"images": x.numpy()})[0]
    else:
        got = torch.jit.load(str(path))(x).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.slow
def test_text_lora_run_exports_and_agrees_with_pytorch(text_run, tmp_path, capsys, fmt):
    out_file = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    code, out, err = cli(capsys, "export", str(text_run), "--format", fmt, "--out",
                         str(out_file), "--check-split", "test")
    assert code == 0, err
    from tlkit.run import test_predictions

    _assert_agrees(out, n=len(test_predictions(text_run)[1]), data="test")  # the whole split
    desc = json.loads((tmp_path / f"{out_file.name}.json").read_text())
    names = [i["name"] for i in desc["inputs"]]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    assert desc["labels"] == ["neg", "pos"]
    # the tokenizer travels with the file: a consumer tokenizes, runs, and gets PyTorch's answer
    from transformers import AutoTokenizer

    from tlkit.saved import load_model

    tok = AutoTokenizer.from_pretrained(str(tmp_path / desc["preprocessing"]["tokenizer"]))
    enc = tok(["great", "the plot was really quite long and dull", "a film"], padding=True,
              return_tensors="pt")
    model = load_model(text_run / "model").model
    with torch.no_grad():
        expected = model(dict(enc)).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        got = ort.InferenceSession(str(out_file)).run(
            ["outputs"], {n: enc[n].numpy() for n in names})[0]
    else:
        got = torch.jit.load(str(out_file))(*[enc[n] for n in names]).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_export_of_a_missing_run_is_a_user_error(tmp_path, capsys):
    code, out, err = cli(capsys, "export", str(tmp_path / "nope"), "--format", "onnx")
    assert code == 2
    assert "does not exist" in err and "Traceback" not in err


@pytest.mark.slow
def test_tensorboard_events_hold_one_value_per_epoch(image_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = image_run / "tensorboard"
    assert any(f.name.startswith("events.out.tfevents") for f in folder.iterdir())
    acc = EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    rows = [json.loads(line) for line in (image_run / "metrics.jsonl").read_text().splitlines()]
    groups = set(rows[0]["lr"])
    assert {"head"} <= groups
    expected = {"epoch/train_loss", "epoch/val_loss", "epoch/val_accuracy", "epoch/phase",
                "step/train_loss"} | {f"lr/{g}" for g in groups}
    assert expected <= tags, expected - tags
    for tag in expected - {"step/train_loss"}:
        assert [e.step for e in acc.Scalars(tag)] == [0, 1], tag
    assert [e.value for e in acc.Scalars("epoch/val_loss")] == pytest.approx(
        [r["val_loss"] for r in rows], rel=1e-6)
    # per optimizer step: every batch of 16 training images, two epochs, each epoch as many
    # passes over the images as make at least min_steps (100) steps in all
    steps = acc.Scalars("step/train_loss")
    n_train = json.loads((image_run / "summary.json").read_text())["data"]["sizes"]["train"]
    per_pass = -(-n_train // 16)
    passes = -(-100 // (2 * per_pass))
    assert [e.step for e in steps] == list(range(1, 2 * per_pass * passes + 1))


@pytest.mark.slow
def test_export_never_deletes_a_tokenizer_folder_it_did_not_write(text_run, tmp_path, capsys):
    mine = tmp_path / "m.tokenizer"  # the user's folder, where the export puts the tokenizer
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, out, err = cli(capsys, "export", str(text_run), "--format", "torchscript", "--out",
                         str(tmp_path / "m.pt"))
    assert code == 2 and "not a tokenizer folder tlkit exported" in err
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "m.pt").exists()
    # its own tokenizer folder, from an earlier export, is replaced
    code, out, err = cli(capsys, "export", str(text_run), "--format", "torchscript", "--out",
                         str(tmp_path / "own.pt"))
    assert code == 0, err
    code, out, err = cli(capsys, "export", str(text_run), "--format", "torchscript", "--out",
                         str(tmp_path / "own.pt"))
    assert code == 0, err


# ------------------------------------------------------------------ exports the ecosystem loads


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _tlkit_probabilities(run: Path, texts: list[str]) -> np.ndarray:
    from tlkit.run import predict_run

    rows = predict_run(run, texts, calibrated=False)
    return np.array([list(r["probabilities"].values()) for r in rows])


def hf_export_probabilities(folder: Path, texts: list[str]) -> tuple[np.ndarray, Any]:
    """The probabilities of an exported hf folder loaded as a user would
    (``AutoModelForSequenceClassification``, ``trust_remote_code``), and the model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder),
                                                               trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits
    return _softmax(logits.numpy()), model


@pytest.mark.slow
def test_hf_export_loads_in_transformers_and_agrees(text_run, capsys):
    code, out, err = cli(capsys, "export", str(text_run), "--format", "hf")
    assert code == 0, err
    _assert_agrees(out)
    texts = ["the film was great", "a dull and long plot, really quite awful", "fine"]
    got, model = hf_export_probabilities(text_run / "export" / "hf", texts)
    assert np.abs(got - _tlkit_probabilities(text_run, texts)).max() <= 1e-4
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert "trust_remote_code=True" in (text_run / "README.md").read_text()


@pytest.mark.slow
def test_peft_export_is_an_adapter_that_peft_applies_to_the_base(text_run, tiny_bert_dir,
                                                                  capsys):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    code, out, err = cli(capsys, "export", str(text_run), "--format", "peft")
    assert code == 0, err
    _assert_agrees(out)
    folder = text_run / "export" / "peft"
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_bert_dir)
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny_bert_dir)),
                                      str(folder)).eval()
    head = load_file(str(folder / "tlkit_head.safetensors"))
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    texts = ["the film was great", "a dull and long plot, really quite awful"]
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1)
        logits = pooled @ head["1.weight"].T + head["1.bias"]
    assert np.abs(_softmax(logits.numpy()) - _tlkit_probabilities(text_run, texts)).max() <= 1e-4


@pytest.mark.slow
def test_timm_export_loads_with_timm_and_agrees(image_run, capsys):
    import timm

    code, out, err = cli(capsys, "export", str(image_run), "--format", "timm")
    assert code == 0, err
    _assert_agrees(out)
    folder = image_run / "export" / "timm"
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == [str(i) for i in range(10)]
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    from tlkit.data import build_dataset
    from tlkit.run.inference import data_for
    from tlkit.rundir import RunDir
    from tlkit.saved import load_model

    saved = load_model(image_run / "model")
    ds = build_dataset(data_for(RunDir(image_run), "val", saved.classes), saved.preprocessing)
    batch = torch.stack([ds[i][0] for i in range(8)])
    with torch.no_grad():
        expected = _softmax(saved.model(batch).numpy())
        got = _softmax(model(batch).numpy())
    assert np.abs(got - expected).max() <= 1e-4


def test_hf_export_of_an_image_run_is_refused(image_run, capsys):
    code, _, err = cli(capsys, "export", str(image_run), "--format", "hf")
    assert code == 2 and "text runs on a transformers backbone" in err
    assert not (image_run / "export" / "hf").exists()


@pytest.mark.slow
@pytest.mark.packaged
def test_peft_export_of_a_minilm_lora_run_is_under_5_percent_of_the_model(tmp_path, capsys):
    from tlkit.config import validate
    from tlkit.run import fit_run

    raw = {"transfer_config": {"source_model": "minilm-l6", "freeze_strategy": "lora",
                               "lora": {"r": 8, "alpha": 16}, "epochs": 1, "min_steps": 0,
                               "batch_size": 32, "early_stopping_patience": None},
           "data": {"source": "rotten_tomatoes", "limit": 120, "max_length": 32}}
    run = tmp_path / "run"
    fit_run(validate(raw), run)
    code, out, err = cli(capsys, "export", str(run), "--format", "peft")
    assert code == 0, err
    _assert_agrees(out)
    adapter = sum(f.stat().st_size for f in (run / "export" / "peft").iterdir())
    full = (run / "model" / "model.safetensors").stat().st_size
    assert adapter < 0.05 * full, (adapter, full)
