"""Running the command line as a user does, in a child process, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TLKIT = [sys.executable, "-m", "tlkit.cli"]


def run_cli(*args: str, cache: Path | None = None, timeout: int = 300
            ) -> subprocess.CompletedProcess[str]:
    """``tlkit ARGS`` with the hub offline; ``cache`` gives it its own TLKIT_CACHE (feature
    cache and converted weights), so a test never reuses another's features."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if cache is not None:
        env["TLKIT_CACHE"] = str(cache)
    return subprocess.run([*TLKIT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
