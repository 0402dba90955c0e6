"""The pixels model (``source_model: pixels``): raw 16 x 16 pixels and the convex head, served
like any other run; and ``freeze_strategy: auto`` picking it where the pixels beat the
pretrained (here: random) features under the same convex head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from test_classical import template_images
from tlkit.backbones import load_backbone
from tlkit.backbones.registry import backbone_from_spec, list_backbones


def test_the_pixels_backbone_is_the_resized_image_flattened():
    bb = load_backbone("pixels", "packaged")
    assert bb.kind == "image" and bb.feature_dim == 3 * 16 * 16
    assert sum(p.numel() for p in bb.parameters()) == 0
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(bb(x), x.flatten(1))
    # a larger input (data.image_size set for another backbone) is brought down to 16 x 16
    assert bb(torch.rand(2, 3, 64, 64)).shape == (2, 768)
    again = backbone_from_spec(bb.spec, bb.preprocessing.to_dict())
    assert again.feature_dim == bb.feature_dim
    assert any(r["name"] == "pixels" and r["offline"] for r in list_backbones())


CFG = """\
transfer_config:
  source_model: {model}
  pretrained_weights: {weights}
  freeze_strategy: {strategy}
  epochs: 2
  batch_size: 16
  auto_budget: {budget}
data:
  source: {source}
  image_size: 32
  val_fraction: 0.2
  test_fraction: 0.3
diagnostics:
  check_preprocessing: "off"
"""


@pytest.mark.slow  # a fit, evaluate, predict and export in child processes: about 25 s
def test_a_pixels_run_fits_its_head_and_is_served_by_evaluate_predict_and_export(tmp_path: Path):
    source = template_images(tmp_path / "imgs")
    cfg = tmp_path / "px.yaml"
    cfg.write_text(CFG.format(model="pixels", weights="packaged", strategy="all_frozen",
                              budget=5, source=source).replace("  auto_budget: 5\n", ""))
    run = tmp_path / "run"
    r = run_cli("fit", str(cfg), "--out", str(run), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fitted to convergence" in r.stderr  # the convex head, not SGD epochs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.85  # a linear function of the pixels is the label
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["backbone"] == {"adapter": "pixels", "size": 16}
    r = run_cli("evaluate", str(run), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert abs(json.loads(r.stdout)["accuracy"] - summary["test"]["accuracy"]) < 1e-9
    image = next((source / "pos").iterdir())
    r = run_cli("predict", str(run), str(image), cache=tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    # exported, and checked against PyTorch's outputs by export itself
    r = run_cli("export", str(run), "--format", "torchscript", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "export" / "model.pt").is_file()
    assert "max abs difference from PyTorch" in r.stdout + r.stderr


@pytest.mark.slow  # auto's comparison, the pick's fit and a resume, in child processes: about 20 s
def test_auto_picks_the_pixels_where_they_beat_the_pretrained_features(tmp_path: Path):
    cfg = tmp_path / "auto.yaml"
    # auto_budget 1: no time for a fine-tuner (tests/test_auto.py has the pixels' model
    # against one that fits), so the pixels' model is the pick outright
    cfg.write_text(CFG.format(model="timm:test_efficientnet", weights="none",
                              strategy="auto", budget=1,
                              source=template_images(tmp_path / "imgs", n=300)))
    run = tmp_path / "run"
    r = run_cli("fit", str(cfg), "--out", str(run), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((run / "auto.json").read_text())
    assert rec["chosen"] == "pixels", rec["reasons"]
    assert "raw pixels beat the pretrained features" in rec["reasons"][0]
    assert "no fine-tuning candidate fits the budget: the pixels' model is the pick" \
        in rec["reasons"][1]
    pixels = next(t for t in rec["trials"] if t["strategy"] == "pixels")
    assert "out-of-fold Brier score" in pixels["note"]
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["backbone"]["adapter"] == "pixels"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.8
    # a resumed run reads the pick back
    (run / "summary.json").unlink()
    r = run_cli("fit", str(cfg), "--out", str(run), "--resume", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming the pick pixels" in r.stderr
