"""fit --baseline and compare end to end on a tiny model: a constructed case of negative transfer
gets that verdict, the leaderboard has every strategy and the baseline, and the summary carries
calibration and forgetting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import run_cli

pytestmark = pytest.mark.slow  # each test trains several runs: a minute or more each



def noise_pretrained_weights(path: Path) -> Path:
    """A test_efficientnet 'pretrained' on an unrelated task with shuffled labels: Fashion-MNIST
    images, labels permuted at random, trained hard until it memorises the noise. Its features
    carry nothing about digits."""
    import timm

    from tlkit.data.packaged import load_packaged

    torch.manual_seed(0)
    fm = load_packaged("fashion_mnist")
    x = torch.stack([torch.from_numpy(np.asarray(fm.inputs[i], dtype=np.float32))
                     for i in range(256)]) / 255.0
    x = torch.nn.functional.interpolate(x[:, None], size=32).repeat(1, 3, 1, 1)
    y = torch.randint(0, 10, (256,))  # shuffled: no relation to the images
    model = timm.create_model("test_efficientnet", num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for step in range(60):
        idx = torch.randint(0, 256, (64,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if not k.startswith("classifier")}
    save_file(sd, str(path))
    return path


CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: {weights}
  freeze_strategy: {strategy}
  head_lr: 1e-2
  backbone_lr: 3e-3
  epochs: 3
  batch_size: 16
  early_stopping_patience: null
data:
  source: digits
  image_size: 32
  limit: 400
diagnostics:
  scratch_lr: 1e-2
"""


def test_a_backbone_pretrained_on_shuffled_labels_gets_the_verdict_negative_transfer(
        tmp_path: Path) -> None:
    weights = noise_pretrained_weights(tmp_path / "noise.safetensors")
    cfg = tmp_path / "neg.yaml"
    cfg.write_text(CFG.format(weights=weights, strategy="all_frozen"))
    r = run_cli("fit", str(cfg), "--out", str(tmp_path / "run"), "--baseline",
                cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    b = summary["baseline"]
    assert b["verdict"] == "negative transfer", b["text"]
    assert b["high"] < 0 and b["margin"] < 0
    assert "negative transfer" in r.stderr
    # the baseline is an ordinary run directory beside the run
    assert (tmp_path / "run" / "baseline" / "seed-0" / "summary.json").is_file()
    # calibration is measured on every classification run
    cal = summary["calibration"]
    assert cal["temperature"] > 0 and 0 <= cal["ece_after"] <= 1


def test_compare_ranks_every_strategy_against_the_baseline(tmp_path: Path) -> None:
    cfg = tmp_path / "cmp.yaml"
    cfg.write_text(CFG.format(weights="none", strategy="all_frozen"))
    out = tmp_path / "cmp"
    r = run_cli("compare", str(cfg), "--out", str(out), "--strategies",
                "all_frozen,none,lp_ft", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "compare.json").read_text())
    names = {row["strategy"] for row in res["leaderboard"]}
    assert {"all_frozen", "none", "lp_ft", "scratch", "classical"} <= names
    classical = next(row for row in res["leaderboard"] if row["strategy"] == "classical")
    assert classical["name"] == "pixels + logistic regression" and classical["seconds"] > 0
    assert "classical (pixels + logistic regression)" in (out / "leaderboard.md").read_text()
    assert all((out / n / "README.md").is_file() for n in names if n != "classical")  # cards
    accs = [row["test_accuracy"] for row in res["leaderboard"]]
    assert accs == sorted(accs, reverse=True)
    assert sum(row["advised"] for row in res["leaderboard"]) == 1
    for row in res["leaderboard"]:
        assert row["low"] <= row["test_accuracy"] <= row["high"]
        if row["strategy"] != "scratch":
            assert row["verdict"] in ("positive transfer", "no measurable effect",
                                      "negative transfer")
    assert "<- advise" in (out / "leaderboard.md").read_text()
    # a second compare into the same folder is refused; --resume keeps the finished runs
    r = run_cli("compare", str(cfg), "--out", str(out), cache=tmp_path / "cache")
    assert r.returncode == 2 and "--resume" in r.stderr
    before = (out / "none" / "summary.json").stat().st_mtime_ns
    r = run_cli("compare", str(cfg), "--out", str(out), "--strategies", "all_frozen,none,lp_ft",
                "--resume", "--no-advise", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "none" / "summary.json").stat().st_mtime_ns == before


def test_forgetting_is_measured_when_the_backbone_trains(tmp_path: Path) -> None:
    weights = noise_pretrained_weights(tmp_path / "w.safetensors")
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(CFG.format(weights=weights, strategy="none"))
    r = run_cli("fit", str(cfg), "--out", str(tmp_path / "run"), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    f = json.loads((tmp_path / "run" / "summary.json").read_text())["forgetting"]
    cka = f["cka"]
    assert list(cka)[0] == "stem" and len(cka) >= 3
    assert all(0 <= v <= 1.0001 for v in cka.values())
    # fine-tuning moved the representation: not every group is identical to the pretrained one
    assert min(cka.values()) < 0.999
