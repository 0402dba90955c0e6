"""tlkit: transfer learning with measurements.

``import tlkit`` is light (no torch until a function needs it): ``tlkit.fit``, ``tlkit.distillation``,
``tlkit.load`` and ``tlkit.Run`` come from ``tlkit.api`` on first use; see docs/api.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "distill", "fit", "load", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Run", "distill", "fit", "load"):
        # Loaded on first use, by name: the package root stays the bottom of the import layers
        # (modules read __version__ from it), while tlkit.api sits at the top.
        import importlib

        return getattr(importlib.import_module("tlkit.api"), name)
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
