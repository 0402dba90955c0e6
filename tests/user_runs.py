"""A user's commands run in this process, through ``tlkit.cli.main``: the exit code and the
message a user sees, without the seconds a fresh interpreter spends importing torch. The tiny
configs the tests of bad input, crashes and untrusted files start from (a random timm
test_efficientnet on the packaged digits), and the checks they share."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tlkit.cli import main


def config(tmp: Path, source: str = "digits", *, model: str = "timm:test_efficientnet",
           weights: str = "none", epochs: int = 1, limit: int | None = 120,
           tc: str = "", data: str = "", name: str = "c.yaml") -> Path:
    """A fit with its rates given and early stopping off, one pass per epoch."""
    limit_line = f"  limit: {limit}\n" if limit is not None else ""
    text = (
        "transfer_config:\n"
        f"  source_model: {model}\n"
        f"  pretrained_weights: {weights}\n"
        "  freeze_strategy: none\n"
        "  head_lr: 1e-2\n  backbone_lr: 3e-3\n"
        f"  epochs: {epochs}\n"
        "  batch_size: 16\n  early_stopping_patience: null\n"
        "  min_steps: 0\n"  # one pass per epoch: the steps these tests count
        "  cache: {disk: false}\n"
        f"{tc}"
        "data:\n"
        f"  source: {source}\n"
        "  image_size: 32\n"
        f"{limit_line}{data}"
    )
    p = tmp / name
    p.write_text(text)
    return p


def default_config(tmp: Path, source: str = "digits", *, tc: str = "", data: str = "",
                   name: str = "c.yaml", strategy: str = "none") -> Path:
    """One epoch of 120 examples at the default rates and early stopping (the file is 12 lines:
    line 13 is the first a test appends)."""
    p = tmp / name
    p.write_text(
        "transfer_config:\n"
        "  source_model: timm:test_efficientnet\n"
        "  pretrained_weights: none\n"
        f"  freeze_strategy: {strategy}\n"
        "  epochs: 1\n  batch_size: 16\n  min_steps: 0\n  cache: {disk: false}\n"
        f"{tc}"
        "data:\n"
        f"  source: {source}\n"
        "  image_size: 32\n  limit: 120\n"
        f"{data}")
    return p


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """Run the command line in this process: (exit code, stderr)."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def error_line(err: str) -> str:
    """The last error message of ``err``, which holds no traceback."""
    lines = [x for x in err.splitlines() if ": error: " in x]
    assert lines, f"no error message in:\n{err}"
    assert "Traceback" not in err
    return lines[-1]


def metric_rows(run: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl rows without their wall-clock seconds: what two runs of the same
    config (one killed and resumed) must write alike."""
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def checksum(folder: Path, but: tuple[str, ...] = ()) -> str:
    """Every path under ``folder`` with its bytes (and nothing else): equal digests mean the
    folder is byte-for-byte the same (``but``: names left out)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.name in but:
            continue
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes() if p.is_file() else b"<dir>")
    return h.hexdigest()


def image_table(tmp: Path, n: int, label: Callable[[int], Any], name: str = "t.csv") -> Path:
    """A CSV of ``n`` random 12x12 grey images (files under ``tmp/imgs``) and ``label(i)``."""
    rng = np.random.default_rng(0)
    (tmp / "imgs").mkdir(exist_ok=True)
    rows = ["path,label"]
    for i in range(n):
        f = tmp / "imgs" / f"{i}.png"
        if not f.exists():
            Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(f)
        rows.append(f"imgs/{i}.png,{label(i)}")
    p = tmp / name
    p.write_text("\n".join(rows) + "\n")
    return p
