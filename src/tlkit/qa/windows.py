"""Questions and long contexts cut into model inputs: Hugging Face's "doc stride" recipe.

Each example is tokenized as (question, context) with ``truncation="only_second"``: a context
longer than ``max_length`` allows is cut into several windows, each holding the whole question
and a piece of the context, consecutive pieces sharing ``stride`` tokens. Per window the
training target is the answer's first and last token, or (0, 0), the CLS token, where the
example is unanswerable or its (first) answer is not wholly inside the window. The offsets of
the context's tokens are kept, so that any predicted token span maps back to exact context
characters (``tlkit.qa.spans``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from tlkit.errors import UserError
from tlkit.qa.squad import QAExample

Offset = tuple[int, int]  # a token's characters in the context: context[start:end]


class Windows(TypedDict):
    """The windows of a list of examples, one entry per window in every list (plain data:
    ``np.asarray`` of a padded field is a (windows, max_length) array)."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: NotRequired[list[list[int]]]  # where the tokenizer makes them
    example_index: list[int]  # the example (its index in the list given) the window is from
    # per token: its characters in the context, None for question, special and padding tokens
    offsets: list[list[Offset | None]]
    cls_index: list[int]  # where the CLS token is (the "no answer" position): 0 for BERT
    start_positions: list[int]  # the answer's first token, or cls_index
    end_positions: list[int]  # the answer's last token (inclusive), or cls_index


def encode_windows(examples: Sequence[QAExample], tokenizer: Any, *, max_length: int = 384,
                   stride: int = 128, padding: bool = True) -> Windows:
    """Tokenize ``examples`` into overlapping windows with a fast (Rust) tokenizer: question
    first, context second. ``stride`` is how many context tokens consecutive windows share; an
    answer of up to ``stride + 1`` tokens is then wholly inside at least one window. With
    ``padding`` every window is ``max_length`` tokens long. Questions lose their leading white
    space (some SQuAD questions carry a lot, which would only take room). Deterministic."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"extractive question answering needs a fast tokenizer (one backed by "
                        f"the tokenizers library, for its character offsets); "
                        f"{type(tokenizer).__name__} is not one: load it with "
                        "AutoTokenizer.from_pretrained(..., use_fast=True)")
    if stride < 0 or max_length <= 0:
        raise UserError(f"max_length ({max_length}) must be positive and stride ({stride}) "
                        "not negative")
    questions = [e.question.lstrip() for e in examples]
    _check_room(examples, questions, tokenizer, max_length, stride)
    encoded = tokenizer(questions, [e.context for e in examples], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True,
                        padding="max_length" if padding else False)
    windows: Windows = {
        "input_ids": [list(ids) for ids in encoded["input_ids"]],
        "attention_mask": [list(m) for m in encoded["attention_mask"]],
        "example_index": [int(i) for i in encoded["overflow_to_sample_mapping"]],
        "offsets": [], "cls_index": [], "start_positions": [], "end_positions": [],
    }
    if "token_type_ids" in encoded:
        windows["token_type_ids"] = [list(t) for t in encoded["token_type_ids"]]
    cls_id = tokenizer.cls_token_id
    for w, ids in enumerate(windows["input_ids"]):
        sequence = encoded.sequence_ids(w)
        offsets: list[Offset | None] = [
            (int(o[0]), int(o[1])) if s == 1 else None
            for o, s in zip(encoded["offset_mapping"][w], sequence, strict=True)]
        cls = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
        example = examples[windows["example_index"][w]]
        start, end = answer_tokens(offsets, example) or (cls, cls)
        windows["offsets"].append(offsets)
        windows["cls_index"].append(cls)
        windows["start_positions"].append(start)
        windows["end_positions"].append(end)
    return windows


def answer_tokens(offsets: Sequence[Offset | None], example: QAExample) -> Offset | None:
    """The first and last token (inclusive) of ``example``'s first answer in one window, or
    None where the example is unanswerable or the answer is not wholly inside the window.

    White space at the answer's edges is not part of any token, so it is left out before the
    answer is looked for: " Paris " is inside a window that holds the token "Paris". A token
    the answer only partly covers ("Par" of "Paris") counts as the answer's."""
    if example.impossible or not example.answers:
        return None
    text, start = example.answers[0]
    end = start + len(text)
    start += len(text) - len(text.lstrip())
    end -= len(text) - len(text.rstrip())
    inside = [(t, o) for t, o in enumerate(offsets) if o is not None and o[1] > o[0]]
    if not inside or inside[0][1][0] > start or inside[-1][1][1] < end:
        return None
    first = next((t for t, o in inside if o[1] > start), None)
    last = next((t for t, o in reversed(inside) if o[0] < end), None)
    if first is None or last is None or first > last:
        return None  # the answer is only characters the tokenizer drops
    return first, last


def _check_room(examples: Sequence[QAExample], questions: list[str], tokenizer: Any,
                max_length: int, stride: int) -> None:
    """Refuse, as one message, an example whose question leaves the context no more than
    ``stride`` tokens per window (the tokenizers library would fail, or panic, on it)."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    for example, length in zip(examples, lengths, strict=True):
        room = max_length - special - length
        if room <= stride:
            raise UserError(f"question {example.id!r} is {length} tokens long, which with "
                            f"{special} special tokens leaves {max(room, 0)} of max_length "
                            f"{max_length} for the context, but the windows need more than "
                            f"stride={stride}; raise max_length, lower stride or shorten the "
                            "question")
