"""A fingerprint of a run's data: per split, its size and a hash of its inputs and targets, and
the classes. A run records it when it starts (``data.json`` in the run directory); ``--resume``
compares, so a run never continues on other data than it started with (rows appended to a CSV
would put examples already trained on into validation or test; a new class would not fit the
head)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.data.types import LabelledData


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
