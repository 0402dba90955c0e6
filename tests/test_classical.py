"""The classical baseline (TF-IDF or raw pixels + a linear model) and its verdict: where the
pixels carry the label and a random-feature backbone does not, `fit --baseline` says the
classical baseline is better; every task has its variant; bad requests fail before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_cli
from tlkit.data.types import LabelledData
from tlkit.diagnose.classical import fit_classical
from tlkit.diagnose.verdict import (CLASSICAL_BETTER, NO_DIFFERENCE, TRANSFER_BETTER,
                                    classical_verdict, per_example_scores)


def template_images(root: Path, n: int = 240, seed: int = 0) -> Path:
    """16 x 16 grey images made of 4 x 4 blocks of random brightness; the class is the sign of
    the blocks' correlation with a fixed random +-1 template (half +1, half -1). A linear
    function of the pixels carries the label exactly, while a randomly initialised network's
    globally pooled features (brightness, contrast, edges: statistics the template is
    balanced against) carry next to nothing of it."""
    rng = np.random.default_rng(seed)
    template = rng.permutation(np.repeat([1.0, -1.0], 8))
    for label in ("neg", "pos"):
        (root / label).mkdir(parents=True)
    for i in range(n):
        blocks = rng.uniform(0, 1, 16)
        label = "pos" if blocks @ template > 0 else "neg"
        img = np.kron(blocks.reshape(4, 4), np.ones((4, 4)))
        Image.fromarray((255 * img).astype(np.uint8)).save(root / label / f"{i:03d}.png")
    return root


CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: all_frozen
  epochs: 1
  batch_size: 16
data:
  source: {source}
  image_size: 32
  val_fraction: 0.2
  test_fraction: 0.3
diagnostics:
  baselines: [classical]
  classical_image_size: 4
  check_preprocessing: "off"
"""


@pytest.mark.slow  # a fit and the baseline in a child process: about 8 s
def test_the_verdict_says_the_classical_baseline_is_better_where_pixels_carry_the_label(
        tmp_path: Path) -> None:
    cfg = tmp_path / "imgs.yaml"
    cfg.write_text(CFG.format(source=template_images(tmp_path / "imgs")))
    r = run_cli("fit", str(cfg), "--out", str(tmp_path / "run"), "--baseline",
                cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    c = summary["classical_baseline"]
    assert c["verdict"] == CLASSICAL_BETTER, c["text"]
    assert "not paying for itself" in c["text"]
    assert c["test"]["accuracy"] > summary["test"]["accuracy"] + 0.1
    assert c["name"] == "pixels + logistic regression"
    assert c["seconds"] > 0 and c["transfer_seconds"] == summary["total_seconds"]
    assert "baseline" not in summary  # diagnostics.baselines names classical only
    assert "against the classical baseline: the classical baseline is better" in r.stderr
    assert "Transfer against the classical baseline" in (tmp_path / "run" /
                                                           "report.html").read_text()


def test_a_baseline_without_a_test_split_is_refused_before_anything_trains(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tlkit.cli import main

    cfg = tmp_path / "imgs.yaml"
    cfg.write_text(CFG.format(source=template_images(tmp_path / "imgs")).replace(
        "test_fraction: 0.3", "test_fraction: 0"))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run"), "--baseline"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "test" in err
    assert not (tmp_path / "run").exists()


def test_scratch_is_refused_for_a_regression_config(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"t {i},{i}\n" for i in range(30)))
    cfg = tmp_path / "reg.yaml"
    cfg.write_text(f"transfer_config: {{source_model: timm:test_efficientnet}}\n"
                   f"data: {{source: {tmp_path / 'd.csv'}, task: regression}}\n"
                   "diagnostics: {baselines: [scratch, classical]}\n")
    r = run_cli("plan", str(cfg))
    assert r.returncode == 2 and "baselines: [classical]" in r.stderr


def _text(task: str, n: int, seed: int = 0) -> LabelledData:
    """Texts whose words say the label: 'alpha' for class 0 / a high value, 'beta' otherwise."""
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, 2, n)
    words = [" ".join(["alpha" if y == 0 else "beta", *rng.choice(["x", "y", "z"], 3)])
             for y in ys]
    if task == "single_label":
        return LabelledData("t", "text", task, words, ys.astype(np.int64), ["a", "b"])
    if task == "multi_label":
        t = np.stack([ys == 0, ys == 1, np.ones(n, bool)], 1).astype(np.float32)
        return LabelledData("t", "text", task, words, t, ["a", "b", "c"])
    return LabelledData("t", "text", task, words, (3.0 - 2.0 * ys).astype(np.float32), None)


@pytest.mark.parametrize("task,n_out", [("single_label", 2), ("multi_label", 3),
                                        ("regression", 1)])
def test_every_task_has_a_classical_model_that_learns_an_easy_text_task(
        task: str, n_out: int) -> None:
    train, val, test = _text(task, 60, 0), _text(task, 20, 1), _text(task, 30, 2)
    r = fit_classical(train, val, test, n_out, seed=0)
    assert r.val_outputs.shape == (20, n_out) and r.test_outputs is not None
    assert r.test_outputs.shape == (30, n_out)
    scores = per_example_scores(r.test_outputs, test.targets, task)
    if task == "regression":
        assert -scores.mean() < 0.1  # MSE of values 1 and 3
    else:
        assert scores.mean() > 0.95
    assert r.name.startswith("TF-IDF + ")
    again = fit_classical(train, val, test, n_out, seed=0)
    assert np.array_equal(again.test_outputs, r.test_outputs)  # same data, same model


def test_the_classical_verdict_reads_the_interval_in_the_tasks_units() -> None:
    targets = np.arange(200) % 2
    right = np.eye(2)[targets] * 4 - 2  # logits with the right class on top
    wrong = -right
    better = classical_verdict(right, wrong, targets, "single_label", "TF-IDF + LR")
    assert better["verdict"] == TRANSFER_BETTER and "by 100.0 points" in better["text"]
    worse = classical_verdict(wrong, right, targets, "single_label", "TF-IDF + LR")
    assert worse["verdict"] == CLASSICAL_BETTER and "not paying for itself" in worse["text"]
    same = classical_verdict(right, right, targets, "single_label", "TF-IDF + LR")
    assert same["verdict"] == NO_DIFFERENCE
    y = np.linspace(0, 1, 100).astype(np.float32)
    reg = classical_verdict(y[:, None] + 0.01, y[:, None] + 0.5, y, "regression", "ridge")
    assert reg["verdict"] == TRANSFER_BETTER and "MSE" in reg["text"]
