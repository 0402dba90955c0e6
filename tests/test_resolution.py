"""An image run without data.image_size runs at a size that follows its images
(tlkit.data.resolution): the rule, the line the plan and the log print, and a run that predicts
and exports at the size it trained at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tlkit.backbones.base import ImagePreprocessing
from tlkit.cli import main
from tlkit.data.resolution import SAMPLE, image_size_for, median_side, size_for, takes_size
from tlkit.data.transforms import resolve_preprocessing


class _Backbone(nn.Module):
    """A tiny image backbone of a given own size; ``fixed``: like a ViT's patch grid, it takes
    that size only (timm asserts the input's size)."""

    def __init__(self, size: int = 224, fixed: bool = False) -> None:
        super().__init__()
        self.preprocessing = ImagePreprocessing(input_size=size, resize_size=size * 8 // 7)
        self.fixed = fixed
        self.norm = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.fixed or x.shape[-1] == self.preprocessing.input_size, "size mismatch"
        return self.drop(self.norm(x).mean((2, 3)))


def _arrays(n: int, h: int, w: int | None = None) -> list[np.ndarray]:
    return [np.full((h, w or h), 128, np.uint8) for _ in range(n)]


def test_the_rule_small_images_run_small_large_ones_at_the_backbones_size() -> None:
    assert size_for(8, 224) == 128  # digits
    assert size_for(28, 224) == 128  # Fashion-MNIST, MNIST
    assert size_for(32, 224) == 128  # CIFAR: BiT-HyperRule's 128 too
    assert size_for(40, 224) == 160 and size_for(56, 224) == 224
    assert size_for(224, 224) == 224 and size_for(1000, 224) == 224
    assert size_for(8, 16) == 16  # never above the backbone's own size
    sizes = [size_for(s, 224) for s in range(1, 400)]
    assert sizes == sorted(sizes)  # larger images never run smaller


def test_small_images_choose_a_small_size_said_with_the_reason() -> None:
    chosen = image_size_for(_Backbone(224), None, _arrays(40, 28))
    assert (chosen.size, chosen.why, chosen.side, chosen.sampled) == (128, "data", 28, 40)
    assert chosen.describe() == ("images 28 px (median shorter side of 40 sampled): running at "
                                 "128 px, not the backbone's 224 (data.image_size to override)")
    prep = resolve_preprocessing(_Backbone(224).preprocessing, _data(None), chosen)
    assert isinstance(prep, ImagePreprocessing)
    assert (prep.input_size, prep.resize_size) == (128, 146)  # the backbone's crop ratio kept


def test_large_images_keep_the_backbones_size() -> None:
    chosen = image_size_for(_Backbone(224), None, _arrays(10, 300, 500))
    assert (chosen.size, chosen.why, chosen.side) == (224, "backbone", 300)
    assert "running at the backbone's 224 px" in chosen.describe()


def test_an_explicit_image_size_always_wins() -> None:
    for given in (48, 224, 320):
        chosen = image_size_for(_Backbone(224), given, _arrays(10, 8))
        assert (chosen.size, chosen.why) == (given, "config")
        prep = resolve_preprocessing(_Backbone(224).preprocessing, _data(given), chosen)
        assert isinstance(prep, ImagePreprocessing) and prep.input_size == given
    # without a chosen size, resolve_preprocessing takes the config's, as before
    prep = resolve_preprocessing(_Backbone(224).preprocessing, _data(96))
    assert isinstance(prep, ImagePreprocessing) and prep.input_size == 96


def test_the_median_shorter_side_of_a_deterministic_sample(tmp_path: Path) -> None:
    # 3 in 4 images 20 px high and 40 wide, 1 in 4 of 100 px: the median shorter side is 20
    images = [np.zeros((20, 40) if i % 4 else (100, 100), np.uint8) for i in range(1000)]
    assert median_side(images) == (20, SAMPLE)
    assert median_side(images) == median_side(list(images))
    files = []  # files: read from their headers
    for i, (w, h) in enumerate([(30, 60), (64, 32), (12, 12), (50, 50), (33, 90)]):
        files.append(tmp_path / f"{i}.png")
        Image.new("L", (w, h)).save(files[-1])
    assert median_side(files) == (32, 5)
    assert median_side([*files, tmp_path / "gone.png"]) == (32, 5)  # a vanished file is skipped


def test_a_backbone_that_takes_only_its_own_size_keeps_it() -> None:
    bb = _Backbone(224, fixed=True).train()
    before = [t.clone() for t in (bb.norm.running_mean, bb.norm.running_var)]
    rng = torch.get_rng_state()
    chosen = image_size_for(bb, None, _arrays(20, 28))
    assert (chosen.size, chosen.why) == (224, "fixed")
    assert "the only size it takes" in chosen.describe()
    # the probe moved no BatchNorm statistic, drew nothing and left every module's mode
    assert all(torch.equal(a, b) for a, b in zip(before, (bb.norm.running_mean,
                                                          bb.norm.running_var), strict=True))
    assert torch.equal(rng, torch.get_rng_state())
    assert all(m.training for m in bb.modules())
    assert takes_size(_Backbone(224), 128) and not takes_size(bb, 128)


def _data(image_size: int | None) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(image_size=image_size, max_length=None)


CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  cache: {disk: false}
  device: cpu
data:
  source: digits
  limit: 80
"""


def test_the_plan_says_which_size_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    (tmp_path / "c.yaml").write_text(CFG)
    assert main(["plan", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert ("images 8 px (median shorter side of 72 sampled): running at 128 px, not the "
            "backbone's 160 (data.image_size to override)") in out
    assert main(["plan", str(tmp_path / "c.yaml"), "--set", "data.image_size=96"]) == 0
    assert "images at 96 px (data.image_size; the backbone's own size is 160)" in (
        capsys.readouterr().out)


@pytest.mark.slow
def test_a_run_predicts_and_exports_at_the_size_it_chose(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from tlkit.run import predict_run, test_predictions

    (tmp_path / "c.yaml").write_text(CFG)
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "c.yaml"), "--out", str(run), "--no-report"]) == 0
    assert ("images 8 px (median shorter side of 72 sampled): running at 128 px, not the "
            "backbone's 160") in (run / "train.log").read_text()
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["preprocessing"]["input_size"] == 128
    # predict serves the run's test images at 128 px: the probabilities fit saw on them
    outputs, _ = test_predictions(run)
    rows = predict_run(run, spec="test", calibrated=False)
    got = np.array([[r["probabilities"][c] for c in meta["classes"]] for r in rows])
    assert np.allclose(got, torch.softmax(torch.as_tensor(outputs), 1).numpy(), atol=2e-6)
    capsys.readouterr()
    out = tmp_path / "model.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out),
                 "--check-split", "test"]) == 0
    described = json.loads(Path(f"{out}.json").read_text())
    assert described["inputs"][0]["shape"] == ["batch", 3, 128, 128]
    assert "max abs difference from PyTorch" in capsys.readouterr().out
