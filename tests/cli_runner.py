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


def kill_9_when(args: list[str], ready: list[Path], settle: float = 0.2,
                timeout: float = 120) -> None:
    """Start ``tlkit ARGS`` and kill it without warning (SIGKILL) once every path in ``ready``
    exists (and ``settle`` seconds more); fails if the run ends before it is killed."""
    import signal
    import time

    proc = subprocess.Popen([*TLKIT, *map(str, args)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not all(p.exists() for p in ready):
        time.sleep(0.02)
    time.sleep(settle)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
