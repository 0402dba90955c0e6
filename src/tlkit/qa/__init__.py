"""Extractive question answering (SQuAD-style), the self-contained core: reading the data
(``squad``), cutting long contexts into token windows with answer positions (``windows``),
turning start / end logits back into answer text (``spans``), and SQuAD's official exact match
and F1 (``metric``). Nothing here imports torch or loads a model: the tokenizer comes in, plain
lists and arrays go out."""

from tlkit.qa.metric import (
    exact_match,
    f1,
    gold_answers,
    normalize_answer,
    question_scores,
    squad_scores,
)
from tlkit.qa.spans import SpanPrediction, best_spans
from tlkit.qa.squad import (
    QAExample,
    packaged_squad_path,
    read_qa,
    read_qa_jsonl,
    read_squad_json,
)
from tlkit.qa.windows import Windows, answer_tokens, encode_windows

__all__ = [
    "QAExample", "SpanPrediction", "Windows", "answer_tokens", "best_spans", "encode_windows",
    "exact_match", "f1", "gold_answers", "normalize_answer", "packaged_squad_path",
    "question_scores", "read_qa",
    "read_qa_jsonl", "read_squad_json", "squad_scores",
]
