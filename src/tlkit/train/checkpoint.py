"""Checkpoints: one dict of named state, written atomically, read without unpickling code.

Write to a temporary file in the same folder, flush and fsync, then rename over the old one: a
crash at any point leaves either the previous checkpoint or the new one, never half of one.

Each checkpoint's SHA-256 is recorded beside it (``last.pt.sha256``), and a resume verifies it
before reading anything: a checkpoint changed after it was written (edited, damaged on disk or
in a copy) is refused. The record is written before the rename and lists the new and the
previous checksum, then only the new one, so a crash between the two steps leaves a record
that matches whichever file survived.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.errors import UserError
from tlkit.files import atomic_write, unreadable
from tlkit.outputs import sha256_of


def sums_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")



def _write_sums(path: Path, sums: list[str]) -> None:
    atomic_write(sums_path(path), lambda tmp: tmp.write_text(json.dumps({"sha256": sums})))


def _recorded(path: Path) -> list[str] | None:
    """The checksums recorded for ``path``; None where there is no record (a run of a tlkit
    before the record)."""
    try:
        sums = json.loads(sums_path(path).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return [s for s in sums if isinstance(s, str)] if isinstance(sums, list) else None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    new: list[str] = []

    def write(tmp: Path) -> None:
        # Through a Python file, so that a full disk surfaces as OSError(ENOSPC); torch.save to
        # a path reports it as an opaque RuntimeError from its C++ writer.
        with open(tmp, "wb") as f:
            torch.save(payload, f)
        new.append(sha256_of(tmp))
        old = _recorded(path) or ([sha256_of(path)] if Path(path).is_file() else [])
        _write_sums(path, [new[0], *old[:1]])  # before the rename: either file matches

    atomic_write(path, write)
    _write_sums(path, new)


CHECKPOINT_KEYS = frozenset({"model", "optimizer", "state", "rng"})


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"no checkpoint at {path}; start the run without --resume")
    fix = ("Fix: delete it and run again (with --resume the run restarts from the beginning), "
           "or choose another --out")
    sums = _recorded(path)
    if sums is not None and sha256_of(path) not in sums:
        raise UserError(f"{path} does not match the checksum recorded when it was written "
                        f"({sums_path(path).name}): it changed since (edited, or damaged on disk "
                        f"or in a copy), so it is not read. {fix}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a file that is not a plain checkpoint
        raise unreadable(path, "the checkpoint", e, fix) from None
    if not isinstance(blob, dict) or not CHECKPOINT_KEYS <= set(blob):
        raise UserError(f"{path} is not a tlkit checkpoint (it lacks "
                        f"{', '.join(sorted(CHECKPOINT_KEYS))}). {fix}")
    return blob


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
