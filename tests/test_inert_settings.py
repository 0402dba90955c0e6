"""Settings that do nothing on the path a run takes are made to work there, refused when the
config loads, or said in the log before training: never silently ignored. And class weights
that would leave the loss nothing to count are refused (before: a ZeroDivisionError traceback
from the solver)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression

from tlkit.assemble import assemble
from tlkit.cli import main
from tlkit.config import LoopSettings, TransferConfig, validate
from tlkit.errors import UserError
from tlkit.inputs import class_weights_of
from tlkit.run.prepare import unused_settings
from tlkit.train.head_solver import loss_weights, solve, unread_by_solver

# --------------------------------------------------------------------------------------------------
# sampler: balanced under the convex head: it works (each class weighs the same in the solver)
# --------------------------------------------------------------------------------------------------


def _imbalanced(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1, 2], [240, 40, 20]))
    x = rng.normal(size=(300, 6)) + np.eye(3)[y] @ rng.normal(size=(3, 6)) * 0.9
    return x, y


def test_balanced_weights_make_each_class_count_the_same() -> None:
    y = np.repeat([0, 1, 2], [80, 15, 5])
    w = loss_weights("single_label", y, balanced=True)
    assert w is not None
    totals = [w[c] * n for c, n in enumerate(np.bincount(y))]
    assert totals == pytest.approx([100 / 3] * 3)  # each class's examples weigh 1/3 in all
    # with class weights too: the product
    both = loss_weights("single_label", y, [2.0, 1.0, 1.0], balanced=True)
    assert both is not None and both[0] == pytest.approx(2 * w[0]) and both[1] == w[1]
    # nothing asked: every example weighs 1, as before
    assert loss_weights("single_label", y) is None
    assert loss_weights("regression", y.astype(float), balanced=True) is None


def test_the_solver_with_balanced_sampling_is_scikit_learns_balanced_fit() -> None:
    x, y = _imbalanced()
    tr, va = slice(0, 240), slice(240, 300)
    w0, b0, _ = solve("single_label", x[tr], y[tr], x[va], y[va], 3)
    w1, b1, sol = solve("single_label", x[tr], y[tr], x[va], y[va], 3, balanced=True)
    assert not np.allclose(w0, w1)  # before: the same head, sampler or not
    # the same as scikit-learn's class_weight="balanced" at the chosen strength
    mean, std = x[tr].mean(0), x[tr].std(0) + 1e-6
    ref = LogisticRegression(C=sol.c, max_iter=2000, class_weight="balanced").fit(
        (x[tr] - mean) / std, y[tr])
    ours = (x[va] @ w1.T + b1).argmax(1)
    assert (ours == ref.predict((x[va] - mean) / std)).mean() >= 0.95
    # and the rare classes are found more often
    rare_plain = np.isin((x @ w0.T + b0).argmax(1), [1, 2]).sum()
    rare_balanced = np.isin((x @ w1.T + b1).argmax(1), [1, 2]).sum()
    assert rare_balanced > rare_plain


def _texts(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    rows = ["text,label"]
    for i, label in enumerate(["common"] * 54 + ["rare"] * 6):
        rows.append(f"{label if i % 3 else ''} {' '.join(rng.choice(words, 4))} {i},{label}")
    path = tmp / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow  # two fits of a tiny model: a few seconds
def test_sampler_balanced_changes_an_all_frozen_runs_model_and_says_so(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _texts(tmp_path)
    heads = {}
    for sampler in ("shuffle", "balanced"):
        cfg = tmp_path / f"{sampler}.yaml"
        cfg.write_text("transfer_config:\n"
                       f"  source_model: hf:{tiny_bert_dir}\n  freeze_strategy: all_frozen\n"
                       f"  sampler: {sampler}\n  cache: {{disk: false}}\n"
                       f"data:\n  source: {data}\n  max_length: 16\n  val_fraction: 0.2\n")
        out = tmp_path / sampler
        assert main(["fit", str(cfg), "--out", str(out), "--no-report"]) == 0
        err = capsys.readouterr().err
        assert ("each class weighted equally (sampler balanced)" in err) == (sampler == "balanced")
        heads[sampler] = {k: v for k, v in load_file(str(out / "model" / "model.safetensors"))
                          .items() if k.startswith("head.")}
        assert json.loads((out / "summary.json").read_text())["strategy"] == "all_frozen"
    assert heads["shuffle"] and heads["shuffle"].keys() == heads["balanced"].keys()
    assert any(not np.array_equal(heads["shuffle"][k], heads["balanced"][k])
               for k in heads["shuffle"])


# --------------------------------------------------------------------------------------------------
# What a solved head does not read: said when it solves
# --------------------------------------------------------------------------------------------------


def _loop(**changes: Any) -> LoopSettings:
    return TransferConfig(source_model="timm:test_efficientnet", **changes).loop_settings


def test_a_solved_head_names_the_sgd_settings_it_does_not_read() -> None:
    said = unread_by_solver(_loop(head_lr=1e-2, warmup_steps=10, max_grad_norm=None,
                                  early_stopping_patience=None, weight_decay=0.05),
                            dropout=0.3)
    text = "; ".join(said)
    for key in ("head_lr 0.01", "warmup_steps 10", "max_grad_norm None",
                "early_stopping_patience None", "weight_decay 0.05", "dropout 0.3"):
        assert key in text
    assert all("(" in s for s in said)  # each with its reason
    # the defaults, given or not, are not said; what the solver reads is never said
    assert unread_by_solver(_loop(head_lr=1e-3, sampler="balanced", seed=3), dropout=0.1) == []


# --------------------------------------------------------------------------------------------------
# Settings a path ignores: said before training
# --------------------------------------------------------------------------------------------------


def _config(raw_tc: dict[str, Any], data: dict[str, Any] | None = None,
            **sections: Any) -> Any:
    return validate({"transfer_config": raw_tc, "data": {"source": "x.csv", **(data or {})},
                     **sections})


def _unused(tiny_bert_dir: Path, modality: str = "text", data: dict[str, Any] | None = None,
            **tc: Any) -> str:
    cfg = _config({"source_model": f"hf:{tiny_bert_dir}", **tc}, data)
    asm = assemble(cfg.transfer_config, 2)
    return "; ".join(unused_settings(cfg, modality, asm))


def test_settings_a_strategy_ignores_are_said(tiny_bert_dir: Path) -> None:
    said = _unused(tiny_bert_dir, freeze_strategy="all_frozen", backbone_lr=3e-4,
                   lr_decay_per_layer=0.7, l2sp_lambda=0.1)
    for key in ("backbone_lr 0.0003", "lr_decay_per_layer 0.7", "l2sp_lambda 0.1"):
        assert f"transfer_config.{key} (freeze_strategy all_frozen trains no backbone group)" \
            in said
    # (a strategy's own key under another strategy, top_n under all_frozen, is refused:
    # tests/test_strategies.py)
    said = _unused(tiny_bert_dir, freeze_strategy="none", head_solver="sgd", head_refit=False)
    assert "transfer_config.head_solver sgd (freeze_strategy none has no head-only phase" in said
    assert "transfer_config.head_refit False (only a head solved as the run's last phase" in said
    said = _unused(tiny_bert_dir, freeze_strategy="all_frozen", head_solver="sgd",
                   head_refit=False)
    assert "transfer_config.head_solver" not in said and "head_refit False" in said
    said = _unused(tiny_bert_dir, freeze_strategy="lora", l2sp_lambda=0.1)
    assert "transfer_config.l2sp_lambda 0.1 (LoRA's base weights stay frozen" in said
    # one trained group: no decay between groups; nothing frozen: nothing cached
    said = _unused(tiny_bert_dir, freeze_strategy="top_n_unfrozen", top_n=1,
                   lr_decay_per_layer=0.7, cache={"max_mb": 64})
    assert "transfer_config.lr_decay_per_layer 0.7 (only the top group trains" in said
    assert "max_mb" not in said  # the frozen bottom is cached
    said = _unused(tiny_bert_dir, freeze_strategy="none", lr_decay_per_layer=0.7,
                   cache={"max_mb": 64})
    assert "lr_decay_per_layer" not in said
    assert "transfer_config.cache.max_mb 64 (no layer is frozen below a trained one" in said


def test_settings_the_model_or_the_data_ignore_are_said(tiny_bert_dir: Path) -> None:
    said = _unused(tiny_bert_dir, head={"type": "linear", "hidden_size": 64},
                   freeze_norm_stats="all",
                   data={"image_size": 96, "augment": "flip", "on_bad_image": "error"})
    assert "transfer_config.head.hidden_size 64 (a linear head has no hidden layer)" in said
    assert "transfer_config.freeze_norm_stats all (the backbone has no BatchNorm layer)" in said
    for key in ("data.image_size 96", "data.augment flip", "data.on_bad_image error"):
        assert f"{key} (the data is text)" in said
    # an mlp head reads hidden_size
    assert "hidden_size" not in _unused(tiny_bert_dir, head={"type": "mlp", "hidden_size": 64})
    said = _unused(tiny_bert_dir, "image", {"max_length": 64, "group_by_length": False},
                   pooling="cls")
    for key in ("data.max_length 64", "data.group_by_length False", "transfer_config.pooling cls"):
        assert key in said and "the data is images" in said


def test_adaptation_settings_its_method_ignores_are_said(tiny_bert_dir: Path) -> None:
    cfg = _config({"source_model": f"hf:{tiny_bert_dir}"},
                  adaptation={"method": "none", "target": {"source": "t.csv"}, "weight": 0.5,
                              "dann_gamma": 5.0, "auto_weights": [0.3], "auto_budget": 2.0})
    said = "; ".join(unused_settings(cfg, "text", assemble(cfg.transfer_config, 2)))
    assert "adaptation.weight 0.5 (adaptation method none adds no alignment loss)" in said
    assert "adaptation.dann_gamma 5.0 (only method dann reads it" in said
    assert "adaptation.auto_weights [0.3] (only method auto reads it" in said
    assert "adaptation.auto_budget 2.0 (only method auto reads it" in said


def test_default_values_given_explicitly_are_never_said(tiny_bert_dir: Path) -> None:
    assert _unused(tiny_bert_dir, freeze_strategy="all_frozen", backbone_lr=1e-4, top_n=2,
                   head_solver="convex", head_refit=True, l2sp_lambda=0.0,
                   head={"type": "linear", "hidden_size": 256}, freeze_norm_stats="auto",
                   data={"augment": "none", "on_bad_image": "skip"}) == ""


# --------------------------------------------------------------------------------------------------
# Refused when the config loads (no variant of tlkit's own ever sets them)
# --------------------------------------------------------------------------------------------------

_TC = {"source_model": "timm:test_efficientnet"}


@pytest.mark.parametrize("raw, says", [
    ({"transfer_config": {**_TC, "class_weights": "auto"},
      "data": {"source": "x.csv", "task": "multi_label"}}, "data.task multi_label would ignore"),
    ({"transfer_config": {**_TC, "class_weights": {"a": 2.0}},
      "data": {"source": "x.csv", "task": "regression"}}, "data.task regression would ignore"),
    ({"transfer_config": _TC, "data": {"source": "x.csv", "label_separator": ";"}},
     "task single_label would ignore it"),
    ({"transfer_config": {**_TC, "cache": {"enabled": False, "max_mb": 64}},
      "data": {"source": "x.csv"}}, "cache.enabled: false turns off"),
    ({"transfer_config": _TC, "data": {"source": "x.csv"}, "adaptation": {"target_limit": 50}},
     "there is no adaptation.target"),
])
def test_settings_that_can_never_act_are_refused_when_the_config_loads(
        raw: dict[str, Any], says: str) -> None:
    with pytest.raises(UserError, match=says):
        validate(raw)


def test_their_defaults_given_explicitly_load() -> None:
    validate({"transfer_config": {**_TC, "class_weights": "none",
                                  "cache": {"enabled": False, "max_mb": 2048}},
              "data": {"source": "x.csv", "task": "regression", "label_separator": "|"},
              "adaptation": {"target_limit": None}})


# --------------------------------------------------------------------------------------------------
# Class weights: all zero (was a traceback), and its siblings
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights, says", [
    ({"pos": 0, "neg": 0}, "every class weight given is 0"),
    ({"pos": 0.0}, "every class weight given is 0"),
    ({"pos": -1.0}, "0 or more"),
    ({"pos": float("inf")}, "the weight of class 'pos' is inf"),
    ({"pos": float("nan")}, "the weight of class 'pos' is nan"),
    ({"pos": 1e9}, "at most 1e\\+06"),
    ({True: 2.0}, "quote it"),
    ({None: 2.0}, "quote it"),
])
def test_class_weights_that_cannot_work_are_refused_when_the_config_loads(
        weights: dict[Any, float], says: str) -> None:
    with pytest.raises(UserError, match=says):
        validate({"transfer_config": {**_TC, "class_weights": weights},
                  "data": {"source": "x.csv"}})


def test_class_names_yaml_reads_as_numbers_name_their_text(tmp_path: Path) -> None:
    cfg = validate({"transfer_config": {**_TC, "class_weights": {0: 20, 1.5: 2}},
                    "data": {"source": "digits"}})
    assert cfg.transfer_config.class_weights == {"0": 20.0, "1.5": 2.0}


def test_all_zero_class_weights_exit_2_from_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n  source_model: minilm-l6\n"
                   "  class_weights: {pos: 0, neg: 0}\ndata:\n  source: x.csv\n")
    for command in (["plan", str(cfg)], ["fit", str(cfg), "--out", str(tmp_path / "run")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "every class weight given is 0" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


class _Train:
    task = "single_label"

    def __init__(self, counts: list[int]) -> None:
        self.classes = [f"c{i}" for i in range(len(counts))]
        self.targets = np.repeat(np.arange(len(counts)), counts)


def test_class_weights_checked_against_the_training_classes() -> None:
    three = _Train([30, 20, 10])
    # every class zero but one: the model would learn to predict it always
    with pytest.raises(UserError, match="only 'c2' keeps a positive weight"):
        class_weights_of({"c0": 0, "c1": 0}, three)
    assert class_weights_of({"c0": 0, "c1": 1}, three) == [0.0, 1.0, 1.0]  # two still count
    # a class the training split lacks (only a given test file has it): its weight does nothing
    with pytest.raises(UserError, match="'c2', absent from the training split"):
        class_weights_of({"c2": 3.0}, _Train([30, 20, 0]))
    # a name written in another case: the class it meant
    with pytest.raises(UserError, match="'C1' \\(did you mean 'c1'\\?\\)"):
        class_weights_of({"C1": 3.0}, three)


def test_class_weights_of_tags_are_checked_the_same_way() -> None:
    tags = SimpleNamespace(task="token_classification", classes=["O", "B-PER", "I-PER"],
                           targets=np.array([np.array([0, 1, 2]), np.array([0, 0])],
                                            dtype=object))
    assert class_weights_of({"B-PER": 2.0}, tags) == [1.0, 2.0, 1.0]
    with pytest.raises(UserError, match="only 'I-PER' keeps a positive weight"):
        class_weights_of({"O": 0, "B-PER": 0}, tags)


@pytest.mark.slow  # a fit of a tiny model up to its splits: about 2 s
def test_class_weights_leaving_one_class_exit_2_before_the_model_loads(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _texts(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n"
                   f"  source_model: hf:{tiny_bert_dir}\n  freeze_strategy: all_frozen\n"
                   "  class_weights: {rare: 0, common: 1}\n"
                   f"data:\n  source: {data}\n  max_length: 16\n")
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "only 'common' keeps a positive weight" in err and "Traceback" not in err
    assert "loading backbone" not in err
