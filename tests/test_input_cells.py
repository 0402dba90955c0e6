"""Input cells are what they claim: a text, a sentence pair or an image path, whatever the entry
point (a training table in CSV / JSONL / Parquet, a DataFrame, the API's lists, the command
line, batch scoring, token files) goes through one layer (``tlkit.data.cells``). A cell that is
not an input is an error naming its row (training), or an error row (batch scoring,
``run.predict``): never scored as its ``repr``, and every input row has its output row.

The property test at the end feeds random cells through all three. `make test` runs a few
dozen derandomized examples; ``HYPOTHESIS_PROFILE=thorough`` runs ten times as many with a
fresh seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tlkit.cli import main
from tlkit.data.cells import BadCell, image_cell, pair_cell, text_cell
from tlkit.data.sources import load_source
from tlkit.errors import UserError

WORDS = ["great", "fine", "awful", "dull"]


def _settings(source: Path, **extra: object) -> SimpleNamespace:
    base = dict(source=str(source), task="single_label", text_column=None,
                text_pair_column=None, image_column=None, label_column=None, limit=None,
                val_fraction=0.2, test_fraction=0.1, seed=0, image_size=None, max_length=None,
                on_bad_image="skip", label_separator="|", group_column=None, validation=None,
                test=None)
    base.update(extra)
    return SimpleNamespace(**base)


def _tc(bert: Path) -> dict[str, Any]:
    return {"source_model": f"hf:{bert}", "pretrained_weights": "packaged",
            "freeze_strategy": "none", "epochs": 1, "batch_size": 16, "head_lr": 1e-2,
            "warmup_steps": 0, "early_stopping_patience": None, "device": "cpu"}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("cells_text")
    rows = ["text,label"] + [f"the film was {WORDS[i % 4]},{'pos' if i % 4 < 2 else 'neg'}"
                             for i in range(40)]
    (tmp / "train.csv").write_text("\n".join(rows) + "\n")
    raw = {"transfer_config": _tc(tiny_bert_dir),
           "data": {"source": str(tmp / "train.csv"), "max_length": 16, "val_fraction": 0.25}}
    fit_run(validate(raw), tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("cells_pairs")
    rows = ["premise,hypothesis,label"] + [
        f"there is a {WORDS[i % 4]} film,i see a {WORDS[(i // 2) % 4]} film,"
        f"{'same' if i % 4 == (i // 2) % 4 else 'other'}" for i in range(40)]
    (tmp / "train.csv").write_text("\n".join(rows) + "\n")
    raw = {"transfer_config": _tc(tiny_bert_dir),
           "data": {"source": str(tmp / "train.csv"), "text_column": "premise",
                    "text_pair_column": "hypothesis", "max_length": 24,
                    "val_fraction": 0.25}}
    fit_run(validate(raw), tmp / "run")
    return tmp / "run"


def _is_scored(row: pd.Series) -> bool:
    return isinstance(row.get("label"), str) and not isinstance(row.get("error"), str)


# --------------------------------------------------------------------------------------------
# one policy per kind


def test_one_policy_for_text_pair_and_image_cells() -> None:
    assert text_cell(b"good film") == "good film"  # UTF-8 bytes: their text
    assert text_cell("cafe\u0301") == "caf\u00e9"  # NFC
    assert text_cell("\ud83d\ude00") == "\U0001f600"  # a surrogate pair: its character
    for missing in (None, float("nan"), np.nan, pd.NA, pd.NaT, "", "  \t", "\u200b\u200d",
                    "\ufeff"):
        with pytest.raises(BadCell, match="empty text") as got:
            text_cell(missing)
        assert got.value.missing
    for value, said in ((5, "a number"), (2.5, "a number"), (True, "a boolean"),
                        ([1, 2], "a list of 2"), ({"a": 1}, "a dict"), (np.array([1]), "a list"),
                        (b"\xff\xfe", "not UTF-8"), ("a\ud800b", "lone surrogate"),
                        (("a", "b"), "one string, not a pair"),
                        (pd.Timestamp("2024-01-01"), "a date")):
        with pytest.raises(BadCell, match=said):
            text_cell(value)
    assert pair_cell("A ||| B") == ("A", "B") and pair_cell(["A", "B"]) == ("A", "B")
    for value, said in (("A ||| B ||| C", "2 '|||' separators"), ("A", "one text"),
                        (("A",), "two texts, not 1"), (("A", "B", "C"), "two texts, not 3"),
                        (("A", None), "empty second text"), ("A ||| ", "empty second text"),
                        ({"A": "B"}, "not a sentence pair")):
        with pytest.raises(BadCell, match=said):
            pair_cell(value)
    assert image_cell(Path("a/b.png")) == os.path.join("a", "b.png")
    for value, said in ((None, "empty image path"), (" ", "empty image path"),
                        (b"\x89PNG", "tlkit reads images from files"),
                        ({"bytes": b"x", "path": None}, "tlkit reads images from files"),
                        (3, "a number")):
        with pytest.raises(BadCell, match=said):
            image_cell(value)


# --------------------------------------------------------------------------------------------
# run.predict


@pytest.mark.slow
def test_run_predict_scores_no_repr_and_keeps_a_row_for_every_input(text_run: Path) -> None:
    import tlkit

    run = tlkit.load(text_run)
    cells = [None, float("nan"), "", "   ", b"the film was great", {"the film was great": 1},
             ["the film was great"], 7, "the film was great", pd.NA, "\u200b"]
    got = run.predict(cells)
    assert len(got) == len(cells)
    scored = [i for i in range(len(cells)) if _is_scored(got.iloc[i])]
    assert scored == [4, 8]  # the bytes (decoded) and the text; nothing else is scored
    assert got.loc[4, "input"] == "the film was great"
    assert got.loc[4, "p_pos"] == pytest.approx(got.loc[8, "p_pos"], abs=1e-6)
    errors = got["error"].tolist()
    assert errors[0] == errors[1] == errors[2] == errors[3] == "empty text"
    assert "a dict" in errors[5] and "a list" in errors[6] and "a number (7)" in errors[7]
    assert got["label"].iloc[[0, 1, 2, 3, 5, 6, 7, 9, 10]].isna().all()
    # bytes are one input, not one per byte; a DataFrame's cells go through the same layer
    assert len(run.predict(b"the film was great")) == 1
    frame = run.predict(pd.DataFrame({"text": ["the film was fine", None, 3]}))
    assert len(frame) == 3 and _is_scored(frame.iloc[0]) and frame["error"].iloc[1:].notna().all()
    # a lone surrogate: an error row (its input escaped, so the DataFrame can hold it)
    odd = run.predict(["a\ud800", "the film was fine"])
    assert "lone surrogate" in odd.loc[0, "error"] and odd.loc[0, "input"] == "a\\ud800"
    assert _is_scored(odd.iloc[1])
    # NFC: a decomposed accent scores as the composed one (training read it the same way)
    composed, decomposed = run.predict(["caf\u00e9 film", "cafe\u0301 film"])["p_pos"]
    assert composed == pytest.approx(decomposed, abs=1e-6)


@pytest.mark.slow
def test_run_predict_of_none_a_number_or_a_dict_is_a_user_error(text_run: Path) -> None:
    import tlkit

    run = tlkit.load(text_run)
    for bad, said in ((None, r"run.predict\(None\)"), (5, "got int 5"),
                      ({"the film was great": 1}, "a dict, whose items are its keys"),
                      ([], "no inputs")):
        with pytest.raises(UserError, match=said):
            run.predict(bad)


@pytest.mark.slow
def test_the_command_line_refuses_an_input_that_is_not_a_text(
        text_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("", "   ", "\u200b"):
        code = main(["predict", str(text_run), "the film was fine", bad])
        _, err = capsys.readouterr()
        assert code == 2 and "input 2" in err and "empty text" in err
        assert "Traceback" not in err


# --------------------------------------------------------------------------------------------
# sentence pairs


@pytest.mark.slow
def test_a_pair_is_exactly_two_texts_everywhere(
        pair_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tlkit

    # the command line: "A ||| B ||| C" is refused, not read as ("A", "B ||| C")
    code = main(["predict", str(pair_run), "there is a fine film ||| i see a film ||| more"])
    _, err = capsys.readouterr()
    assert code == 2 and "2 '|||' separators" in err and "Traceback" not in err
    code = main(["predict", str(pair_run), "there is a fine film ||| i see a fine film"])
    assert code == 0 and json.loads(capsys.readouterr()[0])["label"] in ("same", "other")
    # the API: each bad pair an error row, the good ones scored, in order
    run = tlkit.load(pair_run)
    cells = ["A ||| B ||| C", ("there is a fine film",), ("a", "b", "c"),
             "there is a fine film", ("there is a fine film", None),
             ("there is a fine film", "i see a fine film"), ["there is a dull film", b"i see"],
             ("there is a fine film", ["i see"])]
    got = run.predict(cells)
    assert len(got) == len(cells)
    assert [_is_scored(got.iloc[i]) for i in range(len(cells))] == \
        [False, False, False, False, False, True, True, False]
    assert got.loc[5, "input"] == "there is a fine film ||| i see a fine film"
    assert "one text" in got.loc[3, "error"] and "empty second text" in got.loc[4, "error"]
    # batch scoring: a bad cell in either column is that row's error
    src = tmp_path / "pairs.jsonl"
    rows = [{"premise": "there is a fine film", "hypothesis": "i see a fine film"},
            {"premise": "there is a fine film", "hypothesis": ["i see"]},
            {"premise": None, "hypothesis": "i see a film"},
            {"premise": "there is a dull film", "hypothesis": 4}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["predict", str(pair_run), "--data", str(src), "--out", str(tmp_path / "p.jsonl")])
    capsys.readouterr()
    assert code == 0
    out = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["1", "2", "3", "4"]
    assert "error" not in out[0] and all("error" in r and "label" not in r for r in out[1:])
    assert "second text (hypothesis)" in out[1]["error"] and out[2]["error"] == "empty text"


@pytest.mark.parametrize("extra, said", [
    (dict(text_column="premise", text_pair_column="premise"),
     "both name the column 'premise'"),
    (dict(text_column="premise", text_pair_column="Premise"),  # one column, another spelling
     "both name the column 'premise'"),
    (dict(text_column="premise", text_pair_column="label"), "both an input"),
    (dict(text_column="label"), "both an input"),
    (dict(text_column="premise", label_column="premise"), "both an input"),
])
def test_a_pair_of_a_column_with_itself_or_an_input_that_is_the_label_is_refused(
        tmp_path: Path, extra: dict[str, Any], said: str) -> None:
    src = tmp_path / "p.csv"
    src.write_text("premise,hypothesis,label\n" + "".join(
        f"p {i},h {i},{'ab'[i % 2]}\n" for i in range(10)))
    with pytest.raises(UserError, match=said):
        load_source(_settings(src, **extra))


# --------------------------------------------------------------------------------------------
# training tables: one message naming the column, the rows and what they hold


def _table(path: Path, texts: list[Any], fmt: str) -> Path:
    labels = ["ab"[i % 2] for i in range(len(texts))]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                for t, y in zip(texts, labels)))
    elif fmt == "csv":
        pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    else:
        pq.write_table(pa.table({"text": pa.array(texts), "label": pa.array(labels)}), path)
    return path


@pytest.mark.parametrize("fmt, texts, said", [
    ("jsonl", ["good", ["a", "list"], "fine", 5, {"k": "v"}, "ok"],
     r"column 'text' of .* holds 3 cell\(s\) that are not texts \(data row 2: not a text: "
     r"a list of 2 .*data row 4: not a text: a number \(5\).*data row 5: not a text: a dict"),
    ("jsonl", ["good", True, "fine", "ok"], r"data row 2: not a text: a boolean"),
    ("parquet", [["a"], ["b"], [], ["c"]], r"data row 1: not a text: a list of 1"),
    ("parquet", [{"t": "a"}, {"t": "b"}, {"t": "c"}, None], r"data row 1: not a text: a dict"),
    ("parquet", [1.5, 2.0, float("nan"), 4.0], r"data row 1: not a text: a number \(1.5\)"),
    ("parquet", [b"good", b"\xff\xfe", b"fine", b"ok"], r"data row 2: bytes that are not UTF-8"),
    ("csv", ["good", "   ", "fine", "ok"], r"column 'text' of .* is empty in 1 row\(s\) "
                                          r"\(data rows 2\)"),
    ("jsonl", ["good", "\u200b", None, "ok"], r"is empty in 2 row\(s\) \(data rows 2, 3\)"),
])
def test_a_training_table_whose_text_cells_are_not_texts_is_refused_naming_the_rows(
        tmp_path: Path, fmt: str, texts: list[Any], said: str) -> None:
    src = _table(tmp_path / f"t.{fmt}", texts, fmt)
    with pytest.raises(UserError, match=said):
        load_source(_settings(src))


def test_bytes_and_unicode_read_the_same_from_every_format(tmp_path: Path) -> None:
    texts = ["cafe\u0301 film", "the film was great", "\u05e9\u05dc\u05d5\u05dd film", "ok"]
    want = [unicodedata.normalize("NFC", t) for t in texts]
    for fmt in ("csv", "jsonl", "parquet"):
        got = load_source(_settings(_table(tmp_path / f"t.{fmt}", texts, fmt))).inputs
        assert got == want, fmt
    raw = _table(tmp_path / "b.parquet", [t.encode() for t in texts], "parquet")
    assert load_source(_settings(raw)).inputs == want  # a binary column of UTF-8 text


def test_a_dataframe_with_lists_in_its_text_column_is_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bert_dir: Path) -> None:
    import tlkit

    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    frame = pd.DataFrame({"text": [["a", "b"], ["c"], ["d"], ["e"]], "label": list("abab")})
    with pytest.raises(UserError, match=r"column 'text' .*data row 1: not a text: a list"):
        tlkit.fit({"transfer_config": _tc(tiny_bert_dir), "data": {"source": frame}},
                  out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_an_image_column_holds_paths_only(tmp_path: Path) -> None:
    from tlkit.run.scoring import input_rows, read_chunks

    rows = [{"image": "a.png", "label": "x"}, {"image": 3, "label": "y"},
            {"image": {"bytes": "...", "path": None}, "label": "x"},
            {"image": None, "label": "y"}]
    (tmp_path / "a.png").write_bytes(b"")
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"column 'image' .* holds 2 cell\(s\) that are not "
                                        r"image paths \(data row 2: .*a number.*data row 3:"):
        load_source(_settings(src, image_column="image"))
    got = [r for chunk in read_chunks(src, "image", None, "image") for r in chunk]
    assert [r[0] for r in got] == ["1", "2", "3", "4"]
    assert got[0][1] == tmp_path / "a.png" and got[0][2] is None
    assert "a number" in got[1][2] and "reads images from files" in got[2][2]
    assert got[3][2] == "empty image path"
    # the API's and the command line's image inputs: the same policy, and the file must exist
    given = input_rows([None, 3, str(tmp_path / "nope.png"), tmp_path / "a.png", b"\x89PNG"],
                       "image", False)
    assert [why is None for _, _, why in given] == [False, False, False, True, False]
    assert "no such image file" in given[2][2] and given[3][1] == tmp_path / "a.png"


# --------------------------------------------------------------------------------------------
# token files


def _conll(path: Path, n: int, tags: bool = True) -> Path:
    names, filler = ["Alice", "Bob", "Carol"], ["met", "the", "in", "today"]
    lines = []
    for i in range(n):
        lines += [f"{names[i % 3]} B-PER" if tags else names[i % 3],
                  f"{filler[i % 4]} O" if tags else filler[i % 4], ""]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def token_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("cells_tokens")
    _conll(tmp / "train.conll", 40)
    raw = {"transfer_config": _tc(tiny_bert_dir),
           "data": {"source": str(tmp / "train.conll"), "task": "token_classification",
                    "max_length": 16, "val_fraction": 0.2, "test_fraction": 0.2}}
    fit_run(validate(raw), tmp / "run")
    return tmp / "run"


@pytest.mark.slow
def test_ner_batch_scoring_reads_a_words_only_file(
        token_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    words = _conll(tmp_path / "words.conll", 5, tags=False)
    out = tmp_path / "tagged.jsonl"
    code = main(["predict", str(token_run), "--data", str(words), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["input"] == "Alice met" and len(rows[0]["tags"]) == 2
    # JSON lines of tokens without tags, likewise; evaluating such a file still needs tags
    (tmp_path / "words.jsonl").write_text('{"tokens": ["Bob", "the"]}\n')
    code = main(["predict", str(token_run), "--data", str(tmp_path / "words.jsonl")])
    out_text, _ = capsys.readouterr()
    assert code == 0 and json.loads(out_text)["input"] == "Bob the"
    code = main(["evaluate", str(token_run), "--data", str(words)])
    _, err = capsys.readouterr()
    assert code == 2 and "has a word but no tag" in err
    # the API: a non-text is an error row, the texts are tagged, in order
    import tlkit

    got = tlkit.load(token_run).predict(["Alice met Bob", None, ["Bob"], "Carol"])
    assert len(got) == 4 and list(got["error"].notna()) == [False, True, True, False]
    assert got.loc[3, "input"] == "Carol" and got.loc[3, "tags"] is not None


def test_token_files_refuse_non_words_and_non_utf8(tmp_path: Path) -> None:
    from tlkit.data.tokens import read_sentences

    f = tmp_path / "t.jsonl"
    for row, said in (({"tokens": ["Ada", None], "tags": ["B-PER", "O"]},
                       "line 1, token 2: empty word"),
                      ({"tokens": ["Ada", 1990], "tags": ["B-PER", "O"]},
                       r"token 2: not a word: a number \(1990\)"),
                      ({"tokens": ["Ada", ["x"]], "tags": ["B-PER", "O"]}, "not a word: a list"),
                      ({"tokens": ["Ada", "\ud800"], "tags": ["B-PER", "O"]}, "lone surrogate"),
                      (["Ada", "B-PER"], "is a JSON list, not an object")):
        f.write_text(json.dumps(row) + "\n")
        with pytest.raises(UserError, match=said):
            read_sentences(f)
    c = tmp_path / "t.conll"
    c.write_bytes(b"Ada B-PER\nmet O\n\nZo\xeb B-PER\n")
    with pytest.raises(UserError, match="not UTF-8 text .* on line 4"):
        read_sentences(c)
    c.write_text("cafe\u0301 B-LOC\n")
    assert read_sentences(c)[0][0] == ["caf\u00e9"]


# --------------------------------------------------------------------------------------------
# property: random cells through run.predict, batch scoring and training data

_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "")
_SCALE = 10 if _PROFILE == "thorough" else 1
_COMMON: dict[str, Any] = dict(deadline=None, database=None, print_blob=True,
                               derandomize=_SCALE == 1,
                               suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])

_UNICODE = st.sampled_from([
    "cafe\u0301", "caf\u00e9", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627",
    "a\u200bb", "\u200b", "\u200d\u200c", "\ufeff", "\u202eevil", "e\u0301\u0301\u0301",
    "\U0001f600", "\ud83d\ude00", "\ud800", "x\udfff", "\x00", "\t\n", " ", "", "Ⅻ", "ﬁ",
    "the film was great", "||| ", "a ||| b"])
_TEXTS = st.one_of(_UNICODE, st.text(max_size=12),
                   st.text(st.characters(codec=None, categories=("Cs", "Mn", "Cf", "Zs", "Lo")),
                           max_size=6),
                   st.lists(_UNICODE, max_size=3).map("".join))
_CELLS = st.one_of(
    _TEXTS, st.none(), st.just(float("nan")), st.just(pd.NA), st.binary(max_size=8),
    _TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")), st.integers(), st.floats(),
    st.booleans(), st.lists(st.one_of(st.integers(), _TEXTS), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(_TEXTS), st.tuples(_TEXTS, _TEXTS))


def _text_or_none(cell: Any) -> str | None:
    """What the model may read for ``cell`` as a text: its NFC text, or None (no score)."""
    if isinstance(cell, bytes):
        try:
            cell = cell.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(cell, str):
        return None
    try:
        cell = cell.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return None
    return unicodedata.normalize("NFC", cell)


def _check_rows(cells: list[Any], rows: list[dict[str, Any]], key: str) -> None:
    """One row per cell, in order; a scored row's input is the cell's own text, and a cell
    that is not a text is never scored."""
    assert len(rows) == len(cells)
    for cell, row in zip(cells, rows):
        text = _text_or_none(cell)
        if "error" in row and isinstance(row["error"], str):
            assert not isinstance(row.get("label"), str)
            continue
        assert text is not None, (cell, row)  # a scored row came from a text
        assert row[key] == text and isinstance(row["label"], str)


@pytest.mark.slow
@settings(max_examples=12 * _SCALE, **_COMMON)
@given(cells=st.lists(_CELLS, min_size=1, max_size=6))
def test_property_run_predict_takes_any_cells(text_run: Path, cells: list[Any]) -> None:
    import tlkit

    try:
        got = tlkit.load(text_run).predict(cells)
    except UserError:
        return
    _check_rows(cells, got.to_dict("records"), "input")


def _write_cells(path: Path, fmt: str, cells: list[Any]) -> list[Any] | None:
    """``cells`` as the text column of a ``fmt`` file (with a label column), where the format
    can hold them; the cells as the file gives them back (CSV: all text; JSON: pandas' reader;
    Parquet: one type per column, nulls in a number column as NaN), or None."""
    labels = ["ab"[i % 2] for i in range(len(cells))]
    if fmt == "csv":
        if not all(isinstance(c, str) for c in cells):
            return None
        with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows([["text", "label"],
                                                            *zip(cells, labels)])
        read = lambda: pd.read_csv(path, dtype=str, keep_default_na=False,  # noqa: E731
                                   na_values=[""])
    elif fmt == "jsonl":
        def plain(c: Any) -> Any:
            if isinstance(c, float) and not math.isfinite(c) or c is pd.NA:
                return None
            return list(c) if isinstance(c, tuple) else c

        if any(isinstance(c, bytes) for c in cells):
            return None
        path.write_text("".join(json.dumps({"text": plain(c), "label": y}) + "\n"
                                for c, y in zip(cells, labels)))
        read = lambda: pd.read_json(path, lines=True, dtype=False)  # noqa: E731
    else:
        try:
            column = pa.array([None if c is pd.NA else c for c in cells])
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return None  # a column of mixed types: Parquet holds one type per column
        pq.write_table(pa.table({"text": column, "label": pa.array(labels)}), path)
        read = lambda: pq.read_table(path).to_pandas()  # noqa: E731
    try:
        return list(read()["text"].tolist())
    except Exception:  # noqa: BLE001 - a file its own format's reader refuses
        return []


@pytest.fixture(scope="module")
def loaded(text_run: Path) -> Any:
    from tlkit.saved import load_model

    return load_model(text_run / "model")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


_STRICT = _TEXTS.filter(_encodable)
_JSON = st.one_of(_TEXTS, st.none(), st.integers(), st.floats(), st.booleans(),
                  st.lists(st.one_of(st.integers(), _TEXTS), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
# A Parquet column has one type: text, binary, integers, floats, booleans, lists, structs.
_PARQUET = st.one_of(
    st.lists(st.one_of(st.none(), _STRICT), min_size=2, max_size=6),
    st.lists(st.one_of(st.none(), st.binary(max_size=8), _STRICT.map(str.encode)),
             min_size=2, max_size=6),
    st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=2, max_size=6),
    st.lists(st.floats(), min_size=2, max_size=6),
    st.lists(st.one_of(st.none(), st.booleans()), min_size=2, max_size=6),
    st.lists(st.lists(_STRICT, max_size=2), min_size=2, max_size=6),
    st.lists(st.fixed_dictionaries({"t": _STRICT}), min_size=2, max_size=6))
_FILES = st.one_of(
    st.tuples(st.just("csv"), st.lists(_TEXTS, min_size=2, max_size=6)),
    st.tuples(st.just("jsonl"), st.lists(_JSON, min_size=2, max_size=6)),
    st.tuples(st.just("parquet"), _PARQUET))


@pytest.mark.slow
@settings(max_examples=40 * _SCALE, **_COMMON)
@given(file=_FILES)
def test_property_batch_scoring_and_training_data_take_any_cells(
        loaded: Any, tmp_path_factory: pytest.TempPathFactory,
        file: tuple[str, list[Any]]) -> None:
    import torch

    from tlkit.run.scoring import Calibration, Writer, read_chunks, score_file

    fmt, cells = file
    path = tmp_path_factory.mktemp("cells") / f"t.{fmt}"
    stored = _write_cells(path, fmt, cells)
    event(f"{fmt}: {'not written' if stored is None else 'written'}")
    if stored is None:
        return
    stream = io.StringIO()
    try:
        read = [r for chunk in read_chunks(path, "text", None, None, chunk=4) for r in chunk]
        score_file(loaded, path, Writer(stream, "jsonl", "single_label", loaded.classes),
                   Calibration(), None, None, 8, torch.device("cpu"), False)
    except UserError:
        assert stored == [] or fmt == "csv"  # the whole file refused (not UTF-8, unreadable)
    else:
        assert len(stored) == len(cells) == len(read)
        for cell, back, (rid, item, why) in zip(cells, stored, read):
            if item is None:
                assert isinstance(why, str) and why
            else:  # read: the cell's own text, never a repr
                assert isinstance(cell, (str, bytes)) and item == _text_or_none(back) is not None
        rows = [json.loads(x) for x in stream.getvalue().splitlines()]
        assert [r["id"] for r in rows] == [str(i + 1) for i in range(len(cells))]
        assert ["error" in r for r in rows] == [item is None for _, item, _ in read]
        assert all(isinstance(r.get("label"), str) for r in rows if "error" not in r)
    try:
        data = load_source(_settings(path))
    except UserError:
        event("training: refused")
        return
    event("training: loaded")
    # loaded: every cell was a text, each read as its own NFC text
    assert all(isinstance(c, (str, bytes)) for c in cells)
    assert data.inputs == [_text_or_none(c) for c in stored]


def test_an_unlabelled_target_table_reads_its_cells_like_training_data(tmp_path: Path) -> None:
    """adaptation.target and pretrain's unlabelled pool: 'NA', 'None' and 'nan' are texts (as
    in training tables), an empty cell is a gap left out, and a cell that is not a text is an
    error naming its rows (before: CSV gaps by pandas' NA list, other cells dropped silently)."""
    from types import SimpleNamespace

    from tlkit.adapt.target import load_unlabelled

    (tmp_path / "t.csv").write_text("text\nNA\nNone\n\nnan\ngood film\n")
    cfg = SimpleNamespace(source=str(tmp_path / "t.csv"), text_column=None, image_column=None,
                          text_pair_column=None, label_column=None)
    assert load_unlabelled(cfg).inputs == ["NA", "None", "nan", "good film"]
    (tmp_path / "t.jsonl").write_text('{"text": "ok"}\n{"text": ["a", "b"]}\n{"text": null}\n'
                                      '{"text": 5}\n')
    cfg.source = str(tmp_path / "t.jsonl")
    with pytest.raises(UserError, match=r"data row 2: not a text: a list.*data row 4: not a text"):
        load_unlabelled(cfg)
