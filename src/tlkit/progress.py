"""Progress for people, at the edges (``tlkit`` commands and ``tlkit.fit``): the run's events as
lines on stderr, a rich bar while an epoch runs on a terminal, and every line in the run's log
(``train.log``). Library code reports through events and ``log`` callables, never prints."""

from __future__ import annotations

import os
import sys
from typing import Any


class Reporter:
    """Progress for people: a bar on a terminal, plain lines otherwise (and always in the log)."""

    def __init__(self, log_path: str | None = None) -> None:
        self.tty = sys.stderr.isatty()
        self.log_path = log_path
        self.progress: Any = None  # a rich Progress while an epoch runs on a terminal
        self.task: Any = None

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)
        if self.log_path:
            import time as _t

            try:
                os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(f"{_t.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            except OSError:
                # The log copies stderr; a full disk is reported by the next checkpoint write,
                # which says what was kept. It must not end the run as an internal error.
                pass

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "stage":
            extra = "  ".join(f"{k}={v}" for k, v in info.items() if k != "what")
            self.line(f"[tlkit] {info['what']}" + (f"  {extra}" if extra else ""))
        elif kind == "resumed":
            self.line(f"[tlkit] resumed at epoch {info['epoch']}, batch {info['batch']}, "
                      f"step {info['step']}")
        elif kind == "epoch_start":
            self.line(f"[tlkit] epoch {info['epoch']} phase {info['phase']}: {info['label']}")
            if self.tty:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                         TextColumn("{task.completed}/{task.total} loss "
                                                    "{task.fields[loss]:.4f}"),
                                         TimeRemainingColumn(), transient=True)
                self.progress.start()
                self.task = self.progress.add_task("train", total=info["batches"],
                                                   epoch=info["epoch"], loss=float("nan"))
        elif kind == "step" and self.progress is not None:
            self.progress.update(self.task, completed=info["batch"], loss=info["loss"])
        elif kind == "epoch_end":
            if self.progress is not None:
                self.progress.stop()
                self.progress = None
            metrics = "  ".join(f"{k}={v:.4f}" for k, v in info.items()
                                if k.startswith(("train_", "val_")) and isinstance(v, float))
            self.line(f"[tlkit] epoch {info['epoch']} done  {metrics}  "
                      f"({info['seconds']:.1f}s)")
