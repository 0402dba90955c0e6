"""TensorBoard event files from the events ``fit_run`` already emits (``tlkit fit --tensorboard``).

Per epoch (x = the epoch, counted from 0 as in metrics.jsonl): ``epoch/train_loss``,
``epoch/val_loss``, ``epoch/val_<metric>``, ``epoch/phase`` and ``lr/<group>`` for each
parameter group's learning rate at the epoch's end; per optimizer step (x = the global step):
``step/train_loss``. A resumed run appends a new event file to the same folder, starting at the
step it resumed from; TensorBoard reads them together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.events import Event


class TensorBoardLog:
    """An event consumer that writes scalars, then passes every event on to ``forward``."""

    def __init__(self, folder: Path, forward: Event | None = None) -> None:
        self.folder = Path(folder)
        self.forward = forward
        self.step = 0
        self._writer: Any = None  # opened at the first event: a refused fit leaves no folder

    def _w(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder))
        return self._writer

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "resumed":
            self.step = int(info["step"])
        elif kind == "step":
            self.step += 1
            self._w().add_scalar("step/train_loss", float(info["loss"]), self.step)
        elif kind == "epoch_end":
            self.write_epoch(info)
        if self.forward is not None:
            self.forward(kind, info)

    def write_epoch(self, row: dict[str, Any]) -> None:
        w = self._w()
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key.startswith(("train_", "val_")) and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                w.add_scalar(f"epoch/{key}", float(value), epoch)
        w.add_scalar("epoch/phase", float(row["phase"]), epoch)
        for group, lr in (row.get("lr") or {}).items():
            w.add_scalar(f"lr/{group}", float(lr), epoch)
        w.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
