"""The progress callback of every long step: ``event(kind, info)``, where ``kind`` is a word
("stage", "epoch_start", "epoch_end", "step", "resumed") and ``info`` its details. The command
line prints them, the run directory logs them, TensorBoard and MLflow forward them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = Callable[[str, dict[str, Any]], None]
