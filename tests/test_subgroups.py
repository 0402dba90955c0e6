"""Subgroup metrics: a table's group column travels with its examples through the splits, and a
run reports the test metrics per group, the worst group and the gap, where a minority does worse."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tlkit.cli import main
from tlkit.config import validate
from tlkit.data.sources import load_source
from tlkit.data.splits import make_splits
from tlkit.errors import UserError
from tlkit.metrics import subgroup_metrics


def data_cfg(source: str | Path, **overrides: Any) -> SimpleNamespace:
    """A stand-in for DataConfig; without group_column unless given (older settings objects)."""
    values: dict[str, Any] = dict(
        source=str(source), task="single_label", text_column=None, image_column=None,
        label_column=None, limit=None, val_fraction=0.1, test_fraction=0.2, seed=0,
        image_size=None, max_length=None, on_bad_image="skip", label_separator="|",
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def test_subgroup_metrics_per_group_worst_and_gap() -> None:
    targets = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    right = np.eye(2)[targets] * 3.0
    outputs = right.copy()
    outputs[[5, 6, 7]] = right[[5, 6, 7]][:, ::-1]  # three of group b's four are wrong
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    m = subgroup_metrics(outputs, targets, groups, "single_label", ["neg", "pos"])
    assert m["a"] == {"n": 4, "accuracy": 1.0, "f1_macro": 1.0}
    assert m["b"]["n"] == 4 and m["b"]["accuracy"] == pytest.approx(0.25)
    assert (m["worst_group"], m["gap"], m["gap_metric"]) == ("b", pytest.approx(0.75), "accuracy")
    # a class a group lacks does not count as an F1 of 0 for it
    only_neg = subgroup_metrics(right[[0, 2]], targets[[0, 2]], np.array(["c", "c"]),
                                "single_label")
    assert only_neg["c"]["f1_macro"] == 1.0 and only_neg["gap"] == 0.0


def test_subgroup_metrics_for_regression_rank_by_error() -> None:
    targets = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    outputs = np.array([[1.0], [2.0], [5.0], [0.0]], dtype=np.float32)
    m = subgroup_metrics(outputs, targets, np.array(["x", "x", "gap", "gap"]), "regression")
    assert m["x"]["mae"] == 0.0 and m["gap (group)"]["mae"] == pytest.approx(3.0)
    assert (m["worst_group"], m["gap"], m["gap_metric"]) == ("gap (group)", 3.0, "mae")


def write_table(path: Path, groups: list[str]) -> Path:
    rows = ["text,label,site"] + [f"text number {i},{'pos' if i % 2 else 'neg'},{g}"
                                  for i, g in enumerate(groups)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_groups_are_read_as_text_and_follow_their_examples_through_the_splits(tmp_path: Path
                                                                               ) -> None:
    groups = ["007", "12", ""] * 20
    path = write_table(tmp_path / "t.csv", groups)
    data = load_source(data_cfg(path, group_column="site"))
    assert data.groups is not None
    assert sorted(set(data.groups)) == ["(missing)", "007", "12"]
    splits = make_splits(data, data_cfg(path, group_column="site"))
    for part in (splits.train, splits.val, splits.test):
        assert part.groups is not None and len(part.groups) == len(part)
        for text, group in zip(part.inputs, part.groups):
            assert group == ["007", "12", "(missing)"][int(text.split()[-1]) % 3]
    # no group column asked for (or a settings object that has no such field): no groups
    assert load_source(data_cfg(path)).groups is None


def test_a_missing_group_column_names_the_available_ones(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv", ["a", "b"] * 10)
    with pytest.raises(UserError, match=r"data.group_column 'region' is not a column .*"
                                        r"its columns are: text, label, site"):
        load_source(data_cfg(path, group_column="region"))


@pytest.mark.parametrize("source", ["digits", "folder"])
def test_group_column_needs_a_table_source(tmp_path: Path, source: str) -> None:
    if source == "folder":
        (tmp_path / "cats").mkdir()
        source = str(tmp_path)
    with pytest.raises(UserError, match="group_column 'site' needs a CSV / JSONL / Parquet source"):
        load_source(data_cfg(source, group_column="site"))


# ---------------------------------------------------------------------------------------------
# through fit and evaluate


@pytest.fixture(scope="module")
def grouped_texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 texts in two groups: in group a (three quarters) 'great' means pos and 'awful' neg;
    in the minority group b the labels run the other way, so a model fits the majority's rule
    and fails the minority."""
    rng = np.random.default_rng(0)
    filler = ["the", "film", "was", "a", "plot", "story"]
    rows = ["text,label,site"]
    for i in range(240):
        great, minority = i % 2 == 1, i % 8 in (0, 1)
        words = [*rng.choice(filler, 3), "great" if great else "awful"]
        rng.shuffle(words)
        label = "pos" if great != minority else "neg"
        rows.append(f"{' '.join(words)},{label},{'b' if minority else 'a'}")
    path = tmp_path_factory.mktemp("grouped") / "texts.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_run_reports_the_minority_groups_lower_accuracy_and_the_gap(
        tmp_path: Path, tiny_bert_dir: Path, grouped_texts: Path) -> None:
    from tlkit.run import evaluate_run, fit_run

    raw = {"transfer_config": {"source_model": f"hf:{tiny_bert_dir}",
                               "pretrained_weights": "packaged", "freeze_strategy": "all_frozen",
                               "epochs": 3, "batch_size": 16, "head_lr": 3e-2,
                               "warmup_steps": 0, "early_stopping_patience": None,
                               "device": "cpu"},
           "data": {"source": str(grouped_texts), "max_length": 16, "group_column": "site",
                    "test_fraction": 0.25}}
    summary = fit_run(validate(raw), tmp_path / "run")
    sub = summary["test"]["subgroups"]
    assert sub["a"]["n"] + sub["b"]["n"] == summary["data"]["sizes"]["test"]
    assert sub["worst_group"] == "b"
    assert sub["a"]["accuracy"] > 0.75 and sub["b"]["accuracy"] < 0.35
    assert sub["gap"] == pytest.approx(sub["a"]["accuracy"] - sub["b"]["accuracy"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test"]["subgroups"] == sub
    assert summary["preprocessing_findings"] == []
    assert evaluate_run(tmp_path / "run")["subgroups"] == sub


def test_fit_with_a_missing_group_column_exits_2(tmp_path: Path, capsys,
                                                 grouped_texts: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("transfer_config:\n  source_model: minilm-l6\n"
                   f"data:\n  source: {grouped_texts}\n  group_column: region\n")
    assert main(["fit", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "data.group_column 'region' is not a column" in err
    assert "its columns are: text, label, site" in err
