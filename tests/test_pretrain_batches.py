"""tlkit pretrain's batches: a last batch too small for the objective (one image under SimCLR,
whose BatchNorm cannot train on it and whose loss has no negatives; one text under SimCSE) joins
the batch before and the log and pretrain.json say so; too few examples, or a batch_size under
the objective's smallest, is exit 2 before the model loads, and a rerun of the same command,
with or without --resume, is not blocked by what the failure left; a masked-LM batch of one
short text, where the collator often masks nothing (a NaN loss), always has a masked token."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tlkit.adapt.pretrain_loop import batch_bounds
from tlkit.cli import main


def test_a_last_batch_under_the_smallest_joins_the_one_before() -> None:
    assert batch_bounds(9, 8, 2) == [(0, 9)]
    assert batch_bounds(17, 8, 2) == [(0, 8), (8, 17)]
    assert batch_bounds(16, 8, 2) == [(0, 8), (8, 16)]
    assert batch_bounds(9, 8, 1) == [(0, 8), (8, 9)]  # masked-LM, TSDAE: one text is a batch
    assert batch_bounds(1, 8, 2) == [(0, 1)]  # too few at all: refused before (below)
    assert batch_bounds(0, 8, 2) == []


def _image(tmp: Path, **pretrain: object) -> Path:
    raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                               "pretrained_weights": "none", "device": "cpu"},
           "data": {"source": "digits", "image_size": 32},
           "adaptation": {"target": {"source": "digits", "image_size": 32},
                          "pretrain": {"epochs": 1, "batch_size": 8, "lr": 1e-3,
                                       "top_groups": 1, "patience": None, **pretrain}}}
    path = tmp / "image.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _text(tmp: Path, bert: Path, texts: list[str], **pretrain: object) -> Path:
    (tmp / "texts.csv").write_text("text\n" + "".join(f"{t}\n" for t in texts))
    raw = {"transfer_config": {"source_model": f"hf:{bert}", "pretrained_weights": str(bert),
                               "device": "cpu"},
           "data": {"source": "rotten_tomatoes", "max_length": 16},
           "adaptation": {"target": {"source": str(tmp / "texts.csv"), "text_column": "text"},
                          "pretrain": {"epochs": 1, "batch_size": 8, "lr": 1e-3,
                                       "patience": None, **pretrain}}}
    path = tmp / "text.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def pretrain(capsys: pytest.CaptureFixture[str], cfg: Path, out: Path, *extra: str
             ) -> tuple[int, str]:
    code = main(["pretrain", str(cfg), "--out", str(out), *extra])
    return code, capsys.readouterr().err


def test_nine_images_at_batch_8_train_as_one_batch_of_nine_and_say_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = pretrain(capsys, _image(tmp_path, max_examples=9), tmp_path / "out")
    assert code == 0, err
    assert "leave a last batch of 1, too few for simclr; it joins the batch before" in err
    rec = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert rec["examples"] == 9 and rec["batches_per_epoch"] == 1 and rec["steps"] == 1
    assert rec["last_batch_merged"] is True
    assert all(math.isfinite(x) for x in rec["loss_per_epoch"])


def test_a_held_out_share_of_one_image_trains_rather_than_score_a_lone_image(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 20 images, 5% held out: one image, whose contrastive loss would be 0 every epoch
    code, err = pretrain(capsys, _image(tmp_path, max_examples=20, batch_size=16),
                         tmp_path / "out")
    assert code == 0, err
    assert "held-out share is 1 image, too few for simclr's loss" in err
    rec = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert rec["examples"] == 20 and rec["held_out"] == 0
    assert rec["last_batch_merged"] is False and rec["batches_per_epoch"] == 2


@pytest.mark.parametrize("resume", [False, True])
def test_one_image_is_exit_2_before_the_model_loads_and_a_rerun_is_not_blocked(
        resume: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.adapt.pretrain as pre

    def no_model(*a: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pre, "_objective", no_model)
    cfg, out = _image(tmp_path, max_examples=1), tmp_path / "out"
    for extra in ((), ("--resume",) if resume else ()):  # the same command twice
        code, err = pretrain(capsys, cfg, out, *extra)
        assert code == 2 and "Traceback" not in err, err
        assert "gives 1 image(s) to pretrain on, but simclr contrasts each image" in err
        assert "at least 2" in err
    assert not (out / "checkpoints").exists() and not (out / "pretrain.json").exists()


@pytest.mark.parametrize("kind", ["image", "simcse"])
def test_a_batch_size_of_one_under_a_contrastive_objective_is_exit_2(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        tiny_bert_dir: Path) -> None:
    cfg = (_image(tmp_path, max_examples=9, batch_size=1) if kind == "image"
           else _text(tmp_path, tiny_bert_dir, ["a good film", "a bad film"], batch_size=1,
                      objective="simcse"))
    code, err = pretrain(capsys, cfg, tmp_path / "out")
    assert code == 2 and "adaptation.pretrain.batch_size is 1" in err, err
    assert "set it to 2 or more" in err


def test_one_text_under_simcse_is_exit_2_naming_the_cause(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path) -> None:
    code, err = pretrain(capsys, _text(tmp_path, tiny_bert_dir, ["a good film"]),
                         tmp_path / "out")
    assert code == 2, err
    assert "gives 1 text(s) to pretrain on, but simcse contrasts each text" in err


def test_nine_texts_at_batch_8_under_simcse_train_as_one_batch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path) -> None:
    texts = [f"film number {i} was {w}" for i, w in enumerate(["good", "bad", "dull"] * 3)]
    code, err = pretrain(capsys, _text(tmp_path, tiny_bert_dir, texts), tmp_path / "out")
    assert code == 0, err
    rec = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert rec["objective"] == "simcse" and rec["batches_per_epoch"] == 1
    assert rec["last_batch_merged"] is True and "joins the batch before" in err


def test_masked_lm_on_one_short_text_always_masks_a_token_and_stays_finite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_bert_dir: Path) -> None:
    from safetensors.torch import load_file

    cfg = _text(tmp_path, tiny_bert_dir, ["a good film"], objective="mlm", epochs=8)
    code, err = pretrain(capsys, cfg, tmp_path / "out")
    assert code == 0, err
    rec = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert rec["steps"] == 8 and rec["last_batch_merged"] is False
    assert all(math.isfinite(x) for x in rec["loss_per_epoch"]), rec["loss_per_epoch"]
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(bool(w.isfinite().all()) for w in weights.values() if w.is_floating_point())
