"""Token-level data for named entities: CoNLL and JSON-lines readers, BIO tags (IOB1 read as
IOB2), and the entities a tag sequence names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlkit.data.tokens import (Entity, entities, entity_types, read_conll, read_token_jsonl,
                               tag_set, to_iob2)
from tlkit.errors import UserError


def test_a_conll_file_gives_sentences_of_words_and_tags(tmp_path: Path) -> None:
    f = tmp_path / "train.conll"
    f.write_text("-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\nGerman JJ B-MISC\n\n"
                 "Peter NNP B-PER\nBlackburn NNP I-PER\n\n\n")
    assert read_conll(f) == [(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
                             (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    bad = tmp_path / "bad.conll"
    bad.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(UserError, match="line 2 has a word but no tag"):
        read_conll(bad)


def test_json_lines_give_sentences_and_a_count_mismatch_is_named(tmp_path: Path) -> None:
    f = tmp_path / "train.jsonl"
    rows = [{"tokens": ["New", "York", "is", "big"], "tags": ["B-LOC", "I-LOC", "O", "O"]},
            {"tokens": ["Ada"], "ner_tags": ["B-PER"]}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_token_jsonl(f)[1] == (["Ada"], ["B-PER"])
    f.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(UserError, match="2 tokens but 1 tags"):
        read_token_jsonl(f)


def test_iob1_is_read_as_iob2_and_other_tags_are_refused() -> None:
    assert to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    with pytest.raises(UserError, match="not O, B-TYPE or I-TYPE"):
        to_iob2(["PER", "O"])


def test_entities_are_decoded_from_bio_tags_with_their_word_spans() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "B-ORG"]
    assert entities(tags) == [Entity("PER", 0, 2), Entity("LOC", 3, 4), Entity("LOC", 4, 6),
                              Entity("ORG", 6, 7), Entity("ORG", 8, 9)]
    assert entities(["O", "O"]) == [] and entities([]) == []
    assert entity_types([tags]) == ["LOC", "ORG", "PER"]
    assert tag_set(["LOC", "PER"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
