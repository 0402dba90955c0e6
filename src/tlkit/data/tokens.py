"""Token-level data (named entities): sentences as word lists with one tag per word, read from
CoNLL-style files or JSON lines, tags in the BIO scheme, and the entities a tag sequence names.

CoNLL: one word per line, its tag in the last column (columns separated by whitespace or tabs),
a blank line between sentences; ``-DOCSTART-`` lines are skipped. JSON lines: one sentence per
line, ``{"tokens": [...], "tags": [...]}`` (``ner_tags`` is read as ``tags``).

Tags: ``O``, ``B-TYPE`` (an entity begins) and ``I-TYPE`` (it goes on), i.e. BIO / IOB2. Files
in IOB1 (an entity begins with ``I-`` unless it directly follows one of the same type) are read
as IOB2: an ``I-`` that does not continue an entity of its type begins one, which is how
seqeval's default mode and the CoNLL evaluation script read it too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tlkit.data.cells import BadCell, word_cell
from tlkit.data.types import LabelledData
from tlkit.errors import UserError

OUTSIDE = "O"
CONLL_SUFFIXES = (".conll", ".conllu", ".iob", ".bio", ".txt")


@dataclass(frozen=True)
class Entity:
    """Words ``start`` .. ``end - 1`` of a sentence name an entity of ``type``."""

    type: str
    start: int
    end: int


Sentence = tuple[list[str], list[str]]  # words, one tag per word


def read_conll(path: Path, tags: bool = True) -> list[Sentence]:
    """The sentences of a CoNLL-style file. ``tags=False`` (scoring, which needs no labels)
    reads the words only, the first column: a words-only file (one word per line) is then
    valid, and each word's tag is ``O``."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tagged: list[str] = []
    for number, line in _lines(path):
        parts = line.split()
        if not parts:
            if words:
                sentences.append((words, tagged))
                words, tagged = [], []
            continue
        if parts[0] == "-DOCSTART-":
            continue
        if tags and len(parts) < 2:
            raise UserError(f"{path} line {number} has a word but no tag ({line.strip()!r}); "
                            "a CoNLL file has the word first and its tag last on each "
                            "line, a blank line between sentences (to tag the words of a "
                            "file without tags: tlkit predict RUN --data FILE)")
        words.append(_word(parts[0], f"{path} line {number}"))
        tagged.append(parts[-1] if tags else OUTSIDE)
    if words:
        sentences.append((words, tagged))
    return [(w, to_iob2(t, f"{path}, sentence {i + 1}")) for i, (w, t) in enumerate(sentences)]


def read_token_jsonl(path: Path, tags: bool = True) -> list[Sentence]:
    """The sentences of a JSON-lines file of ``{"tokens": [...], "tags": [...]}``;
    ``tags=False`` reads the tokens only (a file without tags is then valid)."""
    sentences: list[Sentence] = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise UserError(f"{path} line {number} is not JSON ({error}); fix that line") \
                from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is a JSON {type(row).__name__}, not an "
                            'object; write each sentence as {"tokens": [...], "tags": [...]}')
        words = row.get("tokens")
        labels = row.get("tags", row.get("ner_tags")) if tags else \
            [OUTSIDE] * len(words) if isinstance(words, list) else None
        if not isinstance(words, list) or not isinstance(labels, list):
            raise UserError(f"{path} line {number} needs a list 'tokens'"
                            f"{' and a list ' + repr('tags') if tags else ''} "
                            f"(found keys {', '.join(map(str, row))})")
        if len(words) != len(labels):
            raise UserError(f"{path} line {number} has {len(words)} tokens but "
                            f"{len(labels)} tags; give one tag per token")
        if not words:  # a sentence without words has nothing to tag
            continue
        where = f"{path} line {number}"
        sentences.append(([_word(w, f"{where}, token {k + 1}") for k, w in enumerate(words)],
                          to_iob2([str(t) for t in labels], where)))
    return sentences


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """A text file's lines, numbered from 1; a file that is not UTF-8 is a UserError naming
    the line."""
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, start=1)
    except UnicodeDecodeError as error:
        with open(path, "rb") as raw:  # the line, which the decoder's block offset is not
            bad = next((n for n, b in enumerate(raw, start=1) if not _utf8(b)), "?")
        raise UserError(f"{path} is not UTF-8 text ({error.reason} on line {bad}); save it as "
                        "UTF-8") from None


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _word(value: object, where: str) -> str:
    """A word of a token file, through the one policy for text cells (``tlkit.data.cells``)."""
    try:
        return word_cell(value)
    except BadCell as bad:
        raise UserError(f"{where}: {bad}; each token is one word, written as a string") \
            from None


def to_iob2(tags: list[str], where: str = "the tags") -> list[str]:
    """``tags`` in IOB2: checked (``O``, ``B-X`` or ``I-X``), an ``I-X`` that does not continue
    an entity of type X turned into ``B-X``."""
    out: list[str] = []
    previous = OUTSIDE
    for tag in tags:
        if tag != OUTSIDE and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
            raise UserError(f"{where}: tag {tag!r} is not O, B-TYPE or I-TYPE; tlkit reads BIO "
                            "(IOB2) tags, e.g. B-PER I-PER O B-LOC")
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def entities(tags: list[str]) -> list[Entity]:
    """The entities an IOB2 (or IOB1) tag sequence names, in order."""
    found: list[Entity] = []
    kind: str | None = None
    start = 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        continues = kind is not None and tag == f"I-{kind}"
        if kind is not None and not continues:
            found.append(Entity(kind, start, i))
            kind = None
        if tag != OUTSIDE and not continues:
            kind, start = tag[2:], i
    return found


def entity_types(tags: list[list[str]]) -> list[str]:
    """The entity types the tags name, sorted."""
    return sorted({t[2:] for sentence in tags for t in sentence if t != OUTSIDE})


def tag_set(types: list[str]) -> list[str]:
    """Every tag of ``types``: ``O`` first, then B- and I- of each type in order (the head's
    classes)."""
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in ("B", "I")]


TOKEN_FILE_SUFFIXES = (*CONLL_SUFFIXES, ".tsv", ".jsonl", ".ndjson")


def read_sentences(path: Path, tags: bool = True) -> list[Sentence]:
    """A token file's sentences: JSON lines by its suffix (.jsonl, .ndjson), else CoNLL;
    ``tags=False`` reads the words only (every tag ``O``)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a CoNLL file (one word and its tag per "
                        "line) or JSON lines of {\"tokens\": [...], \"tags\": [...]}")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        sentences = read_token_jsonl(path, tags)
    else:
        sentences = read_conll(path, tags)
    if not sentences:
        raise UserError(f"{path} holds no sentences; a CoNLL file has one word and its tag per "
                        "line and a blank line between sentences")
    return sentences


def read_words(path: Path) -> list[list[str]]:
    """The words of each sentence of a token file, tags or none (what scoring reads)."""
    return [words for words, _ in read_sentences(path, tags=False)]


def to_labelled(name: str, sentences: list[Sentence], classes: list[str] | None = None
                ) -> LabelledData:
    """Sentences as token-classification data: inputs are word lists, targets each sentence's
    tag indices, classes every tag of the entity types found (``O``, then B- and I- of each
    type). Given ``classes`` (a trained model's tags), a tag outside them is an error."""
    import numpy as np

    found = tag_set(entity_types([tags for _, tags in sentences]))
    if classes is None:
        if len(found) < 2:
            raise UserError(f"{name} tags no entity at all (every word is O); a token "
                            "classifier needs B-TYPE / I-TYPE tags on some words")
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{name} holds tags the model was not trained on: "
                        f"{', '.join(unknown[:5])}; known tags are {', '.join(classes[:20])}")
    index = {c: i for i, c in enumerate(classes)}
    targets = np.empty(len(sentences), dtype=object)
    for i, (_, tags) in enumerate(sentences):
        targets[i] = np.asarray([index[t] for t in tags], dtype=np.int64)
    return LabelledData(name=name, modality="text", task="token_classification",
                        inputs=[list(words) for words, _ in sentences], targets=targets,
                        classes=list(classes))
