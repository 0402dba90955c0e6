"""The run directory (DESIGN.md): config, plan, metrics per epoch, checkpoints, model, summary.

One writer per run directory at a time (a lock file); every file that must survive a crash is
written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tlkit.errors import UserError
from tlkit.files import atomic_write, remove_leftovers, write_error
from tlkit.outputs import MARKER, check_output, claim, owned


# Where tlkit may write (its marker, what it owns, the one rule every command checks) is
# tlkit.outputs; these names stay here for the run directory's callers.
__all__ = ["MARKER", "RunDir", "check_writable", "claim", "owned"]


def check_writable(path: Path, kind: str, flag: str = "--out") -> None:
    """Refuse (before anything is written) a ``path`` that is a non-empty folder tlkit did not
    create for ``kind``, or a tlkit folder of another kind: the folder part of
    ``tlkit.outputs.check_output``, for folders tlkit places itself (a compare's runs, a fit's
    baselines and trials); a user's --out goes through the whole rule."""
    check_output(path, kind, flag=flag, nested=True)


class RunPath:
    """A path inside the run directory, as an attribute: ``RunDir(p).summary`` is
    ``p / "summary.json"``."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, run: Any, owner: Any = None) -> Path:
        return Path(run.path).joinpath(*self.parts)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None

    # paths: each a file or folder of the run directory
    config = RunPath("config.yaml")
    plan = RunPath("plan.txt")
    plan_json = RunPath("plan.json")  # the same plan as data, for the report
    metrics = RunPath("metrics.jsonl")
    checkpoints = RunPath("checkpoints")
    last = RunPath("checkpoints", "last.pt")
    best = RunPath("checkpoints", "best.safetensors")
    model = RunPath("model")
    summary = RunPath("summary.json")
    log = RunPath("train.log")
    data = RunPath("data.json")
    predictions = RunPath("predictions.npz")

    def lock(self) -> None:
        """Refuse a second writer: two fits in one directory would corrupt each other. The lock
        is the operating system's (``filelock``: flock on POSIX, msvcrt on Windows), so it goes
        with the process that held it, however that process ends."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.path / ".lock", timeout=0, thread_local=False)
            lock.acquire()
        except Timeout:
            raise UserError(
                f"run directory {self.path} is in use by another tlkit process; wait for it to "
                "finish or choose another --out"
            ) from None
        except OSError as e:
            raise UserError(f"cannot create the run directory {self.path} ({e.strerror or e}); "
                            "choose another --out") from None
        self._lock = lock

    def remove_leftovers(self) -> list[str]:
        """The temporary files and folders an interrupted writer left (tlkit's own names, in
        this run directory, its checkpoints/ and model/), removed; their names. Call with the
        lock held."""
        removed = [*remove_leftovers(self.path), *remove_leftovers(self.checkpoints),
                   *remove_leftovers(self.model)]
        tmp_model = self.path / (self.model.name + ".tmp")  # saved.py writes model/ there first
        if tmp_model.is_dir():
            shutil.rmtree(tmp_model, ignore_errors=True)
            removed.append(tmp_model.name)
        return removed

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def write_text(self, path: Path, text: str) -> None:
        def w(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8")

        atomic_write(path, w)

    def write_predictions(self, val_outputs: Any, val_targets: Any, test_outputs: Any,
                          test_targets: Any, **more: Any) -> None:
        """The validation and test outputs of the final model (for the baseline verdict,
        compare's intervals, calibration and the report), as arrays, never as a pickle;
        ``more``: other named arrays (question answering: each test question's scores)."""
        import numpy as np

        def w(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, val_outputs=val_outputs, val_targets=val_targets,
                         test_outputs=test_outputs, test_targets=test_targets, **more)

        atomic_write(self.predictions, w)

    def write_json(self, path: Path, obj: Any) -> None:
        self.write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with open(self.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, default=_jsonable) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            # A row cut short is dropped when read back (metrics_rows), and a resume rewrites
            # the rows of the epochs its checkpoint has not completed.
            raise write_error(self.metrics, e) from None

    def metrics_rows(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: drop it and what follows
        return rows

    def truncate_metrics(self, epochs_done: int) -> None:
        """After a resume, keep the rows of epochs the checkpoint has completed."""
        rows = [r for r in self.metrics_rows() if r.get("epoch", 0) < epochs_done]
        self.write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(x)
