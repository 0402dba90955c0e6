"""A fingerprint of a run's data: per split, its size and a hash of its inputs and targets, and
the classes. A run records it when it starts (``data.json`` in the run directory); ``--resume``
compares, so a run never continues on other data than it started with (rows appended to a CSV
would put examples already trained on into validation or test; a new class would not fit the
head).

Leakage, by the same hashing: ``check_identical`` refuses splits given as the same data (one
file by any spelling, byte-identical files, folders of identical files), and ``overlap_of``
counts the inputs shared between the splits (summary.json's ``data.overlap``)."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data.types import LabelledData
from tlkit.errors import UserError


def _digest(data: LabelledData) -> str:
    h = hashlib.sha256()
    for item in data.inputs:
        if isinstance(item, np.ndarray):
            h.update(str(item.shape).encode())
            h.update(np.ascontiguousarray(item).tobytes())
        elif isinstance(item, Path):  # an image file: its path and size (not its mtime,
            h.update(str(item).encode())  # which a copy of the folder changes)
            try:
                h.update(str(os.stat(item).st_size).encode())
            except OSError:
                h.update(b"?")
        else:
            h.update(str(item).encode())
        h.update(b"\0")
    if data.targets.dtype == object:  # token classification: each sentence's tags
        for tags in data.targets:
            h.update(np.ascontiguousarray(tags, dtype=np.int64).tobytes() + b"\0")
    else:
        h.update(np.ascontiguousarray(data.targets).tobytes())
    return h.hexdigest()


def fingerprint(splits: Any) -> dict[str, Any]:
    """What identifies ``splits`` (a ``Splits``): classes, and per split its size and hash."""
    out: dict[str, Any] = {"classes": splits.classes}
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        out[name] = None if part is None else {"n": len(part), "sha256": _digest(part)}
    return out


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, in words; empty when nothing did."""
    said = []
    old_classes, new_classes = before.get("classes"), now.get("classes")
    if old_classes != new_classes:
        added = sorted(set(new_classes or []) - set(old_classes or []))
        gone = sorted(set(old_classes or []) - set(new_classes or []))
        parts = ([f"new class(es) {', '.join(map(repr, added[:5]))}"] if added else []) + \
                ([f"class(es) {', '.join(map(repr, gone[:5]))} gone"] if gone else [])
        said.append("the classes changed (" + ("; ".join(parts) or "their order") + ")")
    for name in ("train", "val", "test"):
        a, b = before.get(name), now.get(name)
        if a == b:
            continue
        if a is None or b is None:
            said.append(f"the {name} split {'appeared' if a is None else 'is gone'}")
        elif a["n"] != b["n"]:
            said.append(f"the {name} split had {a['n']:,} examples, now {b['n']:,}")
        else:
            said.append(f"the {name} split holds other examples or labels ({a['n']:,} of them)")
    return said


# --------------------------------------------------------------------------------------------------
# Leakage: the same file given for two splits, and inputs shared between the splits
# --------------------------------------------------------------------------------------------------

# The data keys that name a split's file or folder, in the order of the splits.
SPLIT_KEYS = (("data.source", "source"), ("data.validation", "validation"), ("data.test", "test"))
TARGET_TEST = "adaptation.target.test"
# How each kind of input is compared for the overlap count (summary.json's data.overlap).
NORMALISATION = {
    "text": "texts compared after Unicode NFC, whitespace collapsed and case folded (pairs "
            "as pairs, tagged sentences by their words)",
    "image": "images compared by content (SHA-256 of the file's bytes, or the pixels)",
}
EXAMPLES = 3  # shared inputs shown per pair of splits
_CHUNK = 1 << 20

# SHA-256 of a file's bytes, by (resolved path, size, mtime): open_run and prepare both ask.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Identical:
    """Two data keys that name the same data: ``what`` says how (in words)."""

    first: str  # e.g. data.source
    second: str  # e.g. data.test
    what: str

    def describe(self) -> str:
        return f"{self.first} and {self.second} {self.what}"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (remembered while its size and mtime stay the same)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


def _listing(folder: Path) -> list[tuple[str, int]]:
    """Every file under ``folder``: (path relative to it, size), sorted."""
    out = []
    for root, _, files in os.walk(folder, followlinks=True):
        for name in files:
            p = Path(root) / name
            try:
                out.append((p.relative_to(folder).as_posix(), p.stat().st_size))
            except OSError:
                continue
    return sorted(out)


def _located(value: str) -> tuple[str, Any] | None:
    """What a data key's value names, for comparison: ("packaged", name), ("file", path) or
    ("folder", path), resolved (symbolic links, ``..``, ``~``); None when it names nothing
    (loading says so)."""
    from tlkit.data.packaged import is_packaged  # the packaged sets' metadata only

    if is_packaged(value):
        return "packaged", value
    path = Path(value).expanduser()
    try:
        if path.is_dir():
            return "folder", path.resolve()
        if path.is_file():
            return "file", path.resolve()
    except OSError:
        return None
    return None


def _same(a: tuple[str, Any], b: tuple[str, Any], shown: tuple[str, str]) -> str | None:
    """How two located values are the same data, in words, or None."""
    (kind_a, a_where), (kind_b, b_where) = a, b
    if kind_a != kind_b:
        return None
    if kind_a == "packaged":
        return f"both name the packaged set {a_where!r}" if a_where == b_where else None
    if a_where == b_where:
        what = "file" if kind_a == "file" else "folder"
        spelled = (f" ({shown[0]!r} and {shown[1]!r})" if shown[0] != shown[1] else
                   f" ({shown[0]!r})")
        return f"name the same {what}{spelled}"
    try:
        if os.path.samefile(a_where, b_where):  # hard links
            return f"name the same file ({shown[0]!r} and {shown[1]!r} are hard links)"
        if kind_a == "file":
            if a_where.stat().st_size != b_where.stat().st_size:
                return None
            digest = file_digest(a_where)
            if digest != file_digest(b_where):
                return None
            return (f"hold byte-identical files ({shown[0]!r} and {shown[1]!r}, SHA-256 "
                    f"{digest[:12]}...)")
        listed = _listing(a_where)
        if not listed or listed != _listing(b_where):
            return None
        if any(file_digest(a_where / rel) != file_digest(b_where / rel) for rel, _ in listed):
            return None
        return (f"are folders of identical files ({shown[0]!r} and {shown[1]!r}, "
                f"{len(listed):,} files, the same names and bytes)")
    except OSError:
        return None


def identical_inputs(cfg: Any, extra: tuple[tuple[str, str], ...] = ()) -> list[Identical]:
    """The pairs of ``data.source``, ``data.validation`` and ``data.test`` (``cfg`` a data
    section), and of any ``extra`` (key, value) after them (``adaptation.target.test``), that
    name the same data: one path (however spelled: relative, ``~``, a symbolic link, a hard
    link), byte-identical files, folders of identical files, or one packaged set. Cheap: paths
    are compared first, and a file is hashed only when its size matches."""
    given = [(key, str(getattr(cfg, attr, None))) for key, attr in SPLIT_KEYS
             if getattr(cfg, attr, None) is not None] + list(extra)
    located = [(key, value, _located(value)) for key, value in given]
    found = []
    for i, (key_a, value_a, loc_a) in enumerate(located):
        for key_b, value_b, loc_b in located[i + 1:]:
            if loc_a is None or loc_b is None:
                continue
            what = _same(loc_a, loc_b, (value_a, value_b))
            if what is not None:
                found.append(Identical(key_a, key_b, what))
    return found


def check_identical(cfg: Any, allow: bool, target_test: str | None = None
                    ) -> list[Identical]:
    """Refuse (UserError) a config whose splits name the same data, unless ``allow``
    (``diagnostics.allow_overlap``); returns what is shared. ``target_test``: the labelled
    target test (``adaptation.target.test``), which must not be a source split either."""
    extra = (() if target_test is None else ((TARGET_TEST, str(target_test)),))
    found = identical_inputs(cfg, extra)
    if found and not allow:
        keys = [k for k, _ in SPLIT_KEYS] + [TARGET_TEST]
        splits = sorted({k for f in found for k in (f.first, f.second)}, key=keys.index)
        tested = ("the run would be validated and tested on the rows it trains on, and its "
                  "metrics would say nothing about new data"
                  if "data.source" in splits else
                  "the run would choose its best epoch on its test rows, and its test metrics "
                  "would be optimistic")
        raise UserError(
            "the splits share their data: " + "; ".join(f.describe() for f in found)
            + f". So {tested}. "
            "Fix: give validation and test files that hold other rows than data.source (or leave "
            "data.validation / data.test out: tlkit then cuts data.val_fraction / "
            "data.test_fraction from data.source without overlap"
            + ("; adaptation.target.test: labelled rows of the target domain, not the source's"
               if TARGET_TEST in splits else "")
            + "); to run anyway, set diagnostics.allow_overlap: true (the overlap is still "
            "reported). Nothing was written")
    return found


def _text_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def _shown(item: Any) -> str:
    """An input as a user would recognise it, short."""
    if isinstance(item, tuple):
        text = " ||| ".join(str(t) for t in item)
    elif isinstance(item, list):
        text = " ".join(str(t) for t in item)
    elif isinstance(item, Path):
        text = str(item)
    elif isinstance(item, np.ndarray):
        text = f"an image of {'x'.join(map(str, item.shape))} pixels"
    else:
        text = str(item)
    return text if len(text) <= 80 else text[:77] + "..."


def _keys(inputs: list[Any], sized: dict[int, int]) -> list[bytes]:
    """Each input's comparison key: texts normalised (``NORMALISATION``), images by content.
    An image file whose size no image of another split shares cannot be shared: it is keyed by
    its path, unread (``sized``: how many splits hold a file of each size)."""
    out = []
    for item in inputs:
        h = hashlib.blake2b(digest_size=16)
        if isinstance(item, Path):
            try:
                size = item.stat().st_size
                if sized.get(size, 0) > 1:
                    h.update(b"file\0" + file_digest(item).encode())
                else:
                    h.update(b"path\0" + str(item).encode())
            except OSError:
                h.update(b"unreadable\0" + str(item).encode())
        elif isinstance(item, np.ndarray):
            h.update(b"pixels\0" + str(item.shape).encode() + b"\0")
            h.update(np.ascontiguousarray(item).tobytes())
        elif isinstance(item, tuple):
            h.update(b"pair\0" + "\x1f".join(_text_key(str(t)) for t in item).encode())
        elif isinstance(item, list):
            h.update(b"words\0" + _text_key(" ".join(str(t) for t in item)).encode())
        else:
            h.update(b"text\0" + _text_key(str(item)).encode())
        out.append(h.digest())
    return out


def _sizes_across(parts: dict[str, Any]) -> dict[int, int]:
    """For image files: per file size, how many splits hold a file of that size."""
    sized: dict[int, int] = {}
    for data in parts.values():
        seen = set()
        for item in data.inputs:
            if isinstance(item, Path):
                try:
                    seen.add(item.stat().st_size)
                except OSError:
                    continue
        for size in seen:
            sized[size] = sized.get(size, 0) + 1
    return sized


def overlap_of(splits: Any, identical: list[Identical] | None = None) -> dict[str, Any]:
    """The inputs shared between the splits of ``splits`` (a ``Splits``): for each pair
    (train-val, train-test, val-test), how many rows of the later split have an input that is
    also in the earlier one (exact duplicates after ``NORMALISATION``; labels are not compared:
    a shared input with another label is leakage too), with a few of them. This is summary.json's
    ``data.overlap``; ``identical`` (the files ``diagnostics.allow_overlap`` let through) are
    listed in it too."""
    parts = {name: getattr(splits, name) for name in ("train", "val", "test")
             if getattr(splits, name) is not None}
    sized = _sizes_across(parts)
    keys = {name: _keys(list(data.inputs), sized) for name, data in parts.items()}
    out: dict[str, Any] = {"compared": NORMALISATION.get(splits.train.modality, "inputs")}
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        if first not in parts or second not in parts:
            continue
        earlier = set(keys[first])
        shared = [i for i, k in enumerate(keys[second]) if k in earlier]
        out[f"{first}-{second}"] = {
            "rows": len(shared), "of": len(keys[second]),
            "examples": [_shown(parts[second].inputs[i]) for i in shared[:EXAMPLES]]}
    if identical:
        out["identical_files"] = [f.describe() for f in identical]
    return out


_SPLIT_WORDS = {"val": "validation", "test": "test", "train": "training"}


def describe_overlap(overlap: dict[str, Any]) -> str | None:
    """The log's line about ``overlap`` (``overlap_of``), or None when no row is shared."""
    said = []
    examples: list[str] = []
    for pair in ("train-val", "train-test", "val-test"):
        part = overlap.get(pair)
        if not part or not part["rows"]:
            continue
        first, second = pair.split("-")
        share = part["rows"] / max(1, part["of"])
        said.append(f"{part['rows']:,} of {part['of']:,} {_SPLIT_WORDS[second]} rows "
                    f"({share:.0%}) also in {_SPLIT_WORDS[first]}")
        examples += [e for e in part["examples"] if e not in examples]
    if not said:
        return None
    shown = ", ".join(repr(e) for e in examples[:EXAMPLES])
    return ("data overlap: " + "; ".join(said) + f" (e.g. {shown}; {overlap['compared']}). "
            "Metrics on those rows are not measured on unseen data: remove the shared rows "
            "(summary.json data.overlap counts them)")
