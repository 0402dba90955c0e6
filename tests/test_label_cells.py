"""Label cells are what they claim: a label encoding that means "no label" (a datasets ClassLabel
-1, None / NaN / pd.NA, an empty or blank cell, a -1 in a multi-label ClassLabel list) is never a
class: refused with its count, or left out and counted (data.unlabelled: drop) in the log and
summary.json; a cell that is not a label (a list, a dict, undecodable bytes, a column half
numbers and half names) is refused; one label written two ways is one class or refused; a class
of data.test / data.validation missing from training names the file and its near-spellings; a
DataFrame's errors name the DataFrame, not tlkit's cache file; a JSONL error names the line.

Most tests load data only (load_source / make_splits, a fraction of a second); the marked one
trains a tiny BERT."""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tlkit.config import DataConfig
from tlkit.data import load_source, make_splits
from tlkit.errors import UserError

TEXTS = [f"text number {i}" for i in range(20)]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


def _load(source: Any, **data: Any) -> Any:
    """``data`` as tlkit.fit reads it: DataFrames and Datasets written where the API writes
    them, errors naming them as given (what tlkit.fit does before it trains)."""
    from tlkit.api import _naming_frames, _with_frames

    @_naming_frames
    def load() -> Any:
        raw = _with_frames({"data": {"source": source, **data}})
        cfg = DataConfig.model_validate(raw["data"])
        loaded = load_source(cfg)
        return loaded, make_splits(loaded, cfg)

    return load()


def _classlabel(labels: list[Any], texts: list[str] | None = None) -> Any:
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_dict(
        {"text": texts or [f"text number {i}" for i in range(len(labels))], "label": labels},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))


def _no_cache_file_named(message: str) -> None:
    assert "frames" not in message and ".parquet" not in message, message


# ==================================================================================================
# "no label" is never a class
# ==================================================================================================


def test_a_classlabel_minus_one_is_refused_with_its_count_never_trained_as_the_last_class(
        tmp_path: Path) -> None:
    """Before: names[-1], the rows trained as 'pos' (the last class)."""
    ds = _classlabel([0, 1] * 8 + [-1] * 4)
    with pytest.raises(UserError) as error:
        _load(ds)
    said = str(error.value)
    assert "the datasets.Dataset given as data.source" in said
    assert "is empty in 4 row(s) (data rows 17, 18, 19, 20) of 20" in said
    assert "ClassLabel -1" in said and "data.unlabelled: drop" in said
    _no_cache_file_named(said)
    data, splits = _load(ds, unlabelled="drop")
    assert len(data) == 16 and data.classes == ["neg", "pos"]
    assert data.class_counts() == {"neg": 8, "pos": 8}
    assert splits.summary()["unlabelled_dropped"] == {"total": 4, "source": 4}


def test_a_saved_dataset_folder_with_classlabel_minus_one_and_a_null_label(tmp_path: Path) -> None:
    """save_to_disk folders go the same way; a null ClassLabel (before: int(nan), a
    ValueError traceback) is a row without a label too."""
    ds = _classlabel([0, 1] * 8 + [-1, None])
    ds.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match=r"datasets folder .*saved given as data.source is empty "
                                        r"in 2 row\(s\) \(data rows 17, 18\)"):
        _load(str(tmp_path / "saved"))
    data, _ = _load(str(tmp_path / "saved"), unlabelled="drop")
    assert len(data) == 16


def test_a_classlabel_integer_outside_its_names_is_refused(tmp_path: Path) -> None:
    """Before: an IndexError traceback (names[5])."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": TEXTS[:6], "label": [0, 1, 0, 1, 5, 1]})
    ds = ds.cast_column("label", datasets.ClassLabel(names=["neg", "pos"]))
    with pytest.raises(UserError, match=r"holds 5 in 1 row\(s\) \(data rows 5\), outside its "
                                        r"ClassLabel's 2 names \(0 to 1: neg, pos\)"):
        _load(ds)


def test_a_multi_label_classlabel_list_reads_as_names_and_minus_one_is_no_label() -> None:
    """Before: the integers themselves were the classes ('-1', '0', '1')."""
    datasets = pytest.importorskip("datasets")
    labels = [[0], [1], [0, 1], []] * 4 + [[-1], [-1]]
    ds = datasets.Dataset.from_dict(
        {"text": TEXTS[:18], "labels": labels},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "labels": datasets.Sequence(
                                        datasets.ClassLabel(names=["sport", "news"]))}))
    with pytest.raises(UserError, match=r"is empty in 2 row\(s\) \(data rows 17, 18\)"):
        _load(ds, task="multi_label")
    data, splits = _load(ds, task="multi_label", unlabelled="drop")
    assert data.classes == ["news", "sport"] and len(data) == 16
    assert data.targets[:4].tolist() == [[0, 1], [1, 0], [1, 1], [0, 0]]  # [] is "none of them"
    assert splits.summary()["unlabelled_dropped"]["source"] == 2


@pytest.mark.parametrize("gap", [None, float("nan"), pd.NA, "", "   "])
def test_dataframe_labels_that_say_no_label(gap: Any) -> None:
    """None, NaN, pd.NA (a nullable Int64 column), empty and blank text: before, '' and '   '
    trained as a class '' and None / NaN were refused without a way to go on."""
    labels: list[Any] = ["a", "b"] * 9 + [gap, "a"]
    frame = pd.DataFrame({"text": TEXTS, "label": labels})
    with pytest.raises(UserError) as error:
        _load(frame)
    said = str(error.value)
    assert "column 'label' of the DataFrame given as data.source is empty in 1 row(s) " \
           "(data rows 19) of 20" in said and "data.unlabelled: drop" in said
    _no_cache_file_named(said)
    data, _ = _load(frame, unlabelled="drop")
    assert data.classes == ["a", "b"] and len(data) == 19


def test_a_nullable_integer_label_column_with_pd_na() -> None:
    frame = pd.DataFrame({"text": TEXTS, "label": pd.array([0, 1] * 9 + [None, 1], "Int64")})
    with pytest.raises(UserError, match=r"data rows 19\) of 20"):
        _load(frame)
    data, _ = _load(frame, unlabelled="drop")
    assert data.classes == ["0", "1"] and len(data) == 19


def _files(tmp: Path, labels: list[Any]) -> dict[str, Path]:
    """The same labels as CSV, JSONL and Parquet (None: an empty cell / null)."""
    texts = TEXTS[:len(labels)]
    csv = tmp / "t.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{'' if v is None else v}\n"
                                            for t, v in zip(texts, labels)))
    jsonl = tmp / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": v}) + "\n"
                             for t, v in zip(texts, labels)))
    parquet = tmp / "t.parquet"
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(parquet)
    return {"csv": csv, "jsonl": jsonl, "parquet": parquet}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_files_with_rows_without_a_label_refuse_or_drop_them(tmp_path: Path, fmt: str) -> None:
    path = _files(tmp_path, ["x", "y"] * 9 + [None, None])[fmt]
    with pytest.raises(UserError, match=r"is empty in 2 row\(s\) \(data rows 19, 20\) of 20.*"
                                        r"data.unlabelled: drop"):
        load_source(DataConfig(source=str(path)))
    data = load_source(DataConfig(source=str(path), unlabelled="drop"))
    assert (len(data), data.unlabelled, data.classes) == (18, 2, ["x", "y"])
    # tlkit plan's head width counts the same classes
    from tlkit.data import num_outputs

    assert num_outputs(DataConfig(source=str(path), unlabelled="drop")) == 2


def test_a_file_of_nothing_but_unlabelled_rows_says_what_it_is(tmp_path: Path) -> None:
    path = _files(tmp_path, [None] * 6)["jsonl"]
    for setting in ("refuse", "drop"):
        with pytest.raises(UserError, match=r"no label .* in every one of its 6 rows.*"
                                            r"tlkit predict RUN --data FILE needs no labels"):
            load_source(DataConfig(source=str(path), unlabelled=setting))


def test_regression_targets_that_are_missing_refuse_or_drop(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    values = [0.5, 1.5, None, 2.5, float("nan"), 3.0] * 3
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n"
                            for i, v in enumerate(values)).replace("NaN", "null"))
    with pytest.raises(UserError, match=r"is empty in 6 row\(s\)"):
        load_source(DataConfig(source=str(path), task="regression"))
    data = load_source(DataConfig(source=str(path), task="regression", unlabelled="drop"))
    assert len(data) == 12 and data.unlabelled == 6


def test_multi_label_a_null_in_a_column_of_lists_is_no_label_an_empty_list_is_none(
        tmp_path: Path) -> None:
    """In a column of lists, 'none of the labels' is written []; a null can only mean
    unknown (before: read as 'none of the labels', a silent negative for every class). A CSV
    cell left empty still means none of the labels (a CSV cannot write an empty list)."""
    path = tmp_path / "m.jsonl"
    cells = [["a"], ["b"], ["a", "b"], [], None] * 4
    path.write_text("".join(json.dumps({"text": f"t{i}", "labels": v}) + "\n"
                            for i, v in enumerate(cells)))
    with pytest.raises(UserError, match=r"is empty in 4 row\(s\) \(data rows 5, 10, 15, 20\)"):
        load_source(DataConfig(source=str(path), task="multi_label"))
    data = load_source(DataConfig(source=str(path), task="multi_label", unlabelled="drop"))
    assert len(data) == 16 and data.targets[3].tolist() == [0, 0]
    csv = tmp_path / "m.csv"
    csv.write_text("text,labels\n" + "".join(f"t{i},{v}\n" for i, v in
                                             enumerate(["a", "b", "a|b", ""] * 4)))
    data = load_source(DataConfig(source=str(csv), task="multi_label"))
    assert len(data) == 16 and data.targets[3].tolist() == [0, 0]


def test_the_evaluate_path_reads_labels_the_same_way(tmp_path: Path) -> None:
    """Given a trained model's classes (evaluate, predict's labelled files), rows without a
    label are refused or dropped per the run's data.unlabelled, as in training."""
    path = _files(tmp_path, ["x", "y"] * 4 + [None])["parquet"]
    with pytest.raises(UserError, match=r"is empty in 1 row\(s\) \(data rows 9\)"):
        load_source(DataConfig(source=str(path)), classes=["x", "y"])
    data = load_source(DataConfig(source=str(path), unlabelled="drop"), classes=["x", "y"])
    assert len(data) == 8


# ==================================================================================================
# cells that are not labels
# ==================================================================================================


def test_a_dataframe_label_column_of_ints_and_strings_is_a_user_error_not_a_pyarrow_traceback(
        ) -> None:
    """Before: pyarrow's ArrowInvalid traceback, exit 1, while writing the cache file."""
    frame = pd.DataFrame({"text": TEXTS[:6], "label": [1, "pos", 0, "neg", 1, "pos"]})
    with pytest.raises(UserError) as error:
        _load(frame)
    said = str(error.value)
    assert "column 'label' of the DataFrame given as data.source mixes int and str values " \
           "(data row 1: 1, data row 2: 'pos')" in said and "one way" in said
    _no_cache_file_named(said)


@pytest.mark.parametrize("cells, said", [
    ([1, "pos", 0, "neg"] * 3, r"mixes numbers and names \(data row 1: 1, data row 2: 'pos'\)"),
    ([True, 1, False, 0] * 3, r"mixes booleans and numbers \(data row 1: True, data row 2: 1\)"),
    ([["a"], "b"] * 6, r"holds a list where data.task single_label needs one label per row in "
                       r"data row 1 \(\['a'\]\).*data.task: multi_label"),
    ([{"name": "a"}, "b"] * 6, r"holds a mapping where a label belongs in data row 1"),
])
def test_jsonl_label_cells_that_are_not_one_label_are_refused(
        tmp_path: Path, cells: list[Any], said: str) -> None:
    """Before: classes '1' and 'pos' (a column half encoded), 'True' and '1', and the lists'
    and dicts' Python reprs as class names."""
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n"
                            for i, v in enumerate(cells)))
    with pytest.raises(UserError, match=said):
        load_source(DataConfig(source=str(path)))


def test_numbers_written_as_json_numbers_and_numeric_text_are_one_class(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n"
                            for i, v in enumerate([1, "1", 2, "2", 1.0, 2.0])))
    assert load_source(DataConfig(source=str(path))).classes == ["1", "2"]


def test_a_dataframe_with_lists_in_a_single_label_column_is_refused() -> None:
    """Before: classes "['a']" and "['b']" (and a list column crashed hashing the frame)."""
    frame = pd.DataFrame({"text": TEXTS[:6], "label": [["a"], ["b"]] * 3})
    with pytest.raises(UserError, match=r"the DataFrame given as data.source holds a list where "
                                        r"data.task single_label needs one label per row"):
        _load(frame)


def test_float_and_int_labels_of_one_number_are_one_class() -> None:
    frame = pd.DataFrame({"text": TEXTS[:8], "label": [1, 1.0, 2, 2.0] * 2}, dtype=object)
    data, _ = _load(frame, test_fraction=0.25, val_fraction=0.25)
    assert data.classes == ["1", "2"] and data.class_counts() == {"1": 4, "2": 4}


def test_bool_labels_are_two_classes_and_a_missing_one_is_no_label() -> None:
    frame = pd.DataFrame({"text": TEXTS[:9], "label": [True, False] * 4 + [None]})
    with pytest.raises(UserError, match=r"data rows 9\) of 9"):
        _load(frame)
    data, _ = _load(frame, unlabelled="drop", test_fraction=0.25, val_fraction=0.25)
    assert data.classes == ["False", "True"] and len(data) == 8


def test_bytes_labels_are_their_text_and_undecodable_bytes_are_refused(tmp_path: Path) -> None:
    """A Parquet binary column: before, classes "b'neg'" and "b'pos'"."""
    path = tmp_path / "b.parquet"
    pd.DataFrame({"text": TEXTS[:8], "label": [b"neg", b"pos"] * 4}).to_parquet(path)
    assert load_source(DataConfig(source=str(path))).classes == ["neg", "pos"]
    pd.DataFrame({"text": TEXTS[:8], "label": [b"neg", b"\xff\xfe"] * 4}).to_parquet(path)
    with pytest.raises(UserError, match=r"holds bytes that are not UTF-8 text in data row 2"):
        load_source(DataConfig(source=str(path)))


# ==================================================================================================
# one label written two ways; a class the training source lacks
# ==================================================================================================


def _csv(path: Path, labels: list[str]) -> Path:
    path.write_text("text,label\n" + "".join(f"t {i},{v}\n" for i, v in enumerate(labels)),
                    encoding="utf-8")
    return path


def test_a_test_class_missing_from_training_names_the_file_and_the_near_spelling(
        tmp_path: Path) -> None:
    """Before: "class(es) 'Fresh' have no examples; add examples of them or remove them from
    the data", naming neither the file nor the cause."""
    train = _csv(tmp_path / "train.csv", ["fresh", "rotten"] * 10)
    test = _csv(tmp_path / "test.csv", ["Fresh", "rotten", "Fresh", "rotten"])
    with pytest.raises(UserError) as error:
        load_source(DataConfig(source=str(train), test=str(test)))
    said = str(error.value)
    assert f"data.test {test} holds the label 'Fresh' (2 rows), which the training source " \
           f"(data.source {train}) does not have" in said
    assert "'Fresh' is the class 'fresh' written with another case" in said
    assert "remove those rows from data.test" in said and "'fresh', 'rotten'" in said
    # the validation file likewise
    with pytest.raises(UserError, match=r"data.validation .*val.csv holds the label 'Fresh'"):
        load_source(DataConfig(source=str(train),
                               validation=str(_csv(tmp_path / "val.csv", ["Fresh", "rotten"]))))


def test_spacing_and_unicode_forms_across_files(tmp_path: Path) -> None:
    """Leading/trailing spaces and the decomposed form (NFD, as macOS names folders) are the
    same class; a no-break space inside a name is pointed out."""
    nfc, nfd = "café", unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    train = _csv(tmp_path / "train.csv", [nfc, "very good"] * 10)
    test = _csv(tmp_path / "test.csv", [f" {nfd} ", "very good", nfd, "very good"])
    data = load_source(DataConfig(source=str(train), test=str(test)))
    assert data.classes == [nfc, "very good"] and data.test is not None
    assert data.test.targets.tolist() == [0, 1, 0, 1]
    odd = _csv(tmp_path / "odd.csv", [nfc, "very\u00a0good"])
    with pytest.raises(UserError, match=r"'very\\xa0good' is the class 'very good' written with "
                                        r"another spacing or Unicode form"):
        load_source(DataConfig(source=str(train), test=str(odd)))


def test_one_label_written_with_other_spacing_in_one_file_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", ["very good", "very  good", "bad"] * 4)
    with pytest.raises(UserError, match=r"labels 'very  good' and 'very good': one label "
                                        r"written 2 ways"):
        load_source(DataConfig(source=str(path)))


def test_a_folder_named_in_the_decomposed_form_is_the_class_of_the_composed_name(
        tmp_path: Path) -> None:
    from PIL import Image

    nfd = unicodedata.normalize("NFD", "café")
    for name in (nfd, "tea"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / name / f"{i}.png")
    data = load_source(DataConfig(source=str(tmp_path / "imgs")))
    assert data.classes == ["café", "tea"]


def test_a_dataframe_test_set_with_a_class_training_lacks_names_the_dataframe() -> None:
    train = pd.DataFrame({"text": TEXTS, "label": ["fresh", "rotten"] * 10})
    test = pd.DataFrame({"text": TEXTS[:4], "label": ["Fresh", "rotten"] * 2})
    with pytest.raises(UserError) as error:
        _load(train, test=test)
    said = str(error.value)
    assert said.startswith("the DataFrame given as data.test holds the label 'Fresh' (2 rows), "
                           "which the training source (the DataFrame given as data.source)")
    _no_cache_file_named(said)


# ==================================================================================================
# JSONL errors by line
# ==================================================================================================


@pytest.mark.parametrize("bad, said", [
    ('{"text": "oops", "label": a}', r"line 38 of .*t.jsonl(.gz)? is not valid JSON \(Expecting "
                                     r"value at column 27\)"),
    ('["a list", "b"]', r"line 38 of .*t.jsonl(.gz)? holds a JSON list, not an object"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_a_jsonl_parse_error_names_the_line(tmp_path: Path, bad: str, said: str,
                                            gz: bool) -> None:
    """Before: "Expected object or value at position 1234" (a byte offset)."""
    lines = [json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) for i in range(50)]
    lines[37] = bad
    body = "\n".join(lines) + "\n"
    path = tmp_path / ("t.jsonl.gz" if gz else "t.jsonl")
    if gz:
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path.write_text(body)
    with pytest.raises(UserError, match=said + ".*fix or remove that line"):
        load_source(DataConfig(source=str(path)))


def test_batch_scoring_names_the_jsonl_line_whatever_chunk_it_falls_in(tmp_path: Path) -> None:
    """Before: "at position 88", an offset within the chunk being read."""
    from tlkit.run.scoring import read_chunks

    lines = [json.dumps({"text": f"t{i}"}) for i in range(30)]
    lines[22] = '{"text": broken}'
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"line 23 of .*s.jsonl is not valid JSON"):
        for _ in read_chunks(path, "text", None, None, chunk=5):
            pass


# ==================================================================================================
# through tlkit.fit: a refusal before training, and a run that drops and counts
# ==================================================================================================


def _tc(bert: Path) -> dict[str, Any]:
    return {"source_model": f"hf:{bert}", "freeze_strategy": "all_frozen", "epochs": 1,
            "batch_size": 16, "cache": {"disk": False}}


def test_fit_refuses_a_classlabel_minus_one_before_training(tmp_path: Path,
                                                           tiny_bert_dir: Path) -> None:
    import tlkit

    ds = _classlabel([0, 1] * 10 + [-1] * 3)
    with pytest.raises(UserError, match=r"datasets.Dataset given as data.source is empty in "
                                        r"3 row\(s\).*data.unlabelled: drop") as error:
        tlkit.fit({"transfer_config": _tc(tiny_bert_dir), "data": {"source": ds}},
                  out=tmp_path / "run", progress=False)
    _no_cache_file_named(str(error.value))
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_a_fit_that_drops_unlabelled_rows_counts_them_and_evaluate_and_predict_agree(
        tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tlkit
    from tlkit.cli import main

    words = ["great", "awful", "fine", "dull"]
    texts = [f"the film was {words[i % 4]}" for i in range(60)]
    train = _classlabel([0 if i % 4 in (1, 3) else 1 for i in range(56)] + [-1] * 4, texts)
    test = pd.DataFrame({"text": texts[:12], "label": ["neg", "pos", None] * 4})
    run = tlkit.fit({"transfer_config": _tc(tiny_bert_dir),
                     "data": {"source": train, "test": test, "unlabelled": "drop",
                              "max_length": 16}},
                    out=tmp_path / "run")  # progress: train.log is written
    data = run.summary["data"]
    assert data["unlabelled_dropped"] == {"total": 8, "source": 4, "test": 4}
    assert data["sizes"]["test"] == 8 and data["num_classes"] == 2
    assert sum(data["sizes"].values()) == 56 + 8
    assert "rows without a label left out (data.unlabelled: drop): 4 of data.source, 4 of " \
           "data.test" in (tmp_path / "run" / "train.log").read_text()
    assert run.evaluate("test")["n"] == 8
    # a DataFrame to evaluate: the run's setting drops its unlabelled rows too
    assert run.evaluate(test)["n"] == 8
    with pytest.raises(UserError) as error:  # a class the model never saw, named as given
        run.evaluate(pd.DataFrame({"text": texts[:4], "label": ["Pos", "neg"] * 2}))
    said = str(error.value)
    assert "the DataFrame given to Run.evaluate" in said and "'Pos' is the class 'pos' " \
        "written with another case" in said
    _no_cache_file_named(said)
    # batch scoring's JSONL error names the line of the file, not an offset in a chunk
    bad = tmp_path / "score.jsonl"
    bad.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:30])
                   + '{"text": broken}\n')
    code = main(["predict", str(tmp_path / "run"), "--data", str(bad), "--out",
                 str(tmp_path / "scored.csv")])
    err = capsys.readouterr().err
    assert code == 2 and f"line 31 of {bad} is not valid JSON" in err, err
    assert np.isfinite(run.summary["test"]["accuracy"])
